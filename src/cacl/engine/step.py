"""One CACL optimisation step: forward both views, the three losses, backward, optimiser step,
then the explicit memory updates (METHOD.md, "Losses" and "Instance memory banks")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cacl.config import LossConfig
from cacl.errors import CaclError
from cacl.losses import instance_loss, inter_view_cluster_loss, intra_view_cluster_loss
from cacl.memory import InstanceMemory
from cacl.models import CACLNet


class TrainingError(CaclError):
    """Training cannot go on (NaN or exploding loss, no usable clusters ...)."""


@dataclass
class StepLosses:
    """The loss terms of one step (floats): ``L_I``, ``L_C_inter``, ``L_C_intra`` and the total."""

    L_I: float
    L_C_inter: float
    L_C_intra: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def compute_losses(
    out: dict[str, torch.Tensor],
    targets: torch.Tensor,
    memory: InstanceMemory,
    memory_tilde: InstanceMemory | None,
    cfg: LossConfig,
) -> dict[str, torch.Tensor]:
    """The CACL loss terms from the network outputs. Without a gray branch only ``L_C_intra`` of
    the colour view remains (the one-branch cluster-memory baseline)."""
    assert memory.centroids is not None
    intra = intra_view_cluster_loss(out["x"], memory.centroids, targets, cfg.temperature, cfg.gamma)
    zero = intra.new_zeros(())
    terms = {"L_I": zero, "L_C_inter": zero, "L_C_intra": intra}
    if "x_tilde" in out and memory_tilde is not None:
        assert memory_tilde.centroids is not None
        terms["L_C_intra"] = intra + intra_view_cluster_loss(
            out["x_tilde"], memory_tilde.centroids, targets, cfg.temperature, cfg.gamma
        )
        terms["L_I"] = instance_loss(out["z"], out["x_tilde"])
        terms["L_C_inter"] = inter_view_cluster_loss(out["z"], memory_tilde.centroids, targets)
    terms["total"] = (
        cfg.instance_weight * terms["L_I"]
        + cfg.inter_weight * terms["L_C_inter"]
        + cfg.intra_weight * terms["L_C_intra"]
    )
    return terms


def train_step(
    model: CACLNet,
    batch: dict[str, torch.Tensor],
    targets: torch.Tensor,
    memory: InstanceMemory,
    memory_tilde: InstanceMemory | None,
    optimizer: torch.optim.Optimizer,
    cfg: LossConfig,
    *,
    max_grad_norm: float = 0.0,
    explode_loss: float = 1e4,
) -> StepLosses:
    """Run one step in place; raise :class:`TrainingError` before touching anything when a loss
    is NaN, infinite or above ``explode_loss``."""
    device = memory.device
    colour = batch["colour"].to(device, non_blocking=True)
    gray = batch["gray"].to(device, non_blocking=True) if memory_tilde is not None else None
    index = batch["index"].to(device)
    out = model(colour, gray)
    terms = compute_losses(out, targets, memory, memory_tilde, cfg)
    values = {k: float(v.detach()) for k, v in terms.items()}
    bad = [k for k, v in values.items() if not math.isfinite(v) or abs(v) > explode_loss]
    if bad:
        raise TrainingError(
            "loss " + ", ".join(f"{k}={values[k]:.4g}" for k in bad) + " is not finite or exploded"
        )
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    memory.update(index, out["x"].detach())
    if memory_tilde is not None and "x_tilde" in out:
        memory_tilde.update(index, out["x_tilde"].detach())
    return StepLosses(**values)
