"""Ranking by appearance and time in ``cacl serve`` (``st=1``): the times of the indexed images
and the re-ranking of a search's nearest images by the fused score of ``cacl eval --st``.

The appearance search finds the ``candidates`` nearest images (faiss, as for any search); those
are re-ordered by the fused distance of ``cacl eval --st`` (``1 - s - 0.2 log(p + 0.2)``,
:data:`cacl.temporal.fusion.DEFAULT_FUSION`): ``s = 1 - d / 2`` the cosine similarity (the index's
distances are ``2 - 2 cos`` of L2-normalised features), ``p`` the transit probability of the
query's camera and time against each image's. An image outside the candidates cannot enter the
answer: time re-orders what looks alike, it does not find what does not.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cacl.inference.live import Hit
from cacl.temporal.fusion import fused_distance
from cacl.temporal.transit import TransitModel

_DIGITS = re.compile(r"(\d+)\D*$")


def index_times(names: Iterable[str], root: str | os.PathLike | None) -> dict[str, float]:
    """Image name -> seconds, from the gallery root's ``tracklets.csv`` (``cacl crops``) or its
    ``times.csv`` (``name,time``); empty without either."""
    if root is None:
        return {}
    root = Path(root)
    table: dict[str, float] = {}
    if (root / "tracklets.csv").is_file():
        from cacl.data.readers.tracklets import read_tracklets_csv

        table = {k: r.time for k, r in read_tracklets_csv(root / "tracklets.csv").items()}
    elif (root / "times.csv").is_file():
        from cacl.data.times import read_times_file

        table = read_times_file(root / "times.csv")
    out = {}
    for name in names:
        value = table.get(Path(name).name)
        if value is not None and math.isfinite(value):
            out[name] = float(value)
    return out


def camera_number(camera: str | None) -> int:
    """The 0-based transit-model camera of an index camera name: its last number minus one
    (``2``, ``c2``, ``cam2`` -> 1); -1 when it has none."""
    if camera is None:
        return -1
    match = _DIGITS.search(str(camera))
    return int(match.group(1)) - 1 if match else -1


@dataclass
class TimeRanking:
    model: TransitModel
    times: dict[str, float]
    candidates: int = 100

    def time_of(self, name: str) -> float | None:
        return self.times.get(name)

    def rank(self, hits: list[Hit], camera: str | None, time: float, top: int) -> list[tuple]:
        """``(hit, fused distance, transit probability)`` of the best ``top`` of ``hits`` (the
        appearance candidates) for a query seen in ``camera`` at ``time``."""
        if not hits:
            return []
        similarity = 1.0 - np.array([h.distance for h in hits]) / 2.0
        cams = np.array([camera_number(h.camera) for h in hits])
        times = np.array([self.times.get(h.name, math.nan) for h in hits])
        probability = self.model.probability(camera_number(camera), time, cams, times)
        fused = fused_distance(similarity, probability)
        order = np.argsort(fused, kind="stable")[:top]
        return [(hits[i], float(fused[i]), float(probability[i])) for i in order]
