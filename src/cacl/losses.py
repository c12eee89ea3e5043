"""The three CACL losses as pure functions (docs/method.md, "Losses").

Symbols as in the paper, for a batch of B images with pseudo labels ``y``:

- ``x``: L2-normalised colour-branch feature (branch 1, after the BN neck);
- ``x_tilde``: L2-normalised gray-branch feature (branch 2);
- ``z``: L2-normalised predictor output of branch 1;
- ``u`` / ``u_tilde``: class centroids, means of the colour / gray memory rows of each class.

:func:`camera_proxy_loss` is the optional inter-camera term beyond the paper
(``loss.camera_weight``).

The stop-gradients of the paper are explicit ``detach()`` calls here, so the functions can be given
tensors that require grad and still behave as specified.
"""

from __future__ import annotations

import math

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


def camera_proxy_loss(
    x: torch.Tensor,
    proxies: torch.Tensor,
    proxy_class: torch.Tensor,
    proxy_camera: torch.Tensor,
    targets: torch.Tensor,
    cameras: torch.Tensor,
    temperature: float = 0.07,
    num_negatives: int = 50,
) -> torch.Tensor:
    """Inter-camera proxy contrastive loss (ICE, ICCV 2021; docs/method.md, "Beyond the paper").

    For sample ``i`` of class ``y_i`` seen by camera ``c_i``: positives ``P_i`` are the proxies
    of ``y_i`` in the *other* cameras, negatives ``Q_i`` the ``num_negatives`` proxies of other
    classes most similar to ``x_i``;
    ``l_i = -1/|P_i| sum_{p in P_i} log( exp(<x_i, p>/tau) / sum_{u in P_i ∪ Q_i} exp(<x_i, u>/tau) )``
    and the loss is the mean of ``l_i`` over the samples with ``P_i`` non-empty (0 when there are
    none: a class seen by one camera adds nothing). Proxies get no gradient.

    Args:
        x: (B, D) L2-normalised features.
        proxies: (P, D) proxy rows (means of memory rows; their norms are divided out here).
        proxy_class, proxy_camera: (P,) class and camera of every proxy.
        targets, cameras: (B,) class and camera of every sample.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
    if targets.shape != (x.shape[0],) or cameras.shape != (x.shape[0],):
        raise ValueError(f"targets and cameras must be ({x.shape[0]},)")
    # <x_i, p / ||p||>: the products scaled per proxy, no normalised copy of the (P, D) proxies
    # (P reaches 10^5-10^6 with a million memory rows)
    p = proxies.detach().float()
    scale = torch.linalg.vector_norm(p, dim=1).clamp_min(1e-12) * temperature
    sim = (x.float() @ p.t()) / scale  # (B, P)
    same_class = proxy_class[None, :] == targets[:, None]
    positive = same_class & (proxy_camera[None, :] != cameras[:, None])
    has_positive = positive.any(dim=1)
    if not bool(has_positive.any()):
        return sim.sum() * 0.0  # keeps the graph; no sample has a cross-camera positive
    sim, positive, same_class = sim[has_positive], positive[has_positive], same_class[has_positive]
    k = min(num_negatives, sim.shape[1])
    negatives = sim.masked_fill(same_class, -math.inf).topk(k, dim=1).values  # (B', k)
    pos_logits = sim.masked_fill(~positive, -math.inf)
    log_denominator = torch.logsumexp(torch.cat([pos_logits, negatives], dim=1), dim=1)
    log_prob = (pos_logits - log_denominator[:, None]).masked_fill(~positive, 0.0)
    return -(log_prob.sum(dim=1) / positive.sum(dim=1)).mean()


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
