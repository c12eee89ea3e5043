"""What a synthetic person looks like: body proportions, garments, patterns and accessories.

Identity lives in shape and texture. Garment colours come from a small palette shared by all
identities (:data:`PALETTE`), so many people wear the same colours and colour is a poor cue on its
own; the two colours of a patterned garment always differ in brightness, so the pattern survives
conversion to gray.

Example::

    >>> import numpy as np
    >>> person = sample_identity(np.random.default_rng(0))
    >>> person.upper.pattern in PATTERNS
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Garment colours (RGB in [0, 1]), shared by every identity.
PALETTE: np.ndarray = np.array(
    [
        [0.08, 0.08, 0.09],  # black
        [0.88, 0.88, 0.85],  # white
        [0.48, 0.48, 0.48],  # gray
        [0.12, 0.16, 0.40],  # navy
        [0.72, 0.13, 0.12],  # red
        [0.76, 0.67, 0.47],  # beige
        [0.20, 0.42, 0.22],  # green
        [0.45, 0.62, 0.84],  # light blue
    ],
    dtype=np.float32,
)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
PALETTE_LUMA: np.ndarray = PALETTE @ LUMA

SKIN: np.ndarray = np.array(
    [[0.93, 0.76, 0.64], [0.80, 0.60, 0.45], [0.60, 0.42, 0.30], [0.38, 0.26, 0.19]],
    dtype=np.float32,
)
HAIR: np.ndarray = np.array(
    [[0.06, 0.05, 0.05], [0.30, 0.19, 0.10], [0.78, 0.66, 0.40], [0.60, 0.60, 0.60]],
    dtype=np.float32,
)

#: Garment patterns. Stripes come in four orientations (``angle``) and many frequencies.
PATTERNS: tuple[str, ...] = ("plain", "stripes", "checks", "dots", "split", "band", "yoke")
_UPPER_WEIGHTS = np.array([0.08, 0.36, 0.16, 0.14, 0.08, 0.09, 0.09])
_LOWER_WEIGHTS = np.array([0.3, 0.32, 0.16, 0.08, 0.14, 0.0, 0.0])
_STRIPE_ANGLES = np.array([0.0, 90.0, 45.0, -45.0])


@dataclass(frozen=True)
class Garment:
    """A garment: two palette colours and a pattern that mixes them.

    ``freq`` is in cycles per person height, ``angle`` in degrees (0: horizontal stripes),
    ``duty`` the fraction of a period in colour ``b``; ``extent`` depends on the garment
    (upper: sleeve length 0..1; lower: 0 shorts, 1 trousers, 2 skirt).
    """

    pattern: str
    color_a: int
    color_b: int
    freq: float
    angle: float
    duty: float
    extent: float


@dataclass(frozen=True)
class Identity:
    """The appearance of one person; lengths are fractions of the person's height."""

    height: float
    width: float
    head: float
    torso: float
    shoulder: float
    hip: float
    leg: float
    arm: float
    coat: float
    skin: int
    hair: int
    long_hair: bool
    upper: Garment
    lower: Garment
    shoes: int
    backpack: int
    bag: int
    bag_side: int
    hat: int
    hat_kind: int
    belt: bool


def _pick_contrasting(rng: np.random.Generator, a: int, min_diff: float = 0.3) -> int:
    """A palette colour whose brightness differs from colour ``a`` by at least ``min_diff``."""
    choices = np.flatnonzero(np.abs(PALETTE_LUMA - PALETTE_LUMA[a]) >= min_diff)
    return int(rng.choice(choices))


def sample_garment(rng: np.random.Generator, upper: bool) -> Garment:
    """Draw a garment; ``upper`` selects the pattern frequencies of tops or of trousers."""
    weights = _UPPER_WEIGHTS if upper else _LOWER_WEIGHTS
    pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=weights / weights.sum()))]
    color_a = int(rng.integers(len(PALETTE)))
    color_b = _pick_contrasting(rng, color_a)
    angle = 0.0
    freq = 0.0
    duty = 0.5
    if pattern == "stripes":
        angle = float(rng.choice(_STRIPE_ANGLES))
        freq = float(rng.uniform(7.0, 20.0))
        duty = float(rng.uniform(0.3, 0.6))
    elif pattern == "checks":
        freq = float(rng.uniform(6.0, 13.0))
        angle = float(rng.choice([0.0, 45.0]))
    elif pattern == "dots":
        freq = float(rng.uniform(9.0, 15.0))
        duty = float(rng.uniform(0.25, 0.38))  # dot radius as a fraction of the period
    elif pattern == "split":
        angle = float(rng.choice([0.0, 90.0]))  # left/right or top/bottom halves
        duty = float(rng.uniform(0.35, 0.65))
    elif pattern == "band":
        duty = float(rng.uniform(0.12, 0.25))  # band height (fraction of torso)
        freq = float(rng.uniform(0.25, 0.6))  # band position
    elif pattern == "yoke":
        duty = float(rng.uniform(0.25, 0.45))
    if upper:
        extent = float(rng.choice([0.3, 1.0, 1.0]))  # short or long sleeves
    else:
        extent = float(rng.choice([0.0, 1.0, 1.0, 1.0, 2.0]))  # shorts, trousers, skirt
    return Garment(pattern, color_a, color_b, freq, angle, duty, extent)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw the appearance of a new person."""
    width = float(rng.uniform(0.8, 1.25))
    backpack = int(rng.integers(len(PALETTE))) if rng.random() < 0.3 else -1
    bag = int(rng.integers(len(PALETTE))) if rng.random() < 0.25 else -1
    hat = int(rng.integers(len(PALETTE))) if rng.random() < 0.2 else -1
    return Identity(
        height=float(rng.uniform(0.86, 0.97)),
        width=width,
        head=float(rng.uniform(0.055, 0.075)),
        torso=float(rng.uniform(0.25, 0.33)),
        shoulder=float(rng.uniform(0.10, 0.135)) * width,
        hip=float(rng.uniform(0.075, 0.11)) * width,
        leg=float(rng.uniform(0.032, 0.048)) * width,
        arm=float(rng.uniform(0.028, 0.040)) * width,
        coat=float(rng.choice([0.0, 0.0, 0.0, 0.07, 0.16])),
        skin=int(rng.integers(len(SKIN))),
        hair=int(rng.integers(len(HAIR))),
        long_hair=bool(rng.random() < 0.3),
        upper=sample_garment(rng, upper=True),
        lower=sample_garment(rng, upper=False),
        shoes=int(rng.choice([0, 0, 1, 2, 5])),
        backpack=backpack,
        bag=bag,
        bag_side=int(rng.choice([-1, 1])),
        hat=hat,
        hat_kind=int(rng.integers(2)),
        belt=bool(rng.random() < 0.3),
    )
