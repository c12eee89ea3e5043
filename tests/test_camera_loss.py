"""The inter-camera proxy term: against a loop-by-loop transcription, proxies, gradients, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cacl.config import LossConfig
from cacl.engine.step import train_step
from cacl.losses import camera_proxy_loss
from cacl.memory import InstanceMemory


def naive_camera_loss(x, proxies, p_class, p_cam, targets, cams, tau, k):
    """ICE's inter-camera term, sample by sample, proxy by proxy."""
    p = F.normalize(proxies.double(), dim=1)
    losses = []
    for i in range(x.shape[0]):
        sims = [float(x[i].double() @ p[j]) / tau for j in range(p.shape[0])]
        pos = [j for j in range(len(sims)) if p_class[j] == targets[i] and p_cam[j] != cams[i]]
        if not pos:
            continue
        neg = sorted((sims[j] for j in range(len(sims)) if p_class[j] != targets[i]), reverse=True)
        denominator = sum(math.exp(sims[j]) for j in pos) + sum(math.exp(s) for s in neg[:k])
        losses.append(-sum(sims[j] - math.log(denominator) for j in pos) / len(pos))
    return sum(losses) / len(losses) if losses else 0.0


def random_case(seed=0, batch=12, dim=16, classes=5, cameras=3):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    p_class = torch.arange(classes).repeat_interleave(cameras)
    p_cam = torch.arange(cameras).repeat(classes)
    keep = torch.rand(p_class.numel(), generator=g) > 0.3  # not every class in every camera
    proxies = torch.randn(int(keep.sum()), dim, generator=g)
    targets = torch.randint(0, classes, (batch,), generator=g)
    cams = torch.randint(0, cameras, (batch,), generator=g)
    return x, proxies, p_class[keep], p_cam[keep], targets, cams


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau,k", [(0.07, 50), (0.5, 3), (0.1, 1)])
def test_camera_proxy_loss_matches_naive(seed, tau, k):
    case = random_case(seed)
    got = camera_proxy_loss(*case, temperature=tau, num_negatives=k)
    assert float(got) == pytest.approx(naive_camera_loss(*case, tau, k), rel=1e-5, abs=1e-6)


def test_samples_seen_by_one_camera_add_nothing():
    x, proxies, p_class, p_cam, targets, cams = random_case(3)
    # every proxy of class t is in camera 0 only, every sample in camera 0
    p_cam = torch.zeros_like(p_cam)
    cams = torch.zeros_like(cams)
    x.requires_grad_(True)
    loss = camera_proxy_loss(x, proxies, p_class, p_cam, targets, cams)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0


def test_gradient_reaches_the_features_not_the_proxies():
    x, proxies, p_class, p_cam, targets, cams = random_case(4)
    x.requires_grad_(True)
    proxies.requires_grad_(True)
    camera_proxy_loss(x, proxies, p_class, p_cam, targets, cams).backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    assert proxies.grad is None


def test_memory_proxies_follow_the_update_rule():
    g = torch.Generator().manual_seed(0)
    memory = InstanceMemory(torch.randn(30, 8, generator=g), alpha=0.2)
    cams = torch.arange(30) % 3
    labels = torch.arange(30) // 6
    labels[5] = -1
    memory.set_labels(labels)
    memory.set_cameras(cams)
    for _ in range(3):
        idx = torch.randint(0, 30, (10,), generator=g)
        memory.update(idx, torch.randn(10, 8, generator=g))
    for p in range(memory.proxies.shape[0]):
        rows = (labels == memory.proxy_class[p]) & (cams == memory.proxy_camera[p])
        rows &= labels >= 0
        torch.testing.assert_close(memory.proxies[p], memory.features[rows].mean(0))
        assert bool((memory.proxy_index[rows] == p).all())
    assert memory.proxy_index[5] == -1
    with pytest.raises(ValueError, match="cameras must be"):
        memory.set_cameras(torch.zeros(3, dtype=torch.long))


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch1 = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 8, 16))
        self.branch2 = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 8, 16))
        self.predictor = torch.nn.Linear(16, 16)

    def forward(self, colour, gray):
        pooled = self.branch1(colour)
        return {
            "x": F.normalize(pooled, dim=1),
            "z": F.normalize(self.predictor(pooled), dim=1),
            "x_tilde": F.normalize(self.branch2(gray), dim=1),
        }


def _step_grads(cfg: LossConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """One real train_step (plain SGD, lr 1): the parameter change of each part is -grad."""
    torch.manual_seed(0)
    net = _TinyNet()
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(24) % 6
    memories = [InstanceMemory(torch.randn(24, 16, generator=g)) for _ in range(2)]
    for m in memories:
        m.set_labels(labels)
        m.set_cameras(torch.arange(24) // 8)
    batch = {
        "colour": torch.randn(8, 3, 16, 8, generator=g),
        "gray": torch.randn(8, 3, 16, 8, generator=g),
        "index": torch.arange(8) * 3,
    }
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    losses = train_step(net, batch, labels[batch["index"]], *memories, opt, cfg)
    change = {n: (p.detach() - before[n]).abs().sum() for n, p in net.named_parameters()}
    return change, losses.as_dict()


def test_camera_term_in_a_real_step_reaches_only_its_branch():
    only_camera = dict(instance_weight=0.0, inter_weight=0.0, intra_weight=0.0)
    change, losses = _step_grads(LossConfig(camera_weight=1.0, **only_camera))
    assert losses["L_cam"] > 0
    assert change["branch1.1.weight"] > 0
    assert change["branch2.1.weight"] == 0 and change["predictor.weight"] == 0
    change, _ = _step_grads(LossConfig(camera_weight=1.0, camera_branches="both", **only_camera))
    assert change["branch1.1.weight"] > 0 and change["branch2.1.weight"] > 0
    assert change["predictor.weight"] == 0
    _, paper = _step_grads(LossConfig())
    assert "L_cam" not in paper


def test_camera_term_adds_to_the_total():
    _, off = _step_grads(LossConfig())
    _, on = _step_grads(LossConfig(camera_weight=0.5))
    assert on["total"] == pytest.approx(off["total"] + 0.5 * on["L_cam"], rel=1e-5)
