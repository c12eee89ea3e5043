"""The time (seconds) of every image of a split, for the spatio-temporal cue (``cacl eval --st``).

Where times come from, first match wins:

- a site's training crops: ``tracklets.csv`` (the :class:`~cacl.data.types.Sighting` of each
  crop), used only when all cameras share one clock (``dataset.clock == "site"``);
- a ``times.csv`` (``name,time``) in the split's folder or the one above it (``cacl synth
  --site`` writes ``eval/times.csv``; ``cacl labels export`` writes one too);
- the file names of Market-1501 (``0001_c1s1_001051_00.jpg``: camera 1, sequence 1, frame 1051)
  and DukeMTMC-reID (``0001_c2_f0046182.jpg``: frame 46182). Like st-ReID's code, the frame
  number alone is the time (Market at 25 frames/s, Duke at 60); Market's sequence number is
  ignored, which assumes a camera's sequences share one clock, and both assume the cameras are
  synchronised (DukeMTMC's are; Market's are only roughly).

A plain folder of crops has no times: :func:`require_times` refuses with what to give.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

from cacl.data.types import ReidDataset, Sample
from cacl.errors import CaclError

TIMES_CSV = "times.csv"
MARKET_FPS = 25.0
DUKE_FPS = 60.0
NAMINGS = ("auto", "file", "market", "duke")
_MARKET = re.compile(r"^-?\d+_c\d+s\d+_(\d+)_\d+")
_DUKE = re.compile(r"^-?\d+_c\d+_f(\d+)")


def market_time(name: str) -> float:
    """Seconds of a Market-1501 file name (its frame number at 25 frames/s); NaN if not one."""
    match = _MARKET.match(Path(name).name)
    return int(match.group(1)) / MARKET_FPS if match else math.nan


def duke_time(name: str) -> float:
    """Seconds of a DukeMTMC-reID file name (its frame number at 60 frames/s); NaN if not one."""
    match = _DUKE.match(Path(name).name)
    return int(match.group(1)) / DUKE_FPS if match else math.nan


def read_times_file(path: str | Path) -> dict[str, float]:
    """``name -> seconds`` of a ``times.csv``; a malformed row is an error naming its line."""
    path = Path(path)
    times: dict[str, float] = {}
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise CaclError(f"{path}: cannot read: {exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        if not {"name", "time"} <= set(reader.fieldnames or []):
            raise CaclError(f"{path}: needs the columns name,time (header: {reader.fieldnames})")
        for number, row in enumerate(reader, start=2):
            try:
                value = float(row["time"])
            except (TypeError, ValueError):
                raise CaclError(
                    f"{path}, line {number}: time {row['time']!r} is not seconds"
                ) from None
            if not math.isfinite(value):
                raise CaclError(f"{path}, line {number}: time {row['time']!r} is not finite")
            times[row["name"]] = value
    return times


def _from_file(samples: list[Sample]) -> np.ndarray | None:
    """Times from a ``times.csv`` beside or above the samples' folder, when there is one."""
    if not samples:
        return None
    folder = Path(samples[0].path).parent
    for candidate in (folder / TIMES_CSV, folder.parent / TIMES_CSV):
        if candidate.is_file():
            table = read_times_file(candidate)
            return np.array([table.get(Path(s.path).name, math.nan) for s in samples])
    return None


def sample_times(dataset: ReidDataset, split: str, naming: str = "auto") -> np.ndarray | None:
    """Seconds of every sample of ``split`` (``train``, ``query``, ``gallery``); NaN where
    unknown; ``None`` when the split has no source of times at all."""
    if naming not in NAMINGS:
        raise CaclError(f"times must be one of {', '.join(NAMINGS)}, got {naming!r}")
    samples: list[Sample] = getattr(dataset, split)
    if naming == "auto" and split == "train" and dataset.sightings:
        if dataset.clock != "site":
            return None
        return np.array([dataset.sightings[s.path].time for s in samples], dtype=float)
    if naming in ("auto", "file"):
        found = _from_file(samples)
        if found is not None or naming == "file":
            return found
    if naming == "market" or (naming == "auto" and dataset.name == "market1501"):
        return np.array([market_time(s.path) for s in samples])
    if naming == "duke" or (naming == "auto" and dataset.name == "dukemtmcreid"):
        return np.array([duke_time(s.path) for s in samples])
    return None


def require_times(dataset: ReidDataset, split: str, naming: str = "auto") -> np.ndarray:
    """:func:`sample_times`, refused with what to give when any image of ``split`` has none."""
    times = sample_times(dataset, split, naming)
    if times is None or not np.isfinite(times).all():
        missing = (
            len(getattr(dataset, split)) if times is None else int((~np.isfinite(times)).sum())
        )
        where = dataset.root
        raise CaclError(
            f"time is needed for every {split} image, and {missing} of "
            f"{len(getattr(dataset, split))} in {dataset.name} ({where}) have none: give a "
            f"{TIMES_CSV} (name,time in seconds) beside the images, Market-1501 or DukeMTMC-reID "
            "file names (--times market|duke), or a site's crops with one clock (cacl crops with "
            "start times)"
        )
    return times
