"""A run directory: resolved config, log file, TensorBoard scalars, ``results.json``."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFIG_FILE, RESULTS_FILE, LOG_FILE = "config.yaml", "results.json", "train.log"


def new_run_dir(base: str | os.PathLike = "runs", name: str = "run") -> Path:
    """A fresh folder ``base/YYYYmmdd-HHMMSS-name`` (suffixed when it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{stamp}-{name}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(base) / f"{stamp}-{name}-{suffix}"
    return path


def check_new_output(path: str | os.PathLike) -> Path:
    """``path`` as a folder for a new run: missing or empty, else a :class:`CaclError` that says
    what to do instead (nothing is created or written here)."""
    from cacl.errors import CaclError

    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == path else f"is under the file {parent}"
            raise CaclError(f"--output {path} {what}; give a folder")
    if path.is_dir() and any(path.iterdir()):
        raise CaclError(
            f"--output {path} already holds files; continue that run with "
            f"`cacl train --resume {path}`, or give a new folder"
        )
    return path


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Copy every log record of the ``cacl`` loggers into ``run_dir/train.log``."""
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    logger = logging.getLogger("cacl")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def detach_log_file(handler: logging.Handler | None) -> None:
    """Undo :func:`attach_log_file` (``None``: nothing was attached)."""
    if handler is not None:
        logging.getLogger("cacl").removeHandler(handler)
        handler.close()


def json_safe(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by ``None`` (strict JSON has neither)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def write_json_atomic(data: Any, path: Path) -> None:
    """Strict JSON (NaN and infinities written as ``null``), fsynced, renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(json_safe(data), handle, indent=2, allow_nan=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


#: Cluster statistics of an epoch's record that become TensorBoard scalars (when present).
CLUSTER_SCALARS = (
    "clusters",
    "outliers",
    "nmi",
    "ari",
    "multi_camera_clusters",
    "cameras_per_cluster",
    "own_camera_share",
    "own_camera_chance",
)


class Scalars:
    """TensorBoard scalars when the ``tensorboard`` package is installed; a no-op otherwise."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info(
                "tensorboard is not installed: no TensorBoard scalars (pip install tensorboard)"
            )
            return
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def add(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def add_epoch(self, record: dict[str, Any]) -> None:
        """Loss terms, cluster counts (NMI / ARI when known) and metrics of one epoch's record."""
        step = record["epoch"]
        for key, value in record["loss"].items():
            self.add(f"loss/{key}", value, step)
        for key in CLUSTER_SCALARS:
            if key in record["cluster"]:
                self.add(f"cluster/{key}", record["cluster"][key], step)
        for key, value in record.get("eval", {}).items():
            self.add(f"eval/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
