"""Checks made before a run writes anything: the checkpoint and overrides of a resumed run,
enough data. Functions of their arguments (and the checkpoint file they read)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cacl.checkpoints.io import LAST, load_checkpoint
from cacl.config import Config, apply_overrides, config_from_dict
from cacl.errors import CaclError

log = logging.getLogger(__name__)

#: Settings a resumed run may not change: they define the network or the data it learnt from.
FIXED_ON_RESUME = (
    "model.",
    "data.name",
    "data.root",
    "data.height",
    "data.width",
    "data.synth_preset",
    "data.synth_seed",
    "data.camera",
    "data.cam_regex",
)


def check_resume_overrides(saved: Config, new: Config) -> None:
    """Refuse overrides that change the architecture or the data; log the allowed ones."""
    old_flat, new_flat = _flatten(saved.to_dict()), _flatten(new.to_dict())
    changed = [k for k in new_flat if new_flat[k] != old_flat.get(k)]
    fixed = [k for k in changed if k.startswith(FIXED_ON_RESUME)]
    if fixed:
        detail = ", ".join(f"{k} ({old_flat.get(k)!r} -> {new_flat[k]!r})" for k in fixed)
        raise CaclError(
            f"a resumed run keeps its network and data; cannot change {detail}. "
            "Start a new run for that (cacl train --output NEW_FOLDER ...)"
        )
    for key in changed:
        log.info("resume override: %s %r -> %r", key, old_flat.get(key), new_flat[key])


def _flatten(tree: dict[str, Any]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, values in tree.items() for k, v in values.items()}


def check_enough_data(n_train: int, batch_size: int, min_samples: int) -> None:
    """A clear error before training when the training split cannot give a batch or a cluster."""
    need = max(batch_size, min_samples)
    if n_train < need:
        raise CaclError(
            f"the training split holds {n_train} images: too few to train (at least {need}: one "
            f"batch of train.batch_size={batch_size}, and one cluster of "
            f"cluster.min_samples={min_samples})"
        )


def resume_state(
    run_dir: str | os.PathLike, overrides: list[str]
) -> tuple[dict[str, Any], Config, Path]:
    """The training state of ``run_dir``'s ``last.pt``, its config with ``overrides`` applied
    (checked by :func:`check_resume_overrides`) and the run folder; a clear error when the file
    is no training checkpoint or the run has already done its epochs."""
    state = load_checkpoint(run_dir, prefer=LAST)
    if state.get("format") != "cacl-train-v1" or "optimizer" not in state:
        raise CaclError(f"{state['_path']} is not a resumable training checkpoint")
    saved = config_from_dict(state["config"])
    cfg = config_from_dict(state["config"])
    apply_overrides(cfg, list(overrides))
    check_resume_overrides(saved, cfg)
    folder = Path(state["_path"]).parent
    if int(state["epoch"]) >= cfg.train.epochs:
        raise CaclError(
            f"{folder} has finished its {cfg.train.epochs} epochs; to train on, give more: "
            f"--resume {folder} train.epochs={cfg.train.epochs + 10}"
        )
    return state, cfg, folder


def rank_rng_state(state: dict[str, Any], rank: int, world_size: int) -> Any:
    """This rank's RNG state from a checkpoint (with a warning when the number of processes
    changed: the random streams then differ from an uninterrupted run)."""
    ranks = state.get("rng_ranks") or [state["rng"]]
    if world_size != len(ranks):
        log.warning(
            "the checkpoint was written by %d process(es), this run has %d: random streams "
            "differ from an uninterrupted run",
            len(ranks),
            world_size,
        )
    return ranks[rank] if rank < len(ranks) else ranks[0]
