"""Where and how a person appears in one image: position, size, view, walking phase, lighting.

A *track* is what one camera sees of one person (Market-1501 images of an identity in a camera come
from one tracklet): the walking direction, the view and the framing are shared, with small changes
from image to image. :func:`sample_pose` draws an image's pose around its track.

Example::

    >>> import numpy as np
    >>> track = sample_track(np.random.default_rng(0))
    >>> pose = sample_pose(np.random.default_rng(1), track, height=0.9)
    >>> 0 < pose.size <= 128
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cacl.data.synth.config import IMAGE_HEIGHT, IMAGE_WIDTH

FRONT, BACK, SIDE = 0, 1, 2


@dataclass(frozen=True)
class Track:
    """What one camera sees of one person, shared by the images of that person in that camera."""

    view: int
    flip: bool
    x_offset: float
    scale: float
    light: float


@dataclass(frozen=True)
class Pose:
    """The framing and posture of the person in one image (pixels unless said otherwise).

    ``xc`` is the horizontal centre, ``top`` the top of the head and ``size`` the person height;
    ``stride`` and ``swing`` are the leg and arm spread (fractions of the height); ``light`` a
    brightness factor; ``occlude`` whether an occluder is drawn.
    """

    xc: float
    top: float
    size: float
    flip: bool
    view: int
    stride: float
    swing: float
    light: float
    occlude: bool


def sample_track(rng: np.random.Generator) -> Track:
    """Draw the shared look of a person's images in one camera."""
    return Track(
        view=int(rng.choice([FRONT, BACK, SIDE], p=[0.4, 0.4, 0.2])),
        flip=bool(rng.random() < 0.5),
        x_offset=float(rng.normal(0.0, 2.5)),
        scale=float(rng.uniform(0.88, 1.02)),
        light=float(rng.uniform(0.85, 1.15)),
    )


def sample_pose(
    rng: np.random.Generator,
    track: Track,
    height: float,
    occlusion: float = 0.0,
    scale_range: tuple[float, float] = (0.94, 1.06),
    shift: float = 3.0,
) -> Pose:
    """Draw one image's pose around ``track``.

    ``height`` is the person's relative height (from the identity), ``occlusion`` the probability
    of an occluder, ``scale_range`` and ``shift`` the per-image zoom and shift (pixels); distractors
    and junk use wide ranges to give badly framed crops.
    """
    view = track.view
    if rng.random() < 0.15:  # the person turns
        view = int(rng.integers(3))
    flip = track.flip if rng.random() < 0.85 else not track.flip
    size = IMAGE_HEIGHT * height * track.scale * float(rng.uniform(*scale_range))
    size = min(size, IMAGE_HEIGHT * 2.5)
    free = IMAGE_HEIGHT - size  # vertical slack (negative when the person is larger than the box)
    top = free * float(rng.uniform(0.25, 0.75)) + float(rng.normal(0.0, shift * 0.5))
    xc = IMAGE_WIDTH / 2 + track.x_offset + float(rng.normal(0.0, shift))
    return Pose(
        xc=xc,
        top=top,
        size=size,
        flip=flip,
        view=view,
        stride=float(rng.uniform(0.0, 0.11)),
        swing=float(rng.uniform(-0.25, 0.25)),
        light=track.light * float(rng.uniform(0.92, 1.08)),
        occlude=bool(rng.random() < occlusion),
    )
