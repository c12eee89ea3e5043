"""DistributedDataParallel for the trainer: wrapping, synchronised BatchNorm, buffer sync.

BatchNorm and the number of processes: in training mode a BatchNorm layer normalises with the
statistics of the batch it sees. Under DDP without synchronisation that is each rank's share of
the global batch (``train.batch_size / world_size`` images), so the same global batch gives other
features, losses and running statistics than in one process. ``model.sync_bn=true`` computes the
statistics over the global batch instead: :class:`torch.nn.SyncBatchNorm` on CUDA, and on the CPU
(where PyTorch's SyncBatchNorm refuses to run) :class:`CpuSyncBatchNorm`, a slower version built
on differentiable all-reduces.

Running statistics are broadcast from rank 0 by DDP before every forward pass; after the last
step of an epoch :func:`broadcast_buffers` does the same so evaluation, memory extraction and the
checkpoint all see rank 0's buffers.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cacl import distributed
from cacl.errors import CaclError

log = logging.getLogger(__name__)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks too."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=ctx.group)
        return out, None


def differentiable_all_reduce(tensor: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    return _AllReduceSum.apply(tensor, group)


class CpuSyncBatchNorm(_BatchNorm):
    """BatchNorm over the batches of all ranks for CPU tensors (gloo), any input rank >= 2.

    Training mode with a process group: the mean, then the variance around it, are summed over
    ranks with all-reduces that carry gradients (so every rank's input gets the gradient of the
    sum of all ranks' losses, as with :class:`torch.nn.SyncBatchNorm`). Otherwise it is the
    ordinary BatchNorm. Parameters and buffers have BatchNorm's names.
    """

    def __init__(self, *args, process_group: dist.ProcessGroup | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and distributed.get_world_size() > 1):
            return super().forward(input)
        group = self.process_group or dist.group.WORLD
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        total = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        dist.all_reduce(total, group=group)
        mean = differentiable_all_reduce(x.sum(dims), group=group) / total
        centred = x - mean.view(shape)
        var = differentiable_all_reduce((centred * centred).sum(dims), group=group) / total
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(total))
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - factor).add_(factor * mean)
        self.running_var.mul_(1 - factor).add_(factor * unbiased)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by a synchronised one (in place where possible;
    the same parameter and buffer objects and names, so checkpoints are unchanged)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    group = dist.new_group(backend="gloo") if distributed.get_world_size() > 1 else None
    return _convert_cpu(module, group)


def _convert_cpu(module: nn.Module, group: dist.ProcessGroup | None) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            process_group=group,
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child, group))
    return out


def prepare_model(
    model: nn.Module, device: torch.device, sync_bn: bool = False, find_unused: bool = False
) -> nn.Module:
    """The module to train: ``model`` itself in one process; under a process group ``model`` (its
    BatchNorm layers synchronised when ``sync_bn``) wrapped in DistributedDataParallel. ``model``
    keeps its own parameters either way (save and evaluate ``model``, train the result).
    ``find_unused``: some parameters get no gradient (the predictor of the one-branch baseline)."""
    if distributed.get_world_size() == 1:
        if sync_bn:
            log.info("model.sync_bn has no effect in a single process")
        return model
    if sync_bn:
        convert_sync_batchnorm(model, device)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=device_ids,
        output_device=device_ids[0] if device_ids else None,
        find_unused_parameters=find_unused,
    )


@torch.no_grad()
def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank."""
    if distributed.get_world_size() == 1:
        return
    for buffer in module.buffers():
        distributed.broadcast_tensor(buffer, src=src)


def describe_batch(batch_size: int, num_instances: int, world_size: int) -> str:
    """Check that ``train.batch_size`` (the global batch) splits over the ranks and say how.

    Raises :class:`~cacl.errors.CaclError` when it does not; warns when a rank's share is not a
    whole number of K-groups (identity groups are then split between ranks)."""
    if batch_size % world_size:
        raise CaclError(
            f"train.batch_size={batch_size} is the global batch and must split evenly over the "
            f"{world_size} processes; use a multiple of {world_size * num_instances} "
            f"(processes x train.num_instances)"
        )
    per_rank = batch_size // world_size
    text = f"batch {batch_size} = {batch_size // num_instances} x {num_instances}"
    if world_size == 1:
        return text
    if per_rank % num_instances:
        log.warning(
            "each of the %d processes gets %d images, not a multiple of train.num_instances=%d: "
            "identity groups are split between processes",
            world_size,
            per_rank,
            num_instances,
        )
    return f"{text} in all, {per_rank} per process x {world_size} processes"
