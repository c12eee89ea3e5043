"""The sample and dataset types shared by every reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple


class Sample(NamedTuple):
    """One image: its path, person id (as in the file name; -1 when unknown) and 0-based camera."""

    path: str
    pid: int
    camid: int


class Sighting(NamedTuple):
    """Where and when a training crop was seen: its tracklet (0..T-1 over the training set, one
    person in one camera) and its time in seconds (NaN: unknown)."""

    tracklet: int
    time: float
    frame: int = -1  # the frame of its camera's video (-1: unknown)
    box: tuple[float, float, float, float] | None = None  # left, top, width, height in the frame


def split_stats(samples: list[Sample]) -> tuple[int, int, int]:
    """Return ``(identities, images, cameras)`` of a split; unknown ids (-1) are not counted."""
    pids = {s.pid for s in samples if s.pid >= 0}
    cams = {s.camid for s in samples}
    return len(pids), len(samples), len(cams)


@dataclass
class ReidDataset:
    """A re-ID dataset: ``train``, ``query`` and ``gallery`` lists of :class:`Sample`.

    ``query`` and ``gallery`` are empty for training-only data (the ``folder`` reader).
    """

    name: str
    root: Path
    train: list[Sample]
    query: list[Sample] = field(default_factory=list)
    gallery: list[Sample] = field(default_factory=list)
    #: Training image path -> its :class:`Sighting`, when the folder has a ``tracklets.csv``.
    sightings: dict[str, Sighting] = field(default_factory=dict)
    #: ``site``: the times of all cameras are on one clock; ``camera``: per camera only.
    clock: str = "none"

    @property
    def has_test_split(self) -> bool:
        return bool(self.query) and bool(self.gallery)

    @property
    def num_train_pids(self) -> int:
        return split_stats(self.train)[0]

    @property
    def num_train_cams(self) -> int:
        return split_stats(self.train)[2]

    @property
    def has_tracklets(self) -> bool:
        return bool(self.sightings)

    def summary(self) -> str:
        """A small table of identities, images and cameras per split (as torchreid prints)."""
        lines = [
            f"=> {self.name} loaded from {self.root}",
            "  ----------------------------------------",
            "  subset   | # ids | # images | # cameras",
            "  ----------------------------------------",
        ]
        for split in ("train", "query", "gallery"):
            samples = getattr(self, split)
            if not samples and split != "train":
                continue
            ids, imgs, cams = split_stats(samples)
            lines.append(f"  {split:<8} | {ids:5d} | {imgs:8d} | {cams:9d}")
        lines.append("  ----------------------------------------")
        return "\n".join(lines)
