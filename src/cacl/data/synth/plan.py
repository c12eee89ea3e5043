"""Planning: which image of whom, in which camera, under which file name, in which split.

The whole dataset is planned first, from the seed alone, as a list of :class:`ImageSpec`; each image
is then rendered from its spec and its own random stream, so the files do not depend on how the
work is divided between processes.

Seeds: every random stream is a :class:`numpy.random.SeedSequence` of the user's seed with a
``spawn_key`` naming what it is for (:data:`PLAN`, :data:`CAMERAS`, ...), see :func:`stream`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

import numpy as np

from cacl.data.synth.config import SynthConfig

# Stream names (first element of the spawn key). LOOK streams draw the settings an image takes
# from other cameras (``background`` / ``sensor`` = "shared"); they are separate from the IMAGE
# stream so that the default settings draw exactly the numbers they always drew.
PLAN, CAMERAS, IDENTITY, TRACK, IMAGE, LOOK = range(6)

# Kinds of image.
PERSON, DISTRACTOR, JUNK = range(3)

TRAIN_DIR, QUERY_DIR, GALLERY_DIR = "bounding_box_train", "query", "bounding_box_test"
NUM_SEQUENCES = 6  # Market-1501 names use sequences s1..s6
DISTRACTOR_KEY = 100_000  # appearance keys of distractors and junk start here (above any pid)
JUNK_KEY = 200_000


class ImageSpec(NamedTuple):
    """One image to render: its path (relative to the dataset folder) and what it shows.

    ``key`` names the appearance (the person id for identities; unique keys for distractors and
    junk), ``cam`` is 0-based and ``index`` (the position in the plan) seeds the image's stream.
    """

    path: str
    kind: int
    key: int
    cam: int
    index: int


def stream(seed: int, *key: int) -> np.random.Generator:
    """The random generator of ``seed`` for the purpose named by ``key``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def market_name(pid: int, cam: int, seq: int, frame: int, det: int) -> str:
    """A Market-1501 file name, e.g. ``0007_c3s1_000123_01.jpg`` (``cam`` 0-based here)."""
    prefix = "-1" if pid < 0 else f"{pid:04d}"
    return f"{prefix}_c{cam + 1}s{seq}_{frame:06d}_{det:02d}.jpg"


def _cameras_per_id(rng: np.random.Generator, cfg: SynthConfig, n_ids: int) -> np.ndarray:
    """How many cameras see each identity: 2 plus a binomial share of the others."""
    return 2 + rng.binomial(cfg.num_cams - 2, cfg.camera_coverage, size=n_ids)


def _allocate(
    rng: np.random.Generator, n_cams: np.ndarray, total: int, min_per_cam: int
) -> list[np.ndarray]:
    """Split ``total`` images over identities and their cameras (at least ``min_per_cam`` each).

    Cameras are dropped from the identities seen by most cameras (never below 2) when ``total``
    cannot give every camera its minimum.
    """
    n_cams = n_cams.copy()
    while (n_cams * min_per_cam).sum() > total:
        n_cams[int(np.argmax(n_cams))] -= 1
    spare = total - int((n_cams * min_per_cam).sum())
    weights = rng.gamma(4.0, size=len(n_cams))
    extra = rng.multinomial(spare, weights / weights.sum())
    counts = []
    for k, e in zip(n_cams, extra, strict=True):
        counts.append(min_per_cam + rng.multinomial(e, np.full(k, 1.0 / k)))
    return counts


def _tracks(
    rng: np.random.Generator, cfg: SynthConfig, pids: np.ndarray, total: int, min_per_cam: int
) -> list[tuple[int, int, list[str]]]:
    """``(pid, cam, file names)`` of every track (one identity in one camera) of a split."""
    n_cams = _cameras_per_id(rng, cfg, len(pids))
    counts = _allocate(rng, n_cams, total, min_per_cam)
    tracks = []
    for pid, cam_counts in zip(pids, counts, strict=True):
        cams = np.sort(rng.choice(cfg.num_cams, size=len(cam_counts), replace=False))
        for cam, n in zip(cams, cam_counts, strict=True):
            seq = int(rng.integers(1, NUM_SEQUENCES + 1))
            frames = int(rng.integers(0, 200_000)) + np.cumsum(rng.integers(3, 40, size=n))
            dets = rng.integers(0, 4, size=n)
            names = [
                market_name(int(pid), int(cam), seq, int(f), int(d))
                for f, d in zip(frames, dets, strict=True)
            ]
            tracks.append((int(pid), int(cam), names))
    return tracks


def plan_dataset(cfg: SynthConfig, seed: int) -> list[ImageSpec]:
    """Every image of the dataset, in a fixed order: train, query, gallery, distractors, junk."""
    rng = stream(seed, PLAN)
    n_ids = cfg.num_train_ids + cfg.num_test_ids
    pids = rng.permutation(np.arange(1, n_ids + 1))
    train_pids = np.sort(pids[: cfg.num_train_ids])
    test_pids = np.sort(pids[cfg.num_train_ids :])

    specs: list[ImageSpec] = []

    def add(path: str, kind: int, key: int, cam: int) -> None:
        specs.append(ImageSpec(path, kind, key, cam, len(specs)))

    for pid, cam, names in _tracks(rng, cfg, train_pids, cfg.num_train_images, 1):
        for name in names:
            add(f"{TRAIN_DIR}/{name}", PERSON, pid, cam)

    gallery: list[tuple[str, int, int]] = []
    for pid, cam, names in _tracks(rng, cfg, test_pids, cfg.num_test_images, 2):
        q = int(rng.integers(len(names)))
        add(f"{QUERY_DIR}/{names[q]}", PERSON, pid, cam)
        gallery.extend((name, pid, cam) for i, name in enumerate(names) if i != q)
    for name, pid, cam in gallery:
        add(f"{GALLERY_DIR}/{name}", PERSON, pid, cam)

    # Distractors (id 0000) and junk (id -1): unique names from a frame counter per camera/seq.
    frame: dict[tuple[int, int, int], int] = defaultdict(int)
    for kind, count, pid, key0 in (
        (DISTRACTOR, cfg.num_distractors, 0, DISTRACTOR_KEY),
        (JUNK, cfg.num_junk, -1, JUNK_KEY),
    ):
        for k in range(count):
            cam = int(rng.integers(cfg.num_cams))
            seq = int(rng.integers(1, NUM_SEQUENCES + 1))
            frame[pid, cam, seq] += int(rng.integers(1, 100))
            name = market_name(pid, cam, seq, frame[pid, cam, seq], int(rng.integers(0, 8)))
            add(f"{GALLERY_DIR}/{name}", kind, key0 + k, cam)
    return specs
