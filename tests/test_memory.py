"""Instance memory: vectorised update against a sequential loop; incremental centroids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cacl.memory import InstanceMemory


def sequential_update(bank, indexes, features, alpha):
    bank = bank.clone()
    for i, x in zip(indexes.tolist(), features):
        bank[i] = F.normalize(alpha * bank[i] + (1 - alpha) * x, dim=0)
    return bank


def centroids_of(bank, labels):
    return torch.stack([bank[labels == c].mean(0) for c in range(int(labels.max()) + 1)])


@pytest.mark.parametrize(
    "indexes",
    [
        [0, 3, 5, 7],
        [2, 2, 2],  # the same sample three times
        [1, 4, 1, 9, 4, 1, 0],  # several duplicates interleaved
    ],
)
def test_update_matches_sequential_loop(indexes):
    torch.manual_seed(0)
    init = torch.randn(10, 6)
    memory = InstanceMemory(init, alpha=0.2)
    idx = torch.tensor(indexes)
    feats = F.normalize(torch.randn(len(indexes), 6), dim=1)
    expected = sequential_update(F.normalize(init, dim=1), idx, feats, 0.2)
    memory.update(idx, feats)
    torch.testing.assert_close(memory.features, expected, atol=1e-6, rtol=0)
    assert torch.allclose(memory.features.norm(dim=1), torch.ones(10))


def test_incremental_centroids_equal_recomputed_means():
    torch.manual_seed(1)
    memory = InstanceMemory(torch.randn(50, 8), alpha=0.2)
    labels = torch.randint(0, 7, (50,))
    labels[:7] = torch.arange(7)  # every class present
    memory.set_labels(labels)
    torch.testing.assert_close(memory.centroids, centroids_of(memory.features, labels))
    for _ in range(30):
        idx = torch.randint(0, 50, (12,))
        memory.update(idx, F.normalize(torch.randn(12, 8), dim=1))
    torch.testing.assert_close(
        memory.centroids, centroids_of(memory.features, labels), atol=1e-5, rtol=0
    )


def test_unassigned_rows_do_not_enter_centroids():
    torch.manual_seed(2)
    memory = InstanceMemory(torch.randn(12, 5))
    labels = torch.tensor([0, 0, 1, 1, -1, -1, 2, 2, 2, -1, 0, 1])
    memory.set_labels(labels)
    memory.update(torch.tensor([4, 0, 9, 6]), F.normalize(torch.randn(4, 5), dim=1))
    expected = torch.stack([memory.features[labels == c].mean(0) for c in range(3)])
    torch.testing.assert_close(memory.centroids, expected, atol=1e-6, rtol=0)


def test_state_round_trip_keeps_rows_and_centroids():
    memory = InstanceMemory(torch.randn(20, 4))
    memory.set_labels(torch.arange(20) % 5)
    memory.update(torch.tensor([1, 2]), torch.randn(2, 4))
    other = InstanceMemory(torch.zeros(20, 4) + 1)
    other.load_state_dict(memory.state_dict())
    torch.testing.assert_close(other.features, memory.features)
    torch.testing.assert_close(other.centroids, memory.centroids, atol=1e-6, rtol=0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="alpha"):
        InstanceMemory(torch.randn(3, 2), alpha=1.0)
    memory = InstanceMemory(torch.randn(3, 2))
    with pytest.raises(ValueError, match="labels must be"):
        memory.set_labels(torch.tensor([0, -2, 1]))
    with pytest.raises(ValueError, match="no row has a class"):
        memory.set_labels(torch.tensor([-1, -1, -1]))
    with pytest.raises(ValueError, match="update needs"):
        memory.update(torch.tensor([0]), torch.randn(2, 2))


def test_from_state_dict_rebuilds_rows_labels_and_centroids():
    g = torch.Generator().manual_seed(0)
    memory = InstanceMemory(torch.randn(12, 4, generator=g), alpha=0.3)
    memory.set_labels(torch.arange(12) % 3)
    memory.update(torch.tensor([0, 5]), torch.randn(2, 4, generator=g))
    copy = InstanceMemory.from_state_dict(memory.state_dict())
    assert copy.alpha == 0.3
    torch.testing.assert_close(copy.features, memory.features)
    torch.testing.assert_close(copy.centroids, memory.centroids)
    assert torch.equal(copy.labels, memory.labels)


def test_state_saved_before_the_alpha_rename_loads():
    memory = InstanceMemory(torch.randn(5, 3), alpha=0.4)
    state = memory.state_dict()
    state["momentum"] = state.pop("alpha")
    assert InstanceMemory.from_state_dict(state, "cpu").alpha == 0.4
