"""Resolve the dataset a config names; generate the embedded synthetic default when needed."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cacl.data.readers import load_dataset
from cacl.data.types import ReidDataset
from cacl.errors import DatasetError

if TYPE_CHECKING:  # the config layer sits above data: annotations only
    from cacl.config import DataConfig

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$CACL_CACHE``, else ``$XDG_CACHE_HOME/cacl``, else ``~/.cache/cacl``."""
    if os.environ.get("CACL_CACHE"):
        return Path(os.environ["CACL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cacl"


def synthetic_root(preset: str, seed: int) -> Path:
    return cache_dir() / f"synth-{preset}-seed{seed}"


def ensure_synthetic(preset: str, seed: int, root: Path | None = None) -> Path:
    """The folder of the synthetic ``preset``; generated on first use (a few seconds to minutes)."""
    from cacl.data.synth import generate

    root = root or synthetic_root(preset, seed)
    if not (root / "bounding_box_train").is_dir():
        log.info("generating the synthetic '%s' set (seed %d) in %s", preset, seed, root)
    # generate() returns at once when the folder already holds this exact config.
    generate(root, preset=preset, seed=seed)
    return root


def resolve_dataset(
    cfg: DataConfig, name: str | None = None, root: str | None = None
) -> ReidDataset:
    """Load ``cfg.name`` from ``cfg.root``; with ``synthetic`` and no root, use the cache.

    ``name`` / ``root`` (a command line's ``--data`` / ``--root``) override the config: a new
    name comes with its own root (None: the synthetic cache); a root alone keeps the name.
    """
    if name or root:
        cfg = dataclasses.replace(cfg, name=name or cfg.name, root=root)
    if cfg.name in ("synthetic", "synth"):
        root = Path(cfg.root) if cfg.root else None
        root = ensure_synthetic(cfg.synth_preset, cfg.synth_seed, root)
        return load_dataset("market1501", root, verify=cfg.verify)
    if not cfg.root:
        raise DatasetError(
            f"data.root is not set: give the folder of {cfg.name}, e.g. data.root=/data/{cfg.name}"
        )
    options: dict = {}
    if cfg.name == "folder":
        options["camera"] = cfg.camera
        if cfg.cam_regex:
            options["cam_regex"] = cfg.cam_regex
    return load_dataset(cfg.name, cfg.root, verify=cfg.verify, **options)
