"""How many CPU cores this process may run on: :func:`usable_cores`."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores of this process' CPU affinity (Linux), else the machine's; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
