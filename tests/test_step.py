"""One real training step of the CACL network (docs/method.md, "Losses", "Instance memory banks"):
which parameters each loss reaches, how the memories move, which centroids the losses see."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cacl.config import LossConfig
from cacl.engine.step import train_step
from cacl.losses import intra_view_cluster_loss
from cacl.memory import InstanceMemory
from cacl.models import CACLNet

N, B = 24, 8


def setup(seed: int = 0):
    torch.manual_seed(seed)
    net = CACLNet("resnet18", "none", 1, True, True).train()
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.arange(N) % 6
    memories = []
    for _ in range(2):
        memory = InstanceMemory(F.normalize(torch.randn(N, net.feat_dim, generator=g), dim=1), 0.2)
        memory.set_labels(labels)
        memories.append(memory)
    batch = {
        "colour": torch.randn(B, 3, 32, 16, generator=g),
        "gray": torch.randn(B, 1, 32, 16, generator=g).expand(B, 3, 32, 16).contiguous(),
        "index": torch.arange(B) * 3,
    }
    return net, memories, batch, labels[batch["index"]]


def gradients(cfg: LossConfig) -> dict[str, float]:
    """|grad| summed per parameter group after one real train_step (lr 0: nothing moves)."""
    net, (memory, memory_tilde), batch, targets = setup()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    train_step(net, batch, targets, memory, memory_tilde, opt, cfg)
    groups = {
        "backbone1": net.branch1.backbone,
        "neck1": net.branch1.neck,
        "predictor": net.predictor,
        "backbone2": net.branch2.backbone,
        "neck2": net.branch2.neck,
    }
    return {
        name: sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None)
        for name, part in groups.items()
    }


def test_asymmetric_terms_reach_branch_1_and_the_predictor_only():
    grads = gradients(LossConfig(intra_weight=0.0))  # L_I + L_C_inter
    assert grads["backbone1"] > 0 and grads["predictor"] > 0
    assert grads["neck1"] == 0  # z is computed from the pooled feature, before the neck
    assert grads["backbone2"] == 0 and grads["neck2"] == 0  # stop-gradient on x~ and u~


def test_intra_view_term_reaches_both_backbones_and_not_the_predictor():
    grads = gradients(LossConfig(instance_weight=0.0, inter_weight=0.0))  # L_C_intra
    assert grads["backbone1"] > 0 and grads["neck1"] > 0
    assert grads["backbone2"] > 0 and grads["neck2"] > 0
    assert grads["predictor"] == 0


def test_frozen_neck_biases_are_not_optimised():
    net, (memory, memory_tilde), batch, targets = setup()
    biases = [net.branch1.neck.bias, net.branch2.neck.bias, net.predictor.bn.bias]
    assert all(not b.requires_grad for b in biases)
    before = [b.detach().clone() for b in biases]
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.1)
    train_step(net, batch, targets, memory, memory_tilde, opt, LossConfig())
    assert all(torch.equal(b, a) for b, a in zip(biases, before, strict=True))


def test_memory_moves_by_the_alpha_rule_and_losses_use_the_centroids_from_before():
    net, (memory, memory_tilde), batch, targets = setup()
    outputs = {}
    net.register_forward_hook(lambda module, args, out: outputs.update(out))
    rows_before = memory.features.clone()
    rows_tilde_before = memory_tilde.features.clone()
    centroids_before = memory.centroids.clone()
    centroids_tilde_before = memory_tilde.centroids.clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    losses = train_step(net, batch, targets, memory, memory_tilde, opt, LossConfig())
    x, x_tilde = outputs["x"].detach(), outputs["x_tilde"].detach()
    index = batch["index"]
    for mem, before, own in ((memory, rows_before, x), (memory_tilde, rows_tilde_before, x_tilde)):
        expected = F.normalize(0.2 * before[index] + 0.8 * own, dim=1)
        torch.testing.assert_close(mem.features[index], expected)
        untouched = torch.ones(N, dtype=torch.bool)
        untouched[index] = False
        torch.testing.assert_close(mem.features[untouched], before[untouched])
    intra = intra_view_cluster_loss(x, centroids_before, targets, 0.05, 2.0)
    intra = intra + intra_view_cluster_loss(x_tilde, centroids_tilde_before, targets, 0.05, 2.0)
    assert losses.L_C_intra == pytest.approx(float(intra), rel=1e-5)
    assert not torch.allclose(memory.centroids, centroids_before)  # they did move after the step


def test_learning_rate_drops_tenfold_at_step_size():
    from cacl.config import load_config
    from cacl.engine.parts import build_optimizer

    cfg = load_config(None, ["optim.lr=0.01", "optim.step_size=3"])
    optimizer, scheduler = build_optimizer(torch.nn.Linear(2, 2), cfg)
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.01] * 3 + [0.001] * 3 + [0.0001])
