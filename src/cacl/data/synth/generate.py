"""Writing a synthetic dataset: plan every image, render them in parallel, record the config.

``generate(out_dir, preset, seed, workers, **overrides)`` writes the Market-1501 layout::

    out_dir/
      bounding_box_train/0007_c3s1_000123_01.jpg ...
      query/...
      bounding_box_test/...          (including 0000_* distractors and -1_* junk)
      synth.json                     (generator version, preset, seed, config, counts)

``synth.json`` holds only what the arguments determine (no timing), so two runs with the same
arguments write the same file.

Output folder rules:

- a new or empty folder is filled;
- a folder whose ``synth.json`` records the same seed and config, made by this generator version,
  and says the generation completed is left as it is (``generate`` returns the recorded summary
  with ``skipped=True``); a setting that an older ``synth.json`` does not record counts as its
  default (settings added later leave the default images unchanged);
- a folder with the same seed and config that is incomplete (interrupted) or was made by another
  generator version is generated again (with a warning in the second case);
- a synthetic dataset of other settings is refused with :class:`SynthOutputError`, unless
  ``overwrite=True``: then its split folders and ``synth.json`` are replaced (nothing else in the
  folder is touched);
- any other non-empty folder is always refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import time
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from cacl.data.synth.camera import (
    BACKGROUND_FIELDS,
    SENSOR_FIELDS,
    Camera,
    pool_settings,
    sample_cameras,
)
from cacl.data.synth.config import GENERATOR_VERSION, SHARED, SynthConfig
from cacl.data.synth.identity import Identity, sample_identity
from cacl.data.synth.plan import (
    CAMERAS,
    DISTRACTOR,
    GALLERY_DIR,
    IDENTITY,
    IMAGE,
    JUNK,
    LOOK,
    PERSON,
    QUERY_DIR,
    TRACK,
    TRAIN_DIR,
    ImageSpec,
    plan_dataset,
    stream,
)
from cacl.data.synth.pose import Track, sample_pose, sample_track
from cacl.data.synth.render import render_image
from cacl.errors import CaclError

logger = logging.getLogger(__name__)

META_FILE = "synth.json"
SPLIT_DIRS = (TRAIN_DIR, QUERY_DIR, GALLERY_DIR)
_CHUNK = 128  # images per task sent to a worker process


class SynthOutputError(CaclError):
    """The output folder cannot receive the synthetic dataset."""


@lru_cache(maxsize=8)
def _cameras(seed: int, num_cams: int, jpeg_quality: int, cast: float) -> tuple[Camera, ...]:
    return tuple(sample_cameras(stream(seed, CAMERAS), num_cams, jpeg_quality, cast))


@lru_cache(maxsize=4096)
def _identity(seed: int, key: int) -> Identity:
    return sample_identity(stream(seed, IDENTITY, key))


@lru_cache(maxsize=4096)
def _track(seed: int, key: int, cam: int) -> Track:
    return sample_track(stream(seed, TRACK, key, cam))


def image_camera(spec: ImageSpec, cfg: SynthConfig, seed: int) -> Camera:
    """The camera settings one planned image is rendered with.

    Its camera's, except that ``background="shared"`` (``sensor="shared"``) takes each of the
    fields :data:`~cacl.data.synth.camera.BACKGROUND_FIELDS` (``SENSOR_FIELDS``) from a camera
    drawn at random (:func:`~cacl.data.synth.camera.pool_settings`), from the image's own ``LOOK``
    streams: the defaults draw nothing, and each knob draws the same numbers whatever the other
    is.
    """
    cams = _cameras(seed, cfg.num_cams, cfg.jpeg_quality, cfg.cast)
    cam = cams[spec.cam]
    if cfg.background == SHARED:
        cam = pool_settings(stream(seed, LOOK, spec.index, 0), cam, cams, BACKGROUND_FIELDS)
    if cfg.sensor == SHARED:
        cam = pool_settings(stream(seed, LOOK, spec.index, 1), cam, cams, SENSOR_FIELDS)
    return cam


def render_spec(spec: ImageSpec, cfg: SynthConfig, seed: int) -> tuple[np.ndarray, int]:
    """The pixels of one planned image and its JPEG quality (see :func:`image_camera`)."""
    cam = image_camera(spec, cfg, seed)
    rng = stream(seed, IMAGE, spec.index)
    track = _track(seed, spec.key, spec.cam)
    if spec.kind == PERSON:
        person: Identity | None = _identity(seed, spec.key)
        pose = sample_pose(rng, track, person.height, cam.occlusion)
    elif spec.kind == DISTRACTOR:  # a passer-by, often badly framed, or an empty detection
        person = sample_identity(stream(seed, IDENTITY, spec.key)) if rng.random() < 0.7 else None
        pose = sample_pose(rng, track, 0.9, cam.occlusion, scale_range=(0.8, 1.5), shift=10.0)
    else:  # junk: a fragment of someone, or background
        assert spec.kind == JUNK
        person = sample_identity(stream(seed, IDENTITY, spec.key)) if rng.random() < 0.6 else None
        pose = sample_pose(rng, track, 1.0, cam.occlusion, scale_range=(1.6, 2.6), shift=18.0)
    return render_image(rng, cam, person, pose), cam.jpeg_quality


def _write_chunk(specs: list[ImageSpec], out_dir: str, cfg: SynthConfig, seed: int) -> int:
    for spec in specs:
        pixels, quality = render_spec(spec, cfg, seed)
        Image.fromarray(pixels).save(
            os.path.join(out_dir, spec.path), format="JPEG", quality=quality
        )
    return len(specs)


def _counts(specs: list[ImageSpec], cfg: SynthConfig) -> dict[str, int]:
    split = [s.path.split("/", 1)[0] for s in specs]
    return {
        "cameras": cfg.num_cams,
        "train_ids": cfg.num_train_ids,
        "train_images": split.count(TRAIN_DIR),
        "test_ids": cfg.num_test_ids,
        "query_images": split.count(QUERY_DIR),
        "gallery_images": split.count(GALLERY_DIR),
        "distractor_images": sum(s.kind == DISTRACTOR for s in specs),
        "junk_images": sum(s.kind == JUNK for s in specs),
    }


def _recorded_config(meta: dict[str, Any]) -> Any:
    """The config a ``synth.json`` records, settings it does not name set to their defaults."""
    config = meta.get("config")
    if not isinstance(config, dict):
        return config
    fields = dataclasses.fields(SynthConfig)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    return json.loads(json.dumps({**defaults, **config}))


def _check_output(out: Path, record: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Apply the output-folder rules; return the old summary when there is nothing to do."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise SynthOutputError(f"{out} exists and is not a folder")
    if not any(out.iterdir()):
        return None
    meta = out / META_FILE
    if not meta.is_file():
        raise SynthOutputError(
            f"{out} is not empty and holds no {META_FILE}, so it is not a synthetic dataset; "
            "choose a new or empty folder"
        )
    try:
        old = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise SynthOutputError(f"cannot read {meta}: {exc}") from exc
    same = old.get("seed") == record["seed"] and _recorded_config(old) == record["config"]
    if same and old.get("generator_version") != record["generator_version"]:
        logger.warning(
            "%s was made by generator version %s; regenerating it with version %s",
            out,
            old.get("generator_version"),
            record["generator_version"],
        )
    elif same and old.get("complete"):
        old.pop("seconds", None)  # recorded by older versions
        return {**old, "config": record["config"]}
    if not same and not overwrite:
        raise SynthOutputError(
            f"{out} holds a synthetic dataset made with other settings "
            f"(seed {old.get('seed')}, preset {old.get('preset')}); choose another folder or "
            "use --overwrite (overwrite=True from Python) to replace it"
        )
    for name in SPLIT_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
    meta.unlink()
    return None


def generate(
    out_dir: str | os.PathLike[str],
    preset: str = "small",
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Write a synthetic Market-1501-style dataset into ``out_dir``; return its summary.

    Args:
        out_dir: the dataset folder (created if needed; see the module doc for existing ones).
        preset: ``"tiny"``, ``"small"`` or ``"market"`` (:data:`~cacl.data.synth.PRESETS`).
        seed: the same seed and settings give byte-identical files, whatever ``workers`` is.
        workers: processes that render images (default: all CPU cores).
        overwrite: replace a previous synthetic dataset made with other settings.
        progress: show a progress bar.
        **overrides: :class:`SynthConfig` fields replacing the preset's (``None`` ignored).

    Returns:
        ``{"generator_version", "preset", "seed", "config", "counts", "complete", "skipped"}``
        (what ``synth.json`` holds, plus ``skipped``) and, when the images were written now,
        ``"seconds"`` (not recorded in ``synth.json``); ``counts`` has ``train_images``,
        ``query_images``, ``gallery_images`` (distractors and junk included),
        ``distractor_images``, ``junk_images``, ids and cameras.

    Example::

        >>> summary = generate("/tmp/synth_tiny", preset="tiny", seed=0)  # doctest: +SKIP
        >>> summary["counts"]["train_images"]  # doctest: +SKIP
        72
    """
    cfg = SynthConfig.from_preset(preset, **overrides)
    seed = int(seed)
    out = Path(out_dir)
    record: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "preset": preset,
        "seed": seed,
        "config": json.loads(json.dumps(cfg.to_dict())),
    }
    old = _check_output(out, record, overwrite)
    if old is not None:
        logger.info("%s already holds this synthetic dataset (seed %d); nothing to do", out, seed)
        return {**old, "skipped": True}

    start = time.perf_counter()
    specs = plan_dataset(cfg, seed)
    record["counts"] = _counts(specs, cfg)
    record["complete"] = False
    for name in SPLIT_DIRS:
        (out / name).mkdir(parents=True, exist_ok=True)
    (out / META_FILE).write_text(json.dumps(record, indent=2) + "\n")

    workers = max(1, min(workers or os.cpu_count() or 1, len(specs) // _CHUNK + 1))
    chunks = [specs[i : i + _CHUNK] for i in range(0, len(specs), _CHUNK)]
    task = partial(_write_chunk, out_dir=str(out), cfg=cfg, seed=seed)
    logger.info("writing %d images to %s with %d worker(s)", len(specs), out, workers)
    with tqdm(total=len(specs), desc="synth", unit="img", disable=not progress) as bar:
        if workers == 1:
            for chunk in chunks:
                bar.update(task(chunk))
        else:
            ctx = multiprocessing.get_context()  # the platform's default start method
            with ctx.Pool(workers) as pool:
                for done in pool.imap_unordered(task, chunks):
                    bar.update(done)

    record["complete"] = True
    (out / META_FILE).write_text(json.dumps(record, indent=2) + "\n")
    seconds = round(time.perf_counter() - start, 2)
    logger.info("synthetic dataset written in %.1f s: %s", seconds, record["counts"])
    return {**record, "seconds": seconds, "skipped": False}
