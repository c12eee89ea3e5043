"""One CACL optimisation step: forward both views, the three losses, backward, optimiser step,
then the explicit memory updates (docs/method.md, "Losses" and "Instance memory banks").

Under DistributedDataParallel every rank computes the losses as means over its own share of the
global batch and DDP averages the gradients over ranks, which is the gradient of the mean over the
global batch (the shares are equal). The memory updates use the features and indexes of the whole
global batch, gathered in rank order (= the batch order of one process), so both banks stay
identical on every rank. The logged loss values are averaged over ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cacl import distributed
from cacl.config import LossConfig
from cacl.engine.amp import Precision
from cacl.errors import TrainingError
from cacl.losses import (
    camera_proxy_loss,
    instance_loss,
    inter_view_cluster_loss,
    intra_view_cluster_loss,
)
from cacl.memory import InstanceMemory


@dataclass
class StepLosses:
    """The loss terms of one step (floats): ``L_I``, ``L_C_inter``, ``L_C_intra`` and the total."""

    L_I: float
    L_C_inter: float
    L_C_intra: float
    total: float
    L_cam: float | None = None  # the camera term, when it is on

    def as_dict(self) -> dict[str, float]:
        out = {"L_I": self.L_I, "L_C_inter": self.L_C_inter, "L_C_intra": self.L_C_intra}
        if self.L_cam is not None:
            out["L_cam"] = self.L_cam
        out["total"] = self.total
        return out


def compute_losses(
    out: dict[str, torch.Tensor],
    targets: torch.Tensor,
    memory: InstanceMemory,
    memory_tilde: InstanceMemory | None,
    cfg: LossConfig,
    index: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The CACL loss terms from the network outputs. Without a gray branch only ``L_C_intra`` of
    the colour view remains (the one-branch cluster-memory baseline).

    With ``cfg.camera_weight > 0`` the inter-camera proxy term ``L_cam`` is added, on branch 1
    (and on branch 2 with ``cfg.camera_branches == "both"``); it needs the batch's memory
    ``index`` and memories that keep camera proxies (:meth:`InstanceMemory.set_cameras`)."""
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
    total = (
        cfg.instance_weight * terms["L_I"]
        + cfg.inter_weight * terms["L_C_inter"]
        + cfg.intra_weight * terms["L_C_intra"]
    )
    if cfg.camera_weight > 0:
        if index is None:
            raise ValueError("the camera term needs the batch's memory index")
        terms["L_cam"] = _camera_term(out["x"], memory, targets, index, cfg)
        if cfg.camera_branches == "both" and "x_tilde" in out and memory_tilde is not None:
            terms["L_cam"] = terms["L_cam"] + _camera_term(
                out["x_tilde"], memory_tilde, targets, index, cfg
            )
        total = total + cfg.camera_weight * terms["L_cam"]
    terms["total"] = total
    return terms


def _camera_term(
    x: torch.Tensor,
    memory: InstanceMemory,
    targets: torch.Tensor,
    index: torch.Tensor,
    cfg: LossConfig,
) -> torch.Tensor:
    if memory.proxies is None or memory.cameras is None:
        raise ValueError("loss.camera_weight > 0 needs a memory with cameras (set_cameras)")
    assert memory.proxy_class is not None and memory.proxy_camera is not None
    return camera_proxy_loss(
        x,
        memory.proxies,
        memory.proxy_class,
        memory.proxy_camera,
        targets,
        memory.cameras[index],
        cfg.camera_temperature,
        cfg.camera_negatives,
    )


def train_step(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    targets: torch.Tensor,
    memory: InstanceMemory,
    memory_tilde: InstanceMemory | None,
    optimizer: torch.optim.Optimizer,
    cfg: LossConfig,
    *,
    max_grad_norm: float = 0.0,
    explode_loss: float = 1e4,
    precision: Precision | None = None,
) -> StepLosses:
    """Run one step in place; raise :class:`TrainingError` before touching anything when a loss
    is NaN, infinite or above ``explode_loss``.

    ``model`` is a :class:`CACLNet` or its DistributedDataParallel wrapper; ``precision`` says
    whether the forward pass runs under autocast (losses and memory updates stay float32).
    """
    precision = precision or Precision(memory.device)
    device = memory.device
    colour = batch["colour"].to(device, non_blocking=True)
    gray = batch["gray"].to(device, non_blocking=True) if memory_tilde is not None else None
    index = batch["index"].to(device)
    with precision.autocast():
        out = model(colour, gray)
    out = {k: v.float() for k, v in out.items()}
    terms = compute_losses(out, targets, memory, memory_tilde, cfg, index)
    values = _global_values(terms)
    bad = [k for k, v in values.items() if not math.isfinite(v) or abs(v) > explode_loss]
    if bad:
        raise TrainingError(
            "loss " + ", ".join(f"{k}={values[k]:.4g}" for k in bad) + " is not finite or exploded"
        )
    optimizer.zero_grad(set_to_none=True)
    precision.backward(terms["total"])
    precision.step(optimizer, model.parameters(), max_grad_norm)
    global_index = distributed.all_gather_cat(index)
    memory.update(global_index, distributed.all_gather_cat(out["x"].detach()))
    if memory_tilde is not None and "x_tilde" in out:
        memory_tilde.update(global_index, distributed.all_gather_cat(out["x_tilde"].detach()))
    return StepLosses(**values)


def _global_values(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """The loss terms as floats, averaged over ranks (the global-batch means); every rank gets the
    same values, so all stop together when one is not finite."""
    if distributed.get_world_size() == 1:
        return {k: float(v.detach()) for k, v in terms.items()}
    keys = list(terms)
    stacked = distributed.all_reduce_mean(torch.stack([terms[k].detach() for k in keys]))
    return dict(zip(keys, stacked.tolist()))
