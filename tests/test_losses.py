"""CACL losses against naive per-sample transcriptions of docs/method.md, and their gradient paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cacl.losses import instance_loss, inter_view_cluster_loss, intra_view_cluster_loss


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def naive_instance(z, x_tilde):
    return sum(-float(z[i] @ x_tilde[i]) for i in range(len(z))) / len(z)


def naive_inter(z, u_tilde, y):
    total = 0.0
    for i in range(len(z)):
        u = u_tilde[y[i]]
        total += -float(z[i] @ (u / u.norm()))
    return total / len(z)


def naive_intra(x, u, y, tau, gamma):
    total = 0.0
    for i in range(len(x)):
        logits = [float(x[i] @ u[c]) / tau for c in range(len(u))]
        m = max(logits)
        denom = sum(math.exp(v - m) for v in logits)
        q = math.exp(logits[y[i]] - m) / denom
        total += -((1 - q) ** gamma) * math.log(q)
    return total / len(x)


@pytest.mark.parametrize("batch,dim", [(1, 4), (8, 16), (32, 64)])
def test_instance_loss_matches_naive(batch, dim):
    z, xt = unit(batch, dim, seed=1), unit(batch, dim, seed=2)
    assert float(instance_loss(z, xt)) == pytest.approx(naive_instance(z, xt), abs=1e-10)


@pytest.mark.parametrize("batch,dim,classes", [(4, 8, 3), (16, 32, 10)])
def test_inter_view_cluster_loss_matches_naive(batch, dim, classes):
    z = unit(batch, dim, seed=3)
    u_tilde = 0.5 * unit(classes, dim, seed=4)  # centroids of unit rows are shorter than 1
    y = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(5))
    got = float(inter_view_cluster_loss(z, u_tilde, y))
    assert got == pytest.approx(naive_inter(z, u_tilde, y), abs=1e-6)


@pytest.mark.parametrize("tau", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 4.0])
@pytest.mark.parametrize("batch,dim,classes", [(4, 8, 3), (16, 32, 20)])
def test_intra_view_cluster_loss_matches_naive(tau, gamma, batch, dim, classes):
    x = unit(batch, dim, seed=6)
    u = 0.8 * unit(classes, dim, seed=7)
    y = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(8))
    got = float(intra_view_cluster_loss(x, u, y, temperature=tau, gamma=gamma))
    assert got == pytest.approx(naive_intra(x, u, y, tau, gamma), rel=1e-5, abs=1e-7)


def test_intra_view_loss_is_finite_for_confident_predictions():
    x = unit(4, 8, seed=9).float()
    u = x.clone()  # each sample sits on its own centroid: q close to 1 at tau = 0.01
    loss = intra_view_cluster_loss(x, u, torch.arange(4), temperature=0.01, gamma=2.0)
    assert torch.isfinite(loss) and float(loss) >= 0


def test_gradients_follow_the_stop_gradients():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(6, 8), dim=1).requires_grad_()
    x = F.normalize(torch.randn(6, 8), dim=1).requires_grad_()
    x_tilde = F.normalize(torch.randn(6, 8), dim=1).requires_grad_()
    u = torch.randn(3, 8, requires_grad=True)
    u_tilde = torch.randn(3, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    instance_loss(z, x_tilde).backward()
    assert z.grad is not None and x_tilde.grad is None  # L_I reaches branch 1 only

    z.grad = None
    inter_view_cluster_loss(z, u_tilde, y).backward()
    assert z.grad is not None and u_tilde.grad is None and x_tilde.grad is None

    (intra_view_cluster_loss(x, u, y) + intra_view_cluster_loss(x_tilde, u_tilde, y)).backward()
    assert x.grad is not None and x_tilde.grad is not None  # L_C_intra reaches both branches
    assert u.grad is None and u_tilde.grad is None  # memory centroids never get gradient


def test_bad_targets_raise():
    x = unit(4, 8).float()
    with pytest.raises(ValueError, match="targets must lie in"):
        intra_view_cluster_loss(x, x[:2], torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="same shape"):
        instance_loss(x, x[:3])
