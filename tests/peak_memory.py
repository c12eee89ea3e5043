"""The resident high-water mark of the test process around a call (Linux ``/proc``)."""

from __future__ import annotations

import pytest


def hwm_increase(fn) -> int:
    """Bytes by which the process's resident high-water mark rose above its size before ``fn``."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current resident size
    except OSError:
        pytest.skip("the resident high-water mark cannot be reset here")
    before = status_bytes("VmRSS")
    fn()
    return status_bytes("VmHWM") - before


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)
