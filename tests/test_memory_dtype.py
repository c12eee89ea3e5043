"""Memory banks in float16 (``memory.dtype``), chunked centroids and proxies, building a bank in
preallocated storage, and the peak memory of the passes over a large bank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

import cacl.memory as memory_module
from cacl.checkpoints.io import atomic_save, load_checkpoint
from cacl.clustering.camera import own_camera_share
from cacl.clustering.knn import InvalidFeaturesError
from cacl.config import ConfigError, config_from_dict, load_config, save_config
from cacl.evaluation.extract import extract_batches
from cacl.memory import InstanceMemory, memory_dtype
from peak_memory import hwm_increase

MB = 1024**2


def labelled_case(n=300, dim=32, classes=20, cameras=4, seed=0):
    """Rows, labels 0..classes-1 with about 15 % -1, and cameras."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.15] = -1
    labels[:classes] = torch.arange(classes)  # every class present
    cams = torch.randint(0, cameras, (n,), generator=g)
    return x, labels, cams


def naive_means(rows, index, size):
    """Mean of the float32 rows of every group 0..size-1 of ``index``, loop by loop."""
    rows = rows.double()
    return torch.stack([rows[index == c].mean(0) for c in range(size)]).float()


def banks(dtype, x, labels, cams):
    memory = InstanceMemory(x, alpha=0.2, dtype=dtype)
    memory.set_cameras(cams)
    memory.set_labels(labels)
    return memory


def random_updates(memory_list, n, dim, steps=25, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, n, (16,), generator=g)  # duplicates included
        feats = F.normalize(torch.randn(16, dim, generator=g), dim=1)
        for memory in memory_list:
            memory.update(idx, feats)


def test_float16_bank_follows_the_float32_bank_within_fp16_rounding():
    x, labels, cams = labelled_case()
    full, half = banks(torch.float32, x, labels, cams), banks(torch.float16, x, labels, cams)
    assert half.features.dtype == torch.float16 and half.dtype == torch.float16
    assert half.centroids.dtype == torch.float32 and half.proxies.dtype == torch.float32
    for _ in range(2):  # after set_labels, then after updates
        torch.testing.assert_close(half.features.float(), full.features, atol=2e-3, rtol=0)
        torch.testing.assert_close(half.centroids, full.centroids, atol=2e-3, rtol=0)
        torch.testing.assert_close(half.proxies, full.proxies, atol=2e-3, rtol=0)
        assert torch.equal(half.proxy_index, full.proxy_index)
        random_updates([full, half], *x.shape)
    assert half.features.dtype == torch.float16
    # the incremental centroids and proxies follow the rows the float16 bank holds
    stored = half.features.float()
    torch.testing.assert_close(half.centroids, naive_means(stored, labels, 20), atol=1e-5, rtol=0)
    proxies = naive_means(stored, half.proxy_index, half.proxies.shape[0])
    torch.testing.assert_close(half.proxies, proxies, atol=1e-5, rtol=0)


def test_float16_update_is_computed_in_float32_then_stored():
    g = torch.Generator().manual_seed(3)
    memory = InstanceMemory(torch.randn(8, 256, generator=g), alpha=0.2, dtype=torch.float16)
    idx = torch.tensor([1, 5, 1])  # row 1 twice: the second round starts from the stored row
    feats = F.normalize(torch.randn(3, 256, generator=g), dim=1)
    expected = memory.features.clone()
    for i, f in zip(idx.tolist(), feats):
        new = F.normalize(0.2 * expected[i].float() + 0.8 * f, dim=0)
        expected[i] = new.half()
    memory.update(idx, feats)
    assert torch.equal(memory.features, expected)  # bit for bit: float32 arithmetic, then stored
    in_half = F.normalize(0.2 * expected[5] + (0.8 * feats[1]).half(), dim=0)  # float16 arithmetic
    assert not torch.equal(in_half, memory.features[5])  # (the test can tell the two apart)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_chunked_centroids_and_proxies_equal_naive_means(monkeypatch, dtype):
    x, labels, cams = labelled_case(n=101, dim=8, classes=9, cameras=3, seed=4)
    monkeypatch.setattr(memory_module, "CHUNK_ELEMENTS", 7 * 8)  # chunks of 7 rows: 15 of them
    memory = banks(dtype, x, labels, cams)
    assert len(memory._chunks()) == 15
    stored = memory.features.float()
    torch.testing.assert_close(memory.centroids, naive_means(stored, labels, 9), atol=1e-6, rtol=0)
    pairs = labels.clamp_min(0) * 3 + cams
    for p in range(memory.proxies.shape[0]):
        rows = (memory.proxy_index == p).nonzero().flatten()
        assert (labels[rows] == memory.proxy_class[p]).all()
        assert (pairs[rows] == memory.proxy_class[p] * 3 + memory.proxy_camera[p]).all()
        torch.testing.assert_close(memory.proxies[p], stored[rows].mean(0), atol=1e-6, rtol=0)
    assert int((memory.proxy_index >= 0).sum()) == int((labels >= 0).sum())
    # the rows went in normalised, chunk by chunk, exactly as a whole-bank normalisation
    assert torch.equal(memory.features, F.normalize(x, dim=1).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_banks_built_in_preallocated_storage_equal_the_copying_constructor(dtype):
    x, labels, _ = labelled_case(n=50, dim=16, seed=5)
    reference = InstanceMemory(x, dtype=dtype)
    storage = (3.0 * x).to(dtype)  # not normalised yet
    wrapped = InstanceMemory.from_storage(storage, alpha=0.3)
    assert wrapped.features.data_ptr() == storage.data_ptr() and wrapped.alpha == 0.3
    torch.testing.assert_close(
        wrapped.features.float(), reference.features.float(), atol=1e-3, rtol=0
    )
    empty = InstanceMemory.empty(50, 16, dtype=dtype)
    for a in range(0, 50, 13):
        empty.write_rows(a, x[a : a + 13])
    assert torch.equal(empty.features, reference.features)
    with pytest.raises(ValueError, match="outside the bank"):
        empty.write_rows(45, x[:10])
    with pytest.raises(ValueError, match=r"rows must be \(B, 16\)"):
        empty.write_rows(0, x[:, :5])
    empty.set_labels(labels)
    with pytest.raises(ValueError, match="before set_labels"):
        empty.write_rows(0, x[:2])


def test_a_storage_dtype_outside_the_list_is_refused_clearly():
    with pytest.raises(ValueError, match="memory dtype must be one of float32, float16, bfloat16"):
        InstanceMemory(torch.randn(4, 3), dtype=torch.float64)
    with pytest.raises(ValueError, match="got 'half'"):
        memory_dtype("half")
    with pytest.raises(ValueError, match="memory dtype"):
        InstanceMemory.from_storage(torch.randn(4, 3, dtype=torch.float64))
    assert (
        memory_dtype("float16") is torch.float16 and memory_dtype(torch.bfloat16) is torch.bfloat16
    )


def test_memory_dtype_round_trips_through_the_config(tmp_path):
    assert load_config("market1501").memory.dtype == "float32"  # the default, written out
    cfg = load_config("smoke", ["memory.dtype=float16"])
    assert cfg.memory.dtype == "float16"
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").memory.dtype == "float16"
    assert config_from_dict(cfg.to_dict()).memory.dtype == "float16"
    old = cfg.to_dict()
    del old["memory"]["dtype"]  # a run saved before the key existed
    assert config_from_dict(old).memory.dtype == "float32"
    with pytest.raises(ConfigError, match="memory.dtype must be float32 or float16, got 'float64'"):
        load_config("smoke", ["memory.dtype=float64"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_checkpoint_keeps_the_rows_in_their_dtype(tmp_path, dtype):
    x, labels, cams = labelled_case(n=60, dim=12, classes=6, seed=6)
    memory = banks(dtype, x, labels, cams)
    random_updates([memory], 60, 12, steps=5)
    atomic_save({"memory": memory.state_dict()}, tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt")["memory"]  # weights_only=True
    copy = InstanceMemory.from_state_dict(state)
    assert copy.features.dtype == dtype
    assert torch.equal(copy.features, memory.features) and torch.equal(copy.labels, labels)
    assert copy.features.data_ptr() != state["features"].data_ptr()  # its own rows
    torch.testing.assert_close(copy.centroids, memory.centroids, atol=1e-5, rtol=0)
    copy.set_cameras(cams)  # as the trainer does after loading
    torch.testing.assert_close(copy.proxies, memory.proxies, atol=1e-5, rtol=0)
    other = InstanceMemory.from_state_dict(state, dtype=torch.float16)  # a dtype asked for
    assert other.features.dtype == torch.float16
    torch.testing.assert_close(other.features.float(), memory.features.float(), atol=1e-3, rtol=0)


class _Items(Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i, ""


def test_extraction_writes_into_preallocated_storage():
    x = torch.randn(23, 6)
    plain, _ = extract_batches(lambda b: b * 2, _Items(x), batch_size=5, progress=False)
    out = torch.empty(23, 6, dtype=torch.float16)
    got, errors = extract_batches(lambda b: b * 2, _Items(x), batch_size=5, progress=False, out=out)
    assert errors == [] and got.data_ptr() == out.data_ptr() and got.dtype == torch.float16
    assert torch.equal(got, plain.half())
    with pytest.raises(ValueError, match=r"out must be \(23, D\)"):
        extract_batches(lambda b: b, _Items(x), progress=False, out=torch.empty(20, 6))
    with pytest.raises(ValueError, match="out holds rows of 4 values"):
        extract_batches(lambda b: b, _Items(x), progress=False, out=torch.empty(23, 4))


def test_own_camera_share_in_blocks_and_on_float16_rows():
    rng = np.random.default_rng(0)
    cams = rng.integers(0, 3, 700)
    x = rng.standard_normal((700, 24)).astype(np.float32) + 1.5 * rng.standard_normal((3, 24))[cams]
    whole = own_camera_share(x, cams, max_queries=300)
    # blocks of 300 x 32 similarities: 22 blocks of columns, the top-k merged across them
    assert own_camera_share(x, cams, max_queries=300, max_block=300 * 32) == whole
    half = own_camera_share(torch.from_numpy(x).half(), cams, max_queries=300)
    assert half[1] == whole[1] and half[0] == pytest.approx(whole[0], abs=0.01)
    assert whole[0] > 0.6 > whole[1]
    x[5, 3] = np.nan
    with pytest.raises(InvalidFeaturesError, match="feature row 5"):
        own_camera_share(x, cams, max_block=300 * 32)


# ---------------------------------------------------------------- peak memory at a moderate N


def _large_half_bank(n: int, dim: int, seed: int = 0) -> InstanceMemory:
    memory = InstanceMemory.empty(n, dim, dtype=torch.float16)
    g = torch.Generator().manual_seed(seed)
    for a in range(0, n, 8192):
        memory.write_rows(a, torch.randn(min(8192, n - a), dim, generator=g))
    return memory


def test_set_labels_on_a_float16_bank_allocates_no_bank_sized_copy():
    n, dim = 400_000, 384  # 300 MB of float16 rows; a float32 copy would be 600 MB
    memory = _large_half_bank(n, dim)
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, n // 200, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.15] = -1
    memory.set_cameras(torch.randint(0, 6, (n,), generator=g))
    bank = n * dim * 2
    rise = hwm_increase(lambda: memory.set_labels(labels))
    # centroids 2,000 x 384 and proxies <= 12,000 x 384 in float32: 21 MB; N-sized indexes
    # (~30 MB) and a 32 MB float32 chunk of rows
    assert rise < bank / 2, f"set_labels raised the peak by {rise / MB:.0f} MB"
    assert memory.proxies is not None and memory.centroids.shape == (n // 200, dim)


def test_own_camera_share_of_a_float16_bank_makes_no_float32_copy_and_no_n_wide_block():
    n, dim = 200_000, 512  # 200 MB of float16 rows; a float32 copy would be 400 MB
    memory = _large_half_bank(n, dim, seed=2)
    cams = np.random.default_rng(3).integers(0, 15, n)
    shares = []
    rise = hwm_increase(
        lambda: shares.append(own_camera_share(memory.features, cams, max_queries=1024))
    )
    # the old way: 400 MB of float32 rows plus a 1024 x N block (800 MB); now a 1024 x 16,384
    # block (64 MB) and a 32 MB chunk of rows in float32
    assert rise < n * dim * 2, f"own_camera_share raised the peak by {rise / MB:.0f} MB"
    share, chance = shares[0]
    assert 0.0 <= share <= 1.0 and chance == pytest.approx(1 / 15, abs=0.01)


# ---------------------------------------------------------------- the trainer with float16 banks


def test_training_with_float16_banks_checkpoints_them_and_resumes_exactly(cache, tmp_path):
    from cacl.engine.trainer import Trainer

    fast = ["data.height=32", "data.width=16", "train.iters=2", "train.batch_size=8"]
    options = [*fast, "train.deterministic=true", "memory.dtype=float16", "loss.camera_weight=0.5"]

    def train(output, epochs):
        cfg = load_config("smoke", [*options, f"train.epochs={epochs}"])
        return Trainer(cfg, output, progress=False).fit()

    whole = train(tmp_path / "whole", 2)
    state = load_checkpoint(tmp_path / "whole" / "last.pt", prefer="last.pt")
    assert state["config"]["memory"]["dtype"] == "float16"
    for key in ("memory", "memory_tilde"):
        rows = state[key]["features"]
        assert rows.dtype == torch.float16
        torch.testing.assert_close(
            rows.float().norm(dim=1), torch.ones(len(rows)), atol=2e-3, rtol=0
        )
    train(tmp_path / "part", 1)
    trainer = Trainer.resume(tmp_path / "part", ["train.epochs=2"], progress=False)
    assert trainer.memory.dtype == torch.float16 and trainer.memory_tilde.dtype == torch.float16
    resumed = trainer.fit()
    assert resumed["mAP"] == pytest.approx(whole["mAP"], abs=1e-6)
    for a, b in zip(resumed["history"], whole["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["cluster"]["clusters"] == b["cluster"]["clusters"]
