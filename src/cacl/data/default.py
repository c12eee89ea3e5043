"""Resolve the dataset a config names; generate the embedded synthetic default when needed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cacl.data.readers import load_dataset
from cacl.data.types import ReidDataset
from cacl.errors import DatasetError

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
    name: str,
    root: str | os.PathLike | None = None,
    *,
    synth_preset: str = "small",
    synth_seed: int = 0,
    verify: str = "header",
    camera: str = "auto",
    cam_regex: str | None = None,
    tracklets: str = "auto",
    eval_root: str | os.PathLike | None = None,
) -> ReidDataset:
    """Load dataset ``name`` from ``root``; ``synthetic`` with no root uses the cache.

    ``camera``, ``cam_regex`` and ``tracklets`` are the ``folder`` reader's options.
    ``eval_root``: a test split in the Market-1501 layout (``query/``, ``bounding_box_test/``)
    that replaces the dataset's own (a folder of crops has none), e.g. the ``eval/`` split of a
    synthetic site or one exported from labels. ``Config.data.dataset_options()`` gives all of
    these from a config.
    """
    if name in ("synthetic", "synth"):
        folder = ensure_synthetic(synth_preset, synth_seed, Path(root) if root else None)
        dataset = load_dataset("market1501", folder, verify=verify)
    else:
        if not root:
            raise DatasetError(
                f"data.root is not set: give the folder of {name}, e.g. data.root=/data/{name}"
            )
        options: dict = {}
        if name == "folder":
            options = {"camera": camera, "tracklets": tracklets}
            if cam_regex:
                options["cam_regex"] = cam_regex
        dataset = load_dataset(name, root, verify=verify, **options)
    if eval_root:
        split = load_dataset("market-test", eval_root, verify=verify)
        log.info(
            "evaluating on %s: %d queries, %d gallery images",
            split.root,
            len(split.query),
            len(split.gallery),
        )
        dataset.query, dataset.gallery = split.query, split.gallery
    return dataset
