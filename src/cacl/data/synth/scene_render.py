"""Writing a synthetic site (:func:`generate_site`): frames per camera, ground truth, tracker output
and an evaluation split, from the plan of :mod:`cacl.data.synth.scene`.

::

    OUT/site.json                  seed, config, transit means, counts; "completed" written last
    OUT/cam1/seqinfo.ini           MOTChallenge sequence (frameRate, seqLength, ..., startTime)
    OUT/cam1/img1/000001.jpg ...   frames (or OUT/cam1/video.mp4 + start.txt with video=True)
    OUT/cam1/gt/gt.txt             frame,pid,left,top,width,height,1,1,visibility (MOT17 gt)
    OUT/cam1/tracks.txt            frame,track,left,top,width,height,conf,-1,-1,-1 (faults in)
    OUT/eval/query/ eval/bounding_box_test/   other people, Market-1501 names

People are the crop generator's (identities, garments, cameras' looks and sensors): each person is
drawn as a 128 x 64 sprite with a mask, in that camera's colours, and scaled into its box on a
background made of that camera's scenery. The eval split's crops are cut the same way from a
camera's background, so that they look like the crops ``cacl crops`` cuts. Same seed and
settings, same files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
from datetime import datetime, timedelta, timezone
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cacl.data.site.mot import write_mot
from cacl.data.synth.camera import Camera, apply_camera, sample_cameras
from cacl.data.synth.config import IMAGE_HEIGHT, IMAGE_WIDTH
from cacl.data.synth.identity import Identity, sample_identity
from cacl.data.synth.plan import CAMERAS, stream
from cacl.data.synth.pose import sample_pose, sample_track
from cacl.data.synth.render import render_background, render_person
from cacl.data.synth.scene import (
    TEST,
    SiteConfig,
    Visit,
    ground_truth,
    plan_visits,
    site_config,
    test_times,
    tracker_output,
    transit_means,
)
from cacl.errors import CaclError

log = logging.getLogger(__name__)

SITE_VERSION = 1
SITE_JSON = "site.json"
START = datetime(2026, 1, 1, 8, 0, 0, tzinfo=timezone.utc)
SPRITE, BACKGROUND, EVAL = 201, 202, 203
WALK_PHASES = 4


def camera_name(cam: int) -> str:
    return f"cam{cam + 1}"


@lru_cache(maxsize=8)
def _cameras(seed: int, num_cams: int, quality: int) -> tuple[Camera, ...]:
    return tuple(sample_cameras(stream(seed, CAMERAS), num_cams, quality))


@lru_cache(maxsize=4096)
def _identity(seed: int, pid: int, test: bool) -> Identity:
    return sample_identity(stream(seed, TEST if test else SPRITE, pid))


@lru_cache(maxsize=8192)
def sprite(seed: int, cfg_key: tuple, pid: int, cam: int, phase: int, flip: bool, test=False):
    """``(RGB, alpha)`` 128 x 64 uint8 arrays of a person in a camera, at a walking phase."""
    num_cams, quality = cfg_key
    camera = _cameras(seed, num_cams, quality)[cam]
    person = _identity(seed, pid, test)
    rng = stream(seed, SPRITE, int(test), pid, cam, phase)
    track = sample_track(stream(seed, SPRITE, int(test), pid, cam))
    pose = sample_pose(rng, track, person.height, 0.0, scale_range=(1.0, 1.0), shift=0.0)
    size = IMAGE_HEIGHT * 0.96
    pose = dataclasses.replace(pose, xc=IMAGE_WIDTH / 2, top=(IMAGE_HEIGHT - size) / 2, size=size)
    pose = dataclasses.replace(pose, flip=flip)
    canvas = np.full((IMAGE_HEIGHT, IMAGE_WIDTH, 3), -1.0, dtype=np.float32)
    render_person(rng, canvas, person, pose, camera)
    mask = canvas[..., 0] >= 0
    canvas[~mask] = 0.5
    rgb = apply_camera(rng, canvas, camera, pose.light)
    return rgb, (mask * 255).astype(np.uint8)


@lru_cache(maxsize=16)
def background(seed: int, cfg_key: tuple, cam: int, width: int, height: int) -> np.ndarray:
    """A camera's scenery: four of its 128 x 64 backgrounds side by side, scaled to the frame."""
    num_cams, quality = cfg_key
    camera = _cameras(seed, num_cams, quality)[cam]
    tiles = []
    for i in range(4):
        rng = stream(seed, BACKGROUND, cam, i)
        tiles.append(apply_camera(rng, render_background(rng, camera), camera, 1.0))
    wide = Image.fromarray(np.concatenate(tiles, axis=1))
    return np.asarray(wide.resize((width, height), Image.BICUBIC))


def paste(frame: Image.Image, rgb: np.ndarray, alpha: np.ndarray, box) -> None:
    left, top, width, height = (int(round(v)) for v in box)
    if width < 2 or height < 2:
        return
    size = (width, height)
    frame.paste(
        Image.fromarray(rgb).resize(size, Image.BILINEAR),
        (left, top),
        Image.fromarray(alpha).resize(size, Image.BILINEAR),
    )


def render_frame(seed: int, cfg: SiteConfig, cam: int, rows: np.ndarray, frame: int) -> Image.Image:
    """Frame ``frame`` of camera ``cam``; ``rows``: its ground truth (far people first)."""
    key = (cfg.num_cams, cfg.jpeg_quality)
    image = Image.fromarray(background(seed, key, cam, cfg.width, cfg.height))
    for row in rows:
        pid, leftwards = int(row[1]), bool(row[8])
        rgb, alpha = sprite(seed, key, pid, cam, (frame // 2) % WALK_PHASES, leftwards)
        paste(image, rgb, alpha, row[2:6])
    return image


def _write_frames(job, out: str, seed: int, cfg: SiteConfig) -> int:
    cam, frames, rows = job
    folder = Path(out) / camera_name(cam) / "img1"
    for frame in frames:
        image = render_frame(seed, cfg, cam, rows[rows[:, 0] == frame], frame)
        path = folder / f"{frame:06d}.jpg"
        part = path.with_name(path.name + ".part")
        image.save(part, format="JPEG", quality=cfg.jpeg_quality)
        os.replace(part, path)
    return len(frames)


def _ordered_rows(gt: np.ndarray, visits: list[Visit]) -> np.ndarray:
    """gt rows with the walking direction, far people (feet higher) first in each frame."""
    feet = np.array([visits[int(v)].feet for v in gt[:, 7]]) if len(gt) else np.zeros(0)
    left = np.array([visits[int(v)].leftwards for v in gt[:, 7]], dtype=float)
    rows = np.column_stack([gt, left if len(gt) else np.zeros(0)])
    return rows[np.lexsort((feet, rows[:, 0]))] if len(rows) else np.zeros((0, 9))


def _write_text(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


def _camera_files(out: Path, cfg: SiteConfig, cam: int, gt: np.ndarray, tracks: np.ndarray):
    folder = out / camera_name(cam)
    (folder / "gt").mkdir(parents=True, exist_ok=True)
    lines = [
        f"{int(r[0])},{int(r[1])},{round(r[2])},{round(r[3])},{round(r[4])},{round(r[5])},1,1,"
        f"{r[6]:.2f}\n"
        for r in gt
    ]
    _write_text(folder / "gt" / "gt.txt", "".join(lines))
    part = folder / "tracks.txt.part"
    write_mot(part, tracks[:, 0], tracks[:, 1], tracks[:, 2:6], tracks[:, 6])
    os.replace(part, folder / "tracks.txt")
    info = [
        "[Sequence]",
        f"name={camera_name(cam)}",
        "imDir=img1",
        f"frameRate={cfg.fps:g}",
        f"seqLength={cfg.frames}",
        f"imWidth={cfg.width}",
        f"imHeight={cfg.height}",
        "imExt=.jpg",
        f"startTime={START.isoformat()}",
    ]
    _write_text(folder / "seqinfo.ini", "\n".join(info) + "\n")


def _eval_split(out: Path, cfg: SiteConfig, seed: int) -> dict:
    """Other people, cut from each camera's scenery as cacl crops would cut them."""
    key = (cfg.num_cams, cfg.jpeg_quality)
    counts = {"query": 0, "bounding_box_test": 0}
    for split in counts:
        (out / "eval" / split).mkdir(parents=True, exist_ok=True)
    serial = 0
    times = []
    for pid in range(1, cfg.num_test_ids + 1):
        rng = stream(seed, EVAL, pid)
        n = int(rng.integers(cfg.cams_per_id[0], cfg.cams_per_id[1] + 1))
        cams = sorted(int(c) for c in rng.permutation(cfg.num_cams)[:n])
        seen = test_times(cfg, seed, pid, cams, cfg.test_images_per_cam)
        for cam in cams:
            scene = background(seed, key, int(cam), cfg.width, cfg.height)
            for i in range(cfg.test_images_per_cam):
                serial += 1
                height = float(rng.uniform(0.3, 0.7)) * cfg.height
                width = 0.4 * height
                left = float(rng.uniform(0, cfg.width - width))
                top = float(rng.uniform(0, cfg.height - height))
                image = Image.fromarray(scene)
                flip = bool(rng.random() < 0.5)
                rgb, alpha = sprite(seed, key, pid, int(cam), i % WALK_PHASES, flip, True)
                paste(image, rgb, alpha, (left, top, width, height))
                jitter = rng.normal(0, 0.03 * height, 4)
                box = (
                    left + jitter[0],
                    top + jitter[1],
                    left + width + jitter[2],
                    top + height + jitter[3],
                )
                crop = image.crop(tuple(int(round(v)) for v in box)).resize(
                    (IMAGE_WIDTH, IMAGE_HEIGHT)
                )
                split = "query" if i == 0 else "bounding_box_test"
                name = f"{pid:04d}_c{int(cam) + 1}s1_{serial:06d}_00.jpg"
                crop.save(out / "eval" / split / name, quality=cfg.jpeg_quality)
                times.append(f"{name},{seen[cam][i]:.3f}")
                counts[split] += 1
    # the site clock's seconds of every eval image (cacl eval --st, cacl serve st=1)
    _write_text(out / "eval" / "times.csv", "name,time\n" + "\n".join(times) + "\n")
    return counts


def _check_out(out: Path, record: dict, overwrite: bool) -> dict | None:
    meta = out / SITE_JSON
    if meta.is_file():
        before = json.loads(meta.read_text())
        same = {k: before.get(k) for k in record} == record
        if same and before.get("completed"):
            return before
        if not same and not overwrite:
            raise CaclError(
                f"{out} holds a synthetic site of other settings; give another folder or "
                "--overwrite"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise CaclError(f"{out} is not empty and holds no synthetic site; give another folder")
    return None


def generate_site(
    out: str | os.PathLike,
    preset: str = "site",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    video: bool = False,
    **overrides,
) -> dict:
    """Write the site of ``preset`` (``site`` | ``site-tiny``) and ``overrides`` (fields of
    :class:`SiteConfig`, e.g. ``faults=4``) for ``seed`` into ``out``; returns the summary."""
    cfg = site_config(preset, **overrides)
    out = Path(out).expanduser()
    record = {
        "version": SITE_VERSION,
        "preset": preset,
        "seed": seed,
        "video": video,
        "config": dataclasses.asdict(cfg),
    }
    record = json.loads(json.dumps(record))  # tuples as lists, as the file has them
    done = _check_out(out, record, overwrite)
    if done is not None:
        return {**done, "skipped": True}
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    visits = plan_visits(cfg, seed)
    jobs, counts = [], {"gt_boxes": 0, "track_boxes": 0, "tracks": 0, "frames": 0}
    for cam in range(cfg.num_cams):
        gt = ground_truth(cfg, visits, cam)
        tracks = tracker_output(cfg, gt, cam, seed)
        _camera_files(out, cfg, cam, gt, tracks)
        counts["gt_boxes"] += len(gt)
        counts["track_boxes"] += len(tracks)
        counts["tracks"] += len(np.unique(tracks[:, 1])) if len(tracks) else 0
        rows = _ordered_rows(gt, visits)
        if video:
            _write_video(out, cfg, cam, rows, seed, progress)
        else:
            (out / camera_name(cam) / "img1").mkdir(parents=True, exist_ok=True)
            frames = np.arange(1, cfg.frames + 1)
            for chunk in np.array_split(frames, max(1, cfg.frames // 50)):
                jobs.append((cam, chunk.tolist(), rows[np.isin(rows[:, 0], chunk)]))
        counts["frames"] += cfg.frames
    if jobs:
        workers = workers or os.cpu_count() or 1
        run = partial(_write_frames, out=str(out), seed=seed, cfg=cfg)
        bar = tqdm(total=counts["frames"], desc="site frames", unit="frame", disable=not progress)
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for n in pool.imap_unordered(run, jobs):
                    bar.update(n)
        else:
            for job in jobs:
                bar.update(run(job))
        bar.close()
    counts.update(_eval_split(out, cfg, seed))
    summary = {
        **record,
        "counts": counts,
        "visits": len(visits),
        "transit_means": np.round(transit_means(cfg, seed), 2).tolist(),
        "cameras": [camera_name(c) for c in range(cfg.num_cams)],
        "start": START.isoformat(),
        "completed": True,
    }
    _write_text(out / SITE_JSON, json.dumps(summary, indent=1))
    log.info("synthetic site written in %.1f s: %s", time.perf_counter() - start, counts)
    return {**summary, "seconds": time.perf_counter() - start, "skipped": False}


def _write_video(out: Path, cfg: SiteConfig, cam: int, rows: np.ndarray, seed: int, progress):
    import av

    folder = out / camera_name(cam)
    part = folder / "video.mp4.part"
    with av.open(str(part), "w", format="mp4") as container:
        stream_ = container.add_stream("mpeg4", rate=int(round(cfg.fps)))
        stream_.width, stream_.height, stream_.pix_fmt = cfg.width, cfg.height, "yuv420p"
        stream_.options = {"qscale": "3"}
        for frame in tqdm(range(1, cfg.frames + 1), desc=camera_name(cam), disable=not progress):
            image = render_frame(seed, cfg, cam, rows[rows[:, 0] == frame], frame)
            picture = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            container.mux(stream_.encode(picture))
        container.mux(stream_.encode())
    os.replace(part, folder / "video.mp4")
    _write_text(folder / "start.txt", START.isoformat() + "\n")
    (folder / "seqinfo.ini").unlink(missing_ok=True)  # a video camera has no image sequence


def frame_start(cfg: SiteConfig, frame: int) -> datetime:
    return START + timedelta(seconds=(frame - 1) / cfg.fps)
