"""How many CPU cores this process may run on: :func:`usable_cores`."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores of this process' CPU affinity (Linux), else the machine's; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: On a CPU device a loader process gets a core of its own only from this many cores per
#: process up: measured on 2 cores (benchmarks/bench_step.py), 2 workers beside 2 torch threads
#: made a step 8% slower (AVX-512) or 2% faster (AVX2), and every loader's start 2.4-3.0 s
#: slower, than loading in the main process.
CORES_PER_WORKER = 4


def cpu_share(workers: int, world_size: int = 1, cores: int | None = None) -> tuple[int, int]:
    """Loader processes and torch threads for a CPU device: ``(workers, threads)``.

    The loader's decoding and augmentation is a small share of a CPU step, so on few cores its
    processes only take time from torch's threads: at most one worker per
    :data:`CORES_PER_WORKER` cores of this process (``cores``, default: :func:`usable_cores`
    shared by ``world_size`` processes), never more than ``workers``; the threads take the rest.

    >>> cpu_share(2, cores=2), cpu_share(8, cores=16), cpu_share(0, cores=16)
    ((0, 2), (4, 12), (0, 16))
    """
    cores = max(1, (usable_cores() if cores is None else cores) // max(1, world_size))
    used = max(0, min(workers, cores // CORES_PER_WORKER))
    return used, max(1, cores - used)


def _local_processes() -> int:
    """Processes on this machine sharing its cores (``torchrun`` sets ``LOCAL_WORLD_SIZE``)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def loader_workers(workers: int, device: object) -> int:
    """``workers`` for a data loader on ``device`` (a ``torch.device`` or its name): fewer on a
    CPU device with few cores (:func:`cpu_share`); as given on an accelerator."""
    if str(device).split(":")[0] != "cpu":
        return workers
    return cpu_share(workers, _local_processes())[0]


def share_cpu(workers: int) -> str:
    """Set torch's threads for training on the CPU beside ``workers`` loader processes
    (:func:`cpu_share`), unless ``OMP_NUM_THREADS`` says otherwise; say what was chosen."""
    import torch

    used, threads = cpu_share(workers, _local_processes())
    if os.environ.get("OMP_NUM_THREADS"):
        threads = torch.get_num_threads()
    elif torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    note = (
        f" (data.workers={workers}: {CORES_PER_WORKER} cores per worker)" if used < workers else ""
    )
    return f"{threads} torch threads, {used} loader workers{note}"
