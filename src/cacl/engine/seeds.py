"""Every random seed of a training run, derived from ``train.seed`` in one place.

The streams are separated by large prime multipliers so that two (seed, epoch) pairs never give
the same seed within any realistic run; rank 0 gets exactly the single-process seed, every other
rank an offset one (other augmentations, the same model).
"""

from __future__ import annotations

import random

import numpy as np
import torch

#: Multiplier of ``train.seed`` for the per-epoch global RNG reset (``train.deterministic``).
EPOCH_STREAM = 1_000_003
#: Multiplier of ``train.seed`` for the data loader's workers of an epoch.
LOADER_STREAM = 100_003
#: Offset per distributed rank.
RANK_OFFSET = 7919


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """``seed`` on rank 0 (as in one process), a different seed on every other rank."""
    return seed + RANK_OFFSET * rank


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The global RNG seed at the start of ``epoch`` (0-based) under ``train.deterministic``."""
    return rank_seed(seed * EPOCH_STREAM + epoch, rank)


def loader_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of the data loader's random streams for ``epoch``."""
    return rank_seed(seed * LOADER_STREAM + epoch, rank)
