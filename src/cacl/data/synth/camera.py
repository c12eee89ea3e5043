"""The camera model: colour cast, lighting, background, blur, noise and JPEG quality per camera.

Each camera changes colours strongly and differently (white balance, hue rotation, saturation,
gamma), so that the same garment looks different from camera to camera and colour alone matches
poorly across cameras, while shapes and patterns survive. The settings of the cameras of one
dataset are spread over their ranges (stratified, then shuffled), so no two cameras look alike.

:meth:`Camera.tone` maps scene colours to recorded ones; :func:`apply_camera` adds the lighting,
haze, blur and sensor noise to a whole image.

Two dataset knobs (:class:`~cacl.data.synth.config.SynthConfig`) weaken what identifies a camera:
``cast`` scales the colour cast (:func:`with_cast`), and ``background`` / ``sensor`` set to
``"shared"`` give each image settings drawn from all cameras' (:func:`pool_settings` with
:data:`BACKGROUND_FIELDS` / :data:`SENSOR_FIELDS`).

Example::

    >>> import numpy as np
    >>> cams = sample_cameras(np.random.default_rng(0), 3)
    >>> len(cams), cams[0].color_matrix.shape
    (3, (3, 3))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cacl.data.synth.config import IMAGE_HEIGHT, IMAGE_WIDTH

#: Number of background styles (see :func:`cacl.data.synth.render.render_background`).
NUM_BACKGROUND_STYLES = 5

#: :class:`Camera` fields of the scene behind people (pooled by ``background="shared"``).
BACKGROUND_FIELDS = ("background", "bg_colors", "bg_scale", "horizon")

#: :class:`Camera` fields of the lighting and the sensor (pooled by ``sensor="shared"``); the
#: colour matrix (the colour cast) and the occlusion rate are not among them.
SENSOR_FIELDS = (
    "gamma",
    "gain",
    "haze",
    "light_angle",
    "light_strength",
    "blur",
    "noise",
    "jpeg_quality",
)

_Y = (np.arange(IMAGE_HEIGHT, dtype=np.float32) + 0.5)[:, None]
_X = (np.arange(IMAGE_WIDTH, dtype=np.float32) + 0.5)[None, :]


@dataclass(frozen=True)
class Camera:
    """The look of one camera.

    Attributes:
        color_matrix: 3x3 matrix applied to linear RGB (white balance, hue rotation, saturation).
        gamma: exponent applied after the matrix (``out = in ** (1 / gamma)``).
        gain: global brightness.
        haze: an offset added to every channel (washed-out cameras).
        light_angle, light_strength: direction (radians) and strength of an illumination ramp.
        background: style index; ``bg_colors`` holds its three colours.
        bg_scale: spatial scale of the background texture (pixels).
        horizon: vertical position of the wall / floor line (fraction of the height).
        blur: Gaussian blur sigma in pixels.
        noise: standard deviation of the sensor noise.
        jpeg_quality: JPEG quality of this camera's files.
        occlusion: probability that an image is partly occluded.
    """

    color_matrix: np.ndarray
    gamma: float
    gain: float
    haze: float
    light_angle: float
    light_strength: float
    background: int
    bg_colors: np.ndarray
    bg_scale: float
    horizon: float
    blur: float
    noise: float
    jpeg_quality: int
    occlusion: float

    def tone(self, rgb: np.ndarray) -> np.ndarray:
        """Scene colours ``(..., 3)`` as this camera records them under unit light.

        The colour matrix then the gamma, applied to colour tables rather than to whole images:
        both commute with the per-pixel light level (``(g x) ** p == g ** p * x ** p``), which
        :func:`~cacl.data.synth.render.apply_camera` applies later.
        """
        out = np.asarray(rgb, dtype=np.float32) @ self.color_matrix.T
        np.maximum(out, 0.0, out=out)
        return out ** np.float32(1.0 / self.gamma)


def hue_rotation(theta: float) -> np.ndarray:
    """The 3x3 matrix that rotates RGB colours by ``theta`` radians about the gray axis."""
    c, s = np.cos(theta), np.sin(theta)
    k = 1.0 / 3.0
    r = np.sqrt(k)
    return np.array(
        [
            [c + (1 - c) * k, k * (1 - c) - r * s, k * (1 - c) + r * s],
            [k * (1 - c) + r * s, c + (1 - c) * k, k * (1 - c) - r * s],
            [k * (1 - c) - r * s, k * (1 - c) + r * s, c + (1 - c) * k],
        ]
    )


def saturation_matrix(factor: float) -> np.ndarray:
    """The 3x3 matrix that scales saturation (``0``: gray, ``1``: unchanged)."""
    luma = np.array([0.299, 0.587, 0.114])
    return (1.0 - factor) * np.outer(np.ones(3), luma) + factor * np.eye(3)


def _stratified(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """``n`` values spread over ``[low, high]``: one per equal slice, in a random order."""
    edges = np.linspace(low, high, n + 1)
    values = rng.uniform(edges[:-1], edges[1:])
    return values[rng.permutation(n)]


def with_cast(matrix: np.ndarray, strength: float) -> np.ndarray:
    """A colour matrix whose cast is scaled by ``strength`` (``0``: identity, ``1``: ``matrix``).

    The matrix is interpolated (``strength > 1``: extrapolated) linearly towards the identity.
    """
    if strength == 1.0:  # exactly the matrix, not a rounded copy of it
        return matrix
    return np.eye(3) + strength * (matrix - np.eye(3))


def sample_cameras(
    rng: np.random.Generator, num_cams: int, jpeg_quality: int = 90, cast: float = 1.0
) -> list[Camera]:
    """Draw ``num_cams`` cameras whose looks are spread apart.

    ``cast`` scales every camera's colour cast (see :func:`with_cast`); it draws no random
    numbers, so the other settings do not depend on it.
    """
    hues = _stratified(rng, num_cams, -np.pi * 0.45, np.pi * 0.45)
    sats = _stratified(rng, num_cams, 0.35, 1.45)
    gammas = _stratified(rng, num_cams, 0.7, 1.45)
    gains = _stratified(rng, num_cams, 0.7, 1.2)
    styles = rng.permutation(
        np.arange(max(num_cams, NUM_BACKGROUND_STYLES)) % NUM_BACKGROUND_STYLES
    )
    cams = []
    for c in range(num_cams):
        warm = rng.uniform(-0.35, 0.35)  # warm (red) to cold (blue) white balance
        tint = rng.uniform(-0.2, 0.2)  # green / magenta
        wb = np.diag([1.0 + warm, 1.0 + tint, 1.0 - warm])
        matrix = with_cast(saturation_matrix(sats[c]) @ hue_rotation(hues[c]) @ wb, cast)
        bg_base = rng.uniform(0.15, 0.8, size=3)
        bg_colors = np.clip(
            np.stack([bg_base, bg_base * rng.uniform(0.5, 1.3, 3), rng.uniform(0.1, 0.8, 3)]),
            0.0,
            1.0,
        )
        cams.append(
            Camera(
                color_matrix=matrix.astype(np.float32),
                gamma=float(gammas[c]),
                gain=float(gains[c]),
                haze=float(rng.uniform(0.0, 0.12)),
                light_angle=float(rng.uniform(0, 2 * np.pi)),
                light_strength=float(rng.uniform(0.05, 0.35)),
                background=int(styles[c]),
                bg_colors=bg_colors.astype(np.float32),
                bg_scale=float(rng.uniform(6.0, 16.0)),
                horizon=float(rng.uniform(0.45, 0.75)),
                blur=float(rng.uniform(0.35, 1.1)),
                noise=float(rng.uniform(0.008, 0.04)),
                jpeg_quality=int(np.clip(jpeg_quality + rng.integers(-12, 6), 30, 100)),
                occlusion=float(rng.uniform(0.08, 0.25)),
            )
        )
    return cams


def pool_settings(
    rng: np.random.Generator, cam: Camera, cams: Sequence[Camera], fields: Sequence[str]
) -> Camera:
    """``cam`` with each of ``fields`` taken from a camera of ``cams`` drawn uniformly.

    Every field draws its own camera (one integer from ``rng`` per field, in the order of
    ``fields``), so an image's settings mix the cameras' and do not tell which camera took it.

    Example::

        >>> cams = sample_cameras(np.random.default_rng(0), 3)
        >>> look = pool_settings(np.random.default_rng(1), cams[0], cams, SENSOR_FIELDS)
        >>> look.blur in {c.blur for c in cams}, look.color_matrix is cams[0].color_matrix
        (True, True)
    """
    donors = rng.integers(len(cams), size=len(fields))
    changes = {f: getattr(cams[int(d)], f) for f, d in zip(fields, donors, strict=True)}
    return dataclasses.replace(cam, **changes)


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of standard-normal samples; images read it at random offsets (cheap noise)."""
    return np.random.default_rng(20240607).standard_normal(1 << 20, dtype=np.float32)


@lru_cache(maxsize=64)
def _blur_weights(sigma: float) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """Taps ``w0, w1, w2`` of a 5-tap Gaussian and the row / column renormalisation at edges."""
    taps = np.exp(-0.5 * (np.arange(3) / sigma) ** 2)
    w0, w1, w2 = taps / (taps[0] + 2 * taps[1:].sum())
    norms = []
    for n in (IMAGE_HEIGHT, IMAGE_WIDTH):
        norm = np.ones(n)
        norm[[0, -1]] -= w1 + w2
        norm[[1, -2]] -= w2
        norms.append((1.0 / norm).astype(np.float32))
    return float(w0), float(w1), float(w2), norms[0][:, None, None], norms[1][None, :, None]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the two image axes (5 taps, edges renormalised)."""
    w0, w1, w2, row_norm, col_norm = _blur_weights(round(sigma, 3))
    out = img * w0
    out[1:] += w1 * img[:-1]
    out[:-1] += w1 * img[1:]
    out[2:] += w2 * img[:-2]
    out[:-2] += w2 * img[2:]
    out *= row_norm
    img = out
    out = img * w0
    out[:, 1:] += w1 * img[:, :-1]
    out[:, :-1] += w1 * img[:, 1:]
    out[:, 2:] += w2 * img[:, :-2]
    out[:, :-2] += w2 * img[:, 2:]
    out *= col_norm
    return out


def apply_camera(
    rng: np.random.Generator, img: np.ndarray, cam: Camera, light: float
) -> np.ndarray:
    """Finish a scene drawn in ``cam.tone`` colours: lighting, haze, blur and noise; ``uint8``.

    ``light`` is the brightness factor of the image (see :class:`~cacl.data.synth.pose.Pose`).
    """
    cos, sin = math.cos(cam.light_angle), math.sin(cam.light_angle)
    ramp = (_X / IMAGE_WIDTH - 0.5) * cos + (_Y / IMAGE_HEIGHT - 0.5) * sin
    gain = ((cam.gain * light) * (1.0 + cam.light_strength * 2.0 * ramp)) ** (1.0 / cam.gamma)
    img = img * ((1.0 - cam.haze) * gain)[..., None]
    img = _blur(img, cam.blur)
    bank = _noise_bank()
    start = int(rng.integers(bank.size - img.size))
    img += cam.noise * bank[start : start + img.size].reshape(img.shape) + cam.haze
    img *= 255.0
    img += 0.5
    np.minimum(img, 255.0, out=img)
    np.maximum(img, 0.0, out=img)
    return img.astype(np.uint8)
