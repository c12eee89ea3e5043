"""``cacl crops``: cut the tracked boxes of a site out of its frames into a training folder.

::

    OUT/<camera>/<camera>_t<track>_f<frame>.jpg
    OUT/tracklets.csv      name,camera,tracklet,frame,time,left,top,width,height,conf[,true_id]
    OUT/crops.json         options, site clock, per-camera counts and skip reasons, timings

One decoding pass per camera. Every crop is written under a temporary name and renamed, so a crop
file that exists is complete; a camera whose rows are recorded (``OUT/.crops/<camera>.csv``) is
done. A second run after a kill continues: done cameras are not decoded again, crops that exist
are not written again. ``tracklets.csv`` and ``crops.json`` are written last, atomically.

``time`` is seconds on the site's clock (:class:`~cacl.data.site.layout.Site`): frame ``f`` of a
camera is at ``offset + (f - 1) / frame_rate``. ``true_id`` (only when the tracks come from
``tracks.txt`` or ``det/det.txt`` and the camera also has ``gt/gt.txt``): the ground-truth
identity whose box overlaps the crop's most (IoU >= 0.5), else -1. It is for measuring pseudo
labels; training never reads it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cacl.data.readers.tracklets import TRACKLETS_CSV
from cacl.data.site.frames import FrameReader
from cacl.data.site.layout import CameraSource, Site, read_site
from cacl.data.site.mot import MotTracks, read_mot
from cacl.data.site.select import PAST_END, CropOptions, select_boxes
from cacl.data.site.truth import match_truth
from cacl.errors import CaclError

log = logging.getLogger(__name__)

COLUMNS = ("name", "camera", "tracklet", "frame", "time", "left", "top", "width", "height", "conf")
TRUTH_COLUMN = "true_id"
SUMMARY_JSON = "crops.json"
STATE_DIR = ".crops"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(camera: str) -> str:
    """A camera name usable in file names (other characters become ``-``)."""
    return _SAFE.sub("-", camera).strip("-.") or "camera"


@dataclass
class CameraResult:
    name: str
    rows: list[dict]
    skipped: Counter
    decoded: int
    written: int
    reused: int
    variant: str
    tracker: str
    seconds: float


def _write_text(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(part, path)


def _csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _load_tracks(camera: CameraSource, frame_rate: float) -> tuple[MotTracks, str]:
    tracks = read_mot(camera.tracks)
    log.info("%s", tracks.describe())
    if tracks.detections_only:
        from cacl.data.site.tracking import track_detections

        return track_detections(tracks, frame_rate), "ByteTrack (supervision)"
    return tracks, "given"


def cut_camera(
    site: Site,
    camera: CameraSource,
    out: Path,
    options: CropOptions,
    progress: bool = True,
) -> CameraResult:
    """Cut one camera's crops into ``out/<camera>/`` (existing crops are kept as they are)."""
    start = time.perf_counter()
    name = safe_name(camera.name)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.part"):
        stale.unlink()
    with FrameReader(camera) as reader:
        if reader.size is None:  # an image sequence without seqinfo sizes cannot happen
            raise CaclError(f"{camera.folder}: frame size unknown")
        tracks, tracker = _load_tracks(camera, reader.frame_rate or 1.0)
        width, height = reader.size
        picked, boxes, skipped = select_boxes(tracks, options, width, height, camera.length)
        truth = match_truth(camera, tracks, picked)
        offset = site.offset(camera)
        names = [
            f"{name}_t{int(t)}_f{int(f)}.jpg"
            for t, f in zip(tracks.track[picked], tracks.frame[picked], strict=True)
        ]
        todo = np.array([not (folder / n).exists() for n in names], dtype=bool)
        by_frame: dict[int, list[int]] = {}
        for i in np.flatnonzero(todo):
            by_frame.setdefault(int(tracks.frame[picked[i]]), []).append(int(i))
        bar = tqdm(
            total=int(todo.sum()), desc=f"crops {camera.name}", unit="crop", disable=not progress
        )
        written, seen = 0, set()
        for frame, image in reader.read(by_frame):
            seen.add(frame)
            for i in by_frame[frame]:
                x, y, w, h = (int(v) for v in boxes[i])
                crop = image.crop((x, y, x + w, y + h))
                part = folder / (names[i] + ".part")
                crop.save(part, format="JPEG", quality=options.quality)
                os.replace(part, folder / names[i])
                written += 1
                bar.update(1)
        bar.close()
        decoded = reader.decoded
    missing = {f for f in by_frame if f not in seen}
    lost = {i for f in missing for i in by_frame[f]}
    if lost:
        skipped[PAST_END] += len(lost)
    rows = []
    rate = reader.frame_rate or 1.0
    for i, row in enumerate(picked):
        if i in lost:
            continue
        x, y, w, h = (int(v) for v in boxes[i])
        frame = int(tracks.frame[row])
        record = {
            "name": names[i],
            "camera": camera.name,
            "tracklet": int(tracks.track[row]),
            "frame": frame,
            "time": f"{offset + (frame - 1) / rate:.3f}",
            "left": x,
            "top": y,
            "width": w,
            "height": h,
            "conf": f"{float(tracks.conf[row]):.4g}",
        }
        if truth is not None:
            record[TRUTH_COLUMN] = int(truth[i])
        rows.append(record)
    return CameraResult(
        name=camera.name,
        rows=rows,
        skipped=skipped,
        decoded=decoded,
        written=written,
        reused=int((~todo).sum()),
        variant=tracks.variant,
        tracker=tracker,
        seconds=time.perf_counter() - start,
    )


def _check_out(out: Path, record: dict) -> None:
    summary = out / STATE_DIR / "options.json"
    if summary.is_file():
        before = json.loads(summary.read_text())
        if before != record:
            raise CaclError(
                f"{out} holds crops cut from another site or with other options ({before}); "
                "give a new output folder"
            )
    elif out.is_dir() and any(p for p in out.iterdir() if p.name != STATE_DIR):
        raise CaclError(f"{out} is not empty and holds no crops of cacl crops; give a new folder")
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    _write_text(summary, json.dumps(record, indent=1, sort_keys=True))


def cut_site(
    site_root: str | os.PathLike,
    out: str | os.PathLike,
    options: CropOptions | None = None,
    progress: bool = True,
) -> dict:
    """Cut every camera of the site in ``site_root`` into ``out``; returns the summary."""
    options = options or CropOptions()
    site = read_site(site_root)
    out = Path(out).expanduser()
    record = {"site": str(site.root.resolve()), "options": options.record()}
    _check_out(out, record)
    start = time.perf_counter()
    cameras: dict[str, dict] = {}
    all_rows: list[dict] = []
    with_truth = False
    for camera in site.cameras:
        done = out / STATE_DIR / f"{safe_name(camera.name)}.json"
        if done.is_file():
            result = json.loads(done.read_text())
            log.info("crops: %s was finished by an earlier run", camera.name)
        else:
            cut = cut_camera(site, camera, out, options, progress)
            result = {
                "rows": cut.rows,
                "summary": {
                    "crops": len(cut.rows),
                    "written": cut.written,
                    "already_there": cut.reused,
                    "frames_decoded": cut.decoded,
                    "skipped": dict(cut.skipped),
                    "format": cut.variant,
                    "tracks": str(camera.tracks.relative_to(site.root)),
                    "tracker": cut.tracker,
                    "seconds": round(cut.seconds, 2),
                },
            }
            _write_text(done, json.dumps(result))
            log.info("crops: %s %s", camera.name, result["summary"])
        cameras[camera.name] = result["summary"]
        all_rows.extend(result["rows"])
        with_truth |= any(TRUTH_COLUMN in r for r in result["rows"])
    columns = COLUMNS + ((TRUTH_COLUMN,) if with_truth else ())
    _write_text(out / TRACKLETS_CSV, _csv_text(all_rows, columns))
    summary = {
        **record,
        "clock": site.clock,
        "origin": site.origin.isoformat() if site.origin else None,
        "crops": len(all_rows),
        "tracklets": len({(r["camera"], r["tracklet"]) for r in all_rows}),
        "cameras": cameras,
        "seconds": round(time.perf_counter() - start, 2),
    }
    _write_text(out / SUMMARY_JSON, json.dumps(summary, indent=1))
    return summary
