"""Checks made before a run writes anything: resume overrides, enough data. Pure functions."""

from __future__ import annotations

import logging
from typing import Any

from cacl.config import Config
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
