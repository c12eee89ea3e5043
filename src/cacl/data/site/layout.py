"""A site on disk, as a tracker run leaves it: one folder per camera.

::

    SITE/
      cam1/                      the folder name is the camera
        video.mp4                a video (*.mp4, *.avi, *.mkv, *.mov) [+ start.txt: ISO 8601 start]
        tracks.txt               tracks, MOTChallenge text format (cacl.data.site.mot)
      cam2/
        seqinfo.ini              or a MOTChallenge image sequence: frameRate, seqLength, imWidth,
        img1/000001.jpg ...      imHeight, imDir, imExt [, startTime: ISO 8601]
        gt/gt.txt                tracks are read from tracks.txt, else gt/gt.txt, else det/det.txt

A sub-folder with neither a video nor a ``seqinfo.ini`` is not a camera (e.g. an ``eval/`` split
beside the cameras) and is skipped with a log line. When every camera has a start time, all
cameras share one clock (seconds from the earliest start); otherwise each camera's clock starts at
0 at its first frame and only within-camera times are comparable (:attr:`Site.clock`).
"""

from __future__ import annotations

import configparser
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cacl.errors import DatasetError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
TRACK_FILES = ("tracks.txt", "gt/gt.txt", "det/det.txt")
#: :attr:`Site.clock` values.
SITE_CLOCK, CAMERA_CLOCK = "site", "camera"


@dataclass(frozen=True)
class CameraSource:
    """One camera of a site: where its frames and tracks are, and its clock."""

    name: str
    folder: Path
    tracks: Path
    video: Path | None = None  # None: an image sequence
    image_dir: Path | None = None
    image_ext: str = ".jpg"
    frame_rate: float | None = None  # None for a video: read from the stream
    length: int | None = None  # frames, when seqinfo.ini says
    width: int | None = None
    height: int | None = None
    start: datetime | None = None

    @property
    def kind(self) -> str:
        return "video" if self.video is not None else "images"

    def frame_path(self, frame: int) -> Path:
        """The image of 1-based ``frame`` of an image sequence."""
        assert self.image_dir is not None
        return self.image_dir / f"{frame:06d}{self.image_ext}"


@dataclass(frozen=True)
class Site:
    root: Path
    cameras: tuple[CameraSource, ...]

    @property
    def clock(self) -> str:
        """``site``: every camera has a start time; ``camera``: times are per camera."""
        return SITE_CLOCK if all(c.start is not None for c in self.cameras) else CAMERA_CLOCK

    @property
    def origin(self) -> datetime | None:
        """The site clock's 0 (the earliest camera start), when :attr:`clock` is ``site``."""
        return min(c.start for c in self.cameras) if self.clock == SITE_CLOCK else None  # type: ignore[type-var]

    def offset(self, camera: CameraSource) -> float:
        """Seconds from the site clock's 0 to ``camera``'s first frame (0 on camera clocks)."""
        origin = self.origin
        if origin is None or camera.start is None:
            return 0.0
        return (camera.start - origin).total_seconds()


def parse_time(text: str, where: str) -> datetime:
    """An ISO 8601 time; one without a zone is taken as UTC (all cameras must agree)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DatasetError(
            f"{where}: start time {text.strip()!r} is not ISO 8601 (e.g. 2026-03-01T08:00:00)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _seqinfo(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.optionxform = str  # keep the keys' case (frameRate, imDir, ...)
    try:
        parser.read_string(path.read_text(encoding="utf-8-sig"))
    except (OSError, configparser.Error) as exc:
        raise DatasetError(f"{path}: cannot read seqinfo.ini: {exc}") from exc
    if not parser.has_section("Sequence"):
        raise DatasetError(f"{path}: no [Sequence] section")
    return dict(parser["Sequence"])


def _number(info: dict[str, str], key: str, path: Path, kind=float):
    if key not in info:
        raise DatasetError(f"{path}: {key} is missing (MOTChallenge seqinfo.ini needs it)")
    try:
        value = kind(info[key])
    except ValueError:
        raise DatasetError(f"{path}: {key}={info[key]!r} is not a number") from None
    if value <= 0:
        raise DatasetError(f"{path}: {key} must be positive, got {info[key]}")
    return value


def _tracks_file(folder: Path) -> Path:
    for name in TRACK_FILES:
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(
        f"camera folder {folder} has no tracks: put the tracker's output there as tracks.txt "
        f"(MOTChallenge text format), or gt/gt.txt, or det/det.txt"
    )


def read_camera(folder: Path) -> CameraSource | None:
    """The camera in ``folder``, or None when the folder holds neither video nor sequence."""
    seqinfo = folder / "seqinfo.ini"
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if seqinfo.is_file():
        info = _seqinfo(seqinfo)
        image_dir = folder / info.get("imDir", "img1")
        if not image_dir.is_dir():
            raise DatasetError(f"{seqinfo}: imDir {image_dir.name!r} is not a folder in {folder}")
        start = info.get("startTime")
        return CameraSource(
            name=folder.name,
            folder=folder,
            tracks=_tracks_file(folder),
            image_dir=image_dir,
            image_ext=info.get("imExt", ".jpg"),
            frame_rate=_number(info, "frameRate", seqinfo),
            length=_number(info, "seqLength", seqinfo, int),
            width=_number(info, "imWidth", seqinfo, int),
            height=_number(info, "imHeight", seqinfo, int),
            start=parse_time(start, str(seqinfo)) if start else None,
        )
    if videos:
        if len(videos) > 1:
            raise DatasetError(
                f"camera folder {folder} holds {len(videos)} videos ({', '.join(v.name for v in videos)}); "
                "one video per camera folder"
            )
        start_file = folder / "start.txt"
        start = start_file.read_text() if start_file.is_file() else None
        return CameraSource(
            name=folder.name,
            folder=folder,
            tracks=_tracks_file(folder),
            video=videos[0],
            start=parse_time(start, str(start_file)) if start else None,
        )
    return None


def read_site(root: str | os.PathLike) -> Site:
    """The cameras of the site in ``root`` (sorted by folder name)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"site: not a folder: {root}")
    cameras = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        camera = read_camera(folder)
        if camera is None:
            log.info("site: %s holds no video or seqinfo.ini: not a camera, skipped", folder.name)
        else:
            cameras.append(camera)
    if not cameras:
        raise DatasetError(
            f"site: no camera folder in {root}; each camera needs its own folder with a video "
            f"({', '.join(VIDEO_SUFFIXES)}) or a MOTChallenge sequence (seqinfo.ini + img1/), "
            "and tracks.txt"
        )
    site = Site(root, tuple(cameras))
    if site.clock == CAMERA_CLOCK and any(c.start for c in cameras):
        missing = [c.name for c in cameras if c.start is None]
        log.warning(
            "site: no start time for %s: every camera keeps its own clock (only within-camera "
            "times are used); give startTime in seqinfo.ini or a start.txt beside the video",
            ", ".join(missing),
        )
    return site
