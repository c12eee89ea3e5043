"""The three CACL losses as pure functions (METHOD.md, "Losses").

Symbols as in the paper, for a batch of B images with pseudo labels ``y``:

- ``x``: L2-normalised colour-branch feature (branch 1, after the BN neck);
- ``x_tilde``: L2-normalised gray-branch feature (branch 2);
- ``z``: L2-normalised predictor output of branch 1;
- ``u`` / ``u_tilde``: class centroids, means of the colour / gray memory rows of each class.

The stop-gradients of the paper are explicit ``detach()`` calls here, so the functions can be given
tensors that require grad and still behave as specified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def instance_loss(z: torch.Tensor, x_tilde: torch.Tensor) -> torch.Tensor:
    """``L_I = mean_i ( -<z_i, sg(x~_i)> )``: the predictor's output chases the gray feature."""
    _check_pair(z, x_tilde, "z", "x_tilde")
    return -(z * x_tilde.detach()).sum(dim=1).mean()


def inter_view_cluster_loss(
    z: torch.Tensor, centroids_tilde: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``L_C_inter = mean_i ( -<z_i, sg(u~_{y_i} / ||u~_{y_i}||)> )``.

    ``centroids_tilde`` is the (C, D) matrix of gray-memory centroids (not normalised: the function
    normalises the rows it uses); ``targets`` the (B,) class of each sample.
    """
    _check_targets(targets, z.shape[0], centroids_tilde.shape[0])
    u = F.normalize(centroids_tilde.detach()[targets].float(), dim=1)
    return -(z.float() * u).sum(dim=1).mean()


def intra_view_cluster_loss(
    x: torch.Tensor,
    centroids: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 0.05,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal-weighted softmax over all classes for one view:
    ``mean_i ( -(1 - q_i)^gamma log q_i )`` with ``q_i = softmax_l(<x_i, u_l> / tau)[y_i]``.

    The total ``L_C_intra`` of the paper is this function on the colour view (``x``, ``u``) plus
    this function on the gray view (``x~``, ``u~``). Computed with ``log_softmax`` for stability;
    ``gamma = 0`` gives the plain cross-entropy.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if gamma < 0:
        raise ValueError(f"gamma must be non-negative, got {gamma}")
    _check_targets(targets, x.shape[0], centroids.shape[0])
    logits = x.float() @ centroids.detach().float().t() / temperature
    log_q = F.log_softmax(logits, dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
    if gamma == 0:
        return -log_q.mean()
    # (1 - q)^gamma computed as (-expm1(log q))^gamma: accurate when q is close to 1.
    weight = (-torch.expm1(log_q)).clamp_min(0).pow(gamma)
    return -(weight * log_q).mean()


def _check_pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"{name_a} and {name_b} must be (B, D) of the same shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_targets(targets: torch.Tensor, batch: int, num_classes: int) -> None:
    if targets.dim() != 1 or targets.shape[0] != batch:
        raise ValueError(f"targets must be ({batch},), got {tuple(targets.shape)}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets must lie in [0, {num_classes}); got range "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
