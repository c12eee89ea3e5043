"""Tracks and detections in the MOTChallenge text format, in the variants trackers write.

One line per box: ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,x,y,z`` with 1-based frames
(MOTChallenge). The variants read here, detected from the file itself (:func:`detect_variant`):

- ``motchallenge``: 6 to 10 columns, columns 8-10 absent or ``-1`` (world coordinates unused);
  column 7 is the confidence (1 when absent). Tracker output of ByteTrack, BoT-SORT, DeepSORT.
- ``mot17-gt``: exactly 9 columns, column 7 a 0/1 "consider" flag, column 8 the class (1-12),
  column 9 the visibility in [0, 1] (MOT16/17/20 ``gt.txt``). Only rows with the flag set and a
  person class are kept: 1 (pedestrian) and 7 (static person); the confidence is 1.
- ``boxmot``: white-space separated, column 8 a class that is not ``-1`` (COCO numbering: 0 is a
  person), column 7 the confidence (integers are accepted). Only class 0 is kept.

Separators: commas, or any white space (tabs, several blanks); one separator kind per file.
Values may be integers or floats. An id of ``-1`` marks a detection without a track
(``det/det.txt``); :attr:`MotTracks.detections_only` says when every row is one.

A line that does not parse (too few columns, a value that is not a number, a frame below 1) is a
:class:`MotFormatError` naming the file and the line; empty lines and ``#`` comments are skipped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cacl.errors import DatasetError

VARIANTS = ("motchallenge", "mot17-gt", "boxmot")
#: Classes kept: MOT17 ground truth's pedestrian and static person; COCO's person (BoxMOT).
MOT17_PERSON_CLASSES = (1, 7)
COCO_PERSON_CLASS = 0
_SPLIT = re.compile(r"[,\s]+")


class MotFormatError(DatasetError):
    """A tracks or detections file is not in the MOTChallenge text format."""


@dataclass
class MotTracks:
    """The boxes of one file, row by row (all arrays of the same length)."""

    path: Path
    variant: str
    separator: str  # "comma" or "whitespace"
    frame: np.ndarray  # int64, 1-based
    track: np.ndarray  # int64, -1 for a detection without a track
    box: np.ndarray  # float64 (n, 4): left, top, width, height in pixels (not clipped)
    conf: np.ndarray  # float64
    dropped: dict[str, int] = field(default_factory=dict)  # rows not kept, by reason

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def detections_only(self) -> bool:
        return len(self) > 0 and bool(np.all(self.track < 0))

    def describe(self) -> str:
        drops = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n)
        return (
            f"{self.path}: {self.variant} format ({self.separator} separated), {len(self)} boxes, "
            f"{len(np.unique(self.track[self.track >= 0]))} tracks"
            + (f"; not kept: {drops}" if drops else "")
        )


def _split_lines(path: Path) -> tuple[list[tuple[int, list[str]]], str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MotFormatError(f"{path}: cannot read the tracks file: {exc}") from exc
    rows: list[tuple[int, list[str]]] = []
    comma = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        has_comma = "," in line
        if comma is None:
            comma = has_comma
        elif has_comma != comma:
            raise MotFormatError(
                f"{path}, line {number}: mixes comma and white-space separated lines"
            )
        parts = [p for p in (line.split(",") if comma else _SPLIT.split(line))]
        rows.append((number, [p.strip() for p in parts]))
    return rows, "comma" if comma or comma is None else "whitespace"


def _to_array(path: Path, rows: list[tuple[int, list[str]]]) -> np.ndarray:
    width = max((len(parts) for _, parts in rows), default=10)
    table = np.full((len(rows), max(width, 10)), -1.0)
    for i, (number, parts) in enumerate(rows):
        if len(parts) < 6:
            raise MotFormatError(
                f"{path}, line {number}: {len(parts)} columns; MOTChallenge lines have at least 6 "
                "(frame,id,bb_left,bb_top,bb_width,bb_height[,conf,x,y,z])"
            )
        try:
            table[i, : len(parts)] = [float(p) for p in parts]
        except ValueError:
            bad = next(p for p in parts if not _is_number(p))
            raise MotFormatError(f"{path}, line {number}: {bad!r} is not a number") from None
        if not np.all(np.isfinite(table[i, :6])):
            raise MotFormatError(f"{path}, line {number}: frame, id and box must be finite")
        frame = table[i, 0]
        if frame < 1 or frame != int(frame):
            raise MotFormatError(
                f"{path}, line {number}: frame {parts[0]}; MOTChallenge frames are whole numbers "
                "from 1"
            )
        if table[i, 1] != int(table[i, 1]) or table[i, 1] < -1:
            raise MotFormatError(
                f"{path}, line {number}: id {parts[1]}; ids are whole numbers (-1: no track)"
            )
    return table


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect_variant(table: np.ndarray, columns: int, separator: str) -> str:
    """The variant of a parsed file (see the module's docstring); ``columns``: the most columns
    of any line."""
    if len(table) == 0:
        return "motchallenge"
    c7, c8, c9 = table[:, 6], table[:, 7], table[:, 8]
    if (
        columns == 9
        and np.all(np.isin(c7, (0, 1)))
        and np.all((c8 >= 1) & (c8 <= 12) & (c8 == np.round(c8)))
        and np.all((c9 >= 0) & (c9 <= 1))
    ):
        return "mot17-gt"
    if separator == "whitespace" and columns >= 8 and np.any(c8 != -1):
        return "boxmot"
    return "motchallenge"


def read_mot(path: str | os.PathLike, variant: str = "auto") -> MotTracks:
    """Read one MOTChallenge text file (``variant``: ``auto`` or one of :data:`VARIANTS`)."""
    path = Path(path)
    if variant != "auto" and variant not in VARIANTS:
        raise MotFormatError(
            f"unknown tracks format {variant!r}; known: auto, {', '.join(VARIANTS)}"
        )
    rows, separator = _split_lines(path)
    table = _to_array(path, rows)
    columns = max((len(parts) for _, parts in rows), default=6)
    if variant == "auto":
        variant = detect_variant(table, columns, separator)
    keep = np.ones(len(table), dtype=bool)
    dropped: dict[str, int] = {}
    conf = table[:, 6].copy()
    if variant == "mot17-gt":
        ignored = table[:, 6] == 0
        other = ~np.isin(table[:, 7], MOT17_PERSON_CLASSES) & ~ignored
        dropped = {"marked not to consider": int(ignored.sum()), "not persons": int(other.sum())}
        keep &= ~ignored & ~other
        conf[:] = 1.0
    elif variant == "boxmot":
        other = table[:, 7] != COCO_PERSON_CLASS
        dropped = {"not persons": int(other.sum())}
        keep &= ~other
    elif columns < 7:
        conf[:] = 1.0
    table, conf = table[keep], conf[keep]
    return MotTracks(
        path=path,
        variant=variant,
        separator=separator,
        frame=table[:, 0].astype(np.int64),
        track=table[:, 1].astype(np.int64),
        box=table[:, 2:6].astype(np.float64),
        conf=conf.astype(np.float64),
        dropped=dropped,
    )


def write_mot(path: str | os.PathLike, frame, track, box, conf=None) -> None:
    """Write boxes as MOTChallenge tracker output (``frame,id,l,t,w,h,conf,-1,-1,-1``)."""
    box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
    conf = np.ones(len(box)) if conf is None else np.asarray(conf, dtype=np.float64)
    lines = [
        f"{int(f)},{int(t)},{b[0]:.2f},{b[1]:.2f},{b[2]:.2f},{b[3]:.2f},{c:.3f},-1,-1,-1\n"
        for f, t, b, c in zip(frame, track, box, conf, strict=True)
    ]
    Path(path).write_text("".join(lines))
