"""Distributed helpers: one code path for one process and for the many processes of ``torchrun``.

``torchrun --nproc_per_node=K -m cacl train ...`` starts K processes and tells each one who it is
through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). :func:`init_from_env` reads them and starts the process group (``nccl`` for CUDA
devices, ``gloo`` for the CPU), one device per process (``cuda:LOCAL_RANK``).

Every other function works without a process group, as in a plain ``cacl train``: the process is
rank 0 of a world of 1, gathers return their input, broadcasts return their argument and barriers
return at once. Collective functions must be called by every rank, in the same order.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from cacl.errors import CaclError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a rank waits in a collective (e.g. while rank 0 clusters) before giving up.
DEFAULT_TIMEOUT_S = 3600
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(CaclError):
    """The distributed environment is incomplete or inconsistent."""


def is_initialized() -> bool:
    """Whether a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def get_local_rank() -> int:
    """The rank within this machine (``LOCAL_RANK`` from torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_initialized() else 0


def is_main() -> bool:
    """True on rank 0, the process that logs and writes files."""
    return get_rank() == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer"
        ) from None


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` is CUDA when available, else the CPU. Under torchrun (``WORLD_SIZE`` > 1) a CUDA
    device is ``cuda:LOCAL_RANK``: one GPU per process, whatever index ``name`` gives."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CaclError(f"{option}={name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            use = f"{option} cpu" if option.startswith("--") else f"{option}=cpu"
            raise CaclError(f"{option} {name}: CUDA is not available here; use {use}")
        if env_world_size() > 1:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if local_rank >= torch.cuda.device_count():
                raise DistributedError(
                    f"LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} "
                    "GPU(s): start at most that many processes per node (--nproc_per_node)"
                )
            device = torch.device("cuda", local_rank)
    return device


def init_from_env(device: str = "auto", timeout_s: float | None = None) -> torch.device:
    """Start the process group when torchrun's environment has ``WORLD_SIZE`` > 1; return this
    process's device.

    Idempotent: with a process group already started (by this function or by the caller) only the
    device is resolved. Backend: ``nccl`` when the device is CUDA, ``gloo`` on the CPU. The group is
    destroyed when the process exits.
    """
    resolved = resolve_device(device)
    if env_world_size() <= 1 or is_initialized():
        return resolved
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start "
            "distributed runs with torchrun (torchrun --nproc_per_node=K -m cacl train ...)"
        )
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    seconds = timeout_s or float(os.environ.get("CACL_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=seconds))
    atexit.register(cleanup)
    log.debug("rank %d of %d started (%s, %s)", get_rank(), get_world_size(), backend, resolved)
    return resolved


def cleanup() -> None:
    """Destroy the default process group, if any (safe to call more than once)."""
    if is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where tensors must be for the default backend: the current GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank gets here (returns at once without a process group)."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dimension 0, in rank order.

    The first dimension may differ between ranks (uneven shards); the other dimensions and the
    dtype must agree. Without a process group the input is returned. Not differentiable.
    """
    if get_world_size() == 1:
        return tensor
    device = _comm_device()
    local = tensor.detach().to(device).contiguous()
    size = torch.tensor([local.shape[0]], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = local.new_zeros((max(counts), *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts)]).to(tensor.device)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (a new tensor; the input without a process group)."""
    if get_world_size() == 1:
        return tensor
    reduced = tensor.detach().to(_comm_device()).clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return (reduced / get_world_size()).to(tensor.device)


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` on every rank, copied in place into ``tensor`` (same shape and
    dtype on every rank) and returned."""
    if get_world_size() == 1:
        return tensor
    buffer = tensor.detach().to(_comm_device())
    dist.broadcast(buffer, src=src)
    if buffer is not tensor:
        with torch.no_grad():
            tensor.copy_(buffer)
    return tensor


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s picklable ``obj`` on every rank (``obj`` is ignored elsewhere)."""
    if get_world_size() == 1:
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` without a process group)."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank.

    An exception raised by ``fn`` on rank 0 is raised on every rank (the original one on rank 0),
    so no rank is left waiting in a collective.
    """
    if get_world_size() == 1:
        return fn()
    payload: tuple[bool, Any] | None = None
    error: BaseException | None = None
    if is_main():
        try:
            payload = (True, fn())
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            error = exc
            payload = (False, exc if isinstance(exc, CaclError) else repr(exc))
    ok, value = broadcast_object(payload)
    if error is not None:
        raise error
    if not ok:
        raise value if isinstance(value, BaseException) else CaclError(f"rank 0 failed: {value}")
    return value


@contextmanager
def local_main_first() -> Iterator[None]:
    """Run the block on each machine's local rank 0 first, then on the other ranks (e.g. to
    download or generate files once per machine)."""
    first = get_local_rank() == 0
    if not first:
        barrier()
    try:
        yield
    finally:
        if first:
            barrier()


def shard_bounds(n: int, rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of rank's contiguous share of ``n`` items (sizes differ by at most 1)."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
