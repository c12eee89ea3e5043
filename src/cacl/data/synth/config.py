"""Sizes and settings of the synthetic dataset: :class:`SynthConfig` and the named presets.

The presets are:

- ``tiny``: a few hundred images in a few seconds, for tests;
- ``small``: the default run, sized so that a CPU can train a CNN on it in about a quarter of an
  hour (180 training identities, 4 cameras, about 2,900 training images);
- ``market``: Market-1501 scale (751 training identities, 6 cameras, 12,936 training images,
  about 3,400 queries and 15,900 gallery images including distractors).

Example::

    >>> cfg = SynthConfig.from_preset("tiny", num_cams=2)
    >>> cfg.num_cams, cfg.num_train_ids
    (2, 12)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from cacl.errors import CaclError

#: Bumped whenever a change of the generator changes the images a given config produces.
GENERATOR_VERSION = 2

#: Image size (height, width), as Market-1501's bounding boxes.
IMAGE_HEIGHT = 128
IMAGE_WIDTH = 64

#: Values of :attr:`SynthConfig.background` and :attr:`SynthConfig.sensor`: settings of each
#: camera's own, or drawn per image from all the cameras'.
PER_CAMERA, SHARED = "camera", "shared"
SOURCES = (PER_CAMERA, SHARED)


class SynthConfigError(CaclError, ValueError):
    """The generator settings are invalid (unknown preset, impossible counts, ...)."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the generated files (together with the seed).

    Attributes:
        num_train_ids: identities of ``bounding_box_train``.
        num_test_ids: identities of ``query`` / ``bounding_box_test`` (disjoint from training).
        num_cams: cameras; every identity is seen by a random subset of at least 2 of them.
        images_per_id: mean training images per identity (the total is exact:
            ``round(num_train_ids * images_per_id)``).
        test_images_per_id: mean test images (query + gallery) per test identity.
        camera_coverage: probability that an identity is seen by each camera beyond the first two.
        num_distractors: gallery images with id ``0000`` (people who are not test identities,
            badly framed crops and background).
        num_junk: gallery images with id ``-1`` (fragments; readers drop them).
        jpeg_quality: base JPEG quality; each camera varies it a little.
        background: ``"camera"``: every camera sees its own scene (background style, colours,
            texture scale, horizon); ``"shared"``: each image takes each of these from a camera
            drawn at random, so the background does not tell the camera.
        sensor: ``"camera"``: lighting, haze, gamma, blur, noise and JPEG quality are each
            camera's own; ``"shared"``: each image takes each of them from a camera drawn at
            random (the colour cast and the occlusion rate stay the camera's).
        cast: strength of the cameras' colour casts: ``1`` as drawn, ``0`` none (every colour
            matrix is the identity), in between interpolated towards the identity, above 1
            exaggerated.
    """

    num_train_ids: int
    num_test_ids: int
    num_cams: int
    images_per_id: float
    test_images_per_id: float
    camera_coverage: float = 0.62
    num_distractors: int = 0
    num_junk: int = 0
    jpeg_quality: int = 90
    background: str = PER_CAMERA
    sensor: str = PER_CAMERA
    cast: float = 1.0

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> SynthConfig:
        """The preset named ``preset`` with some fields replaced (``None`` values are ignored).

        Fields can also be named by their short :data:`ALIASES` (``ids``, ``cams``, ...).
        """
        if preset not in PRESETS:
            raise SynthConfigError(
                f"unknown synth preset {preset!r}; choose one of {', '.join(PRESETS)}"
            )
        overrides = {ALIASES.get(k, k): v for k, v in overrides.items()}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - fields
        if unknown:
            raise SynthConfigError(f"unknown synth setting(s): {', '.join(sorted(unknown))}")
        changes = {k: v for k, v in overrides.items() if v is not None}
        cfg = dataclasses.replace(PRESETS[preset], **changes)
        cfg.validate()
        return cfg

    @property
    def num_train_images(self) -> int:
        return round(self.num_train_ids * self.images_per_id)

    @property
    def num_test_images(self) -> int:
        """Query plus gallery images of test identities (distractors and junk not included)."""
        return round(self.num_test_ids * self.test_images_per_id)

    def validate(self) -> None:
        """Raise :class:`SynthConfigError` when the settings cannot give a valid dataset."""
        if self.num_cams < 2:
            raise SynthConfigError("at least 2 cameras are needed (every identity is in >= 2)")
        if self.num_cams > 9:
            raise SynthConfigError("at most 9 cameras (Market-style names have one camera digit)")
        if self.num_train_ids < 1 or self.num_test_ids < 1:
            raise SynthConfigError("at least one training and one test identity are needed")
        if self.num_train_ids + self.num_test_ids > 9998:
            raise SynthConfigError("at most 9998 identities in all (ids have 4 digits)")
        if self.num_train_images < 2 * self.num_train_ids:
            raise SynthConfigError(
                "images_per_id must be at least 2 (each identity is seen by 2 cameras or more)"
            )
        if self.num_test_images < 4 * self.num_test_ids:
            raise SynthConfigError(
                "test_images_per_id must be at least 4 (a query and a gallery image in each "
                "of 2 cameras)"
            )
        if not 0.0 <= self.camera_coverage <= 1.0:
            raise SynthConfigError("camera_coverage must lie in [0, 1]")
        if self.num_distractors < 0 or self.num_junk < 0:
            raise SynthConfigError("num_distractors and num_junk cannot be negative")
        if not 30 <= self.jpeg_quality <= 100:
            raise SynthConfigError("jpeg_quality must lie in [30, 100]")
        for name in ("background", "sensor"):
            value = getattr(self, name)
            if value not in SOURCES:
                raise SynthConfigError(
                    f"{name} must be {PER_CAMERA!r} (each camera its own) or {SHARED!r} "
                    f"(drawn per image from all cameras), not {value!r}"
                )
        cast = self.cast
        if isinstance(cast, bool) or not isinstance(cast, (int, float)) or not math.isfinite(cast):
            raise SynthConfigError(f"cast must be a finite number, not {cast!r}")
        if cast < 0:
            raise SynthConfigError(
                f"cast must be >= 0 (0: no colour cast, 1: the default strength), not {cast}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Short names accepted for the fields (as the command line spells them).
ALIASES: dict[str, str] = {
    "ids": "num_train_ids",
    "train_ids": "num_train_ids",
    "test_ids": "num_test_ids",
    "cams": "num_cams",
    "distractors": "num_distractors",
    "junk": "num_junk",
}

PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(
        num_train_ids=12,
        num_test_ids=10,
        num_cams=3,
        images_per_id=6.0,
        test_images_per_id=8.0,
        num_distractors=8,
        num_junk=4,
    ),
    "small": SynthConfig(
        num_train_ids=180,
        num_test_ids=100,
        num_cams=4,
        images_per_id=16.0,
        test_images_per_id=16.0,
        num_distractors=200,
        num_junk=40,
    ),
    # Market-1501: 12,936 train / 3,368 query / 15,913 gallery (2,798 of them distractors).
    "market": SynthConfig(
        num_train_ids=751,
        num_test_ids=750,
        num_cams=6,
        images_per_id=12936 / 751,
        test_images_per_id=21.98,
        num_distractors=2798,
        num_junk=400,
    ),
}
