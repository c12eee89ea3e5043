"""Embedding uploaded crops with the index's model: concurrent requests share forward passes.

One crop through the network costs about what a few do together (on a CPU, most of a small
batch's time is the per-layer overhead, not the arithmetic), and one forward pass already uses
every core. So :class:`Embedder` runs one pass at a time, and the caller that gets to run it
takes every request waiting at that moment (up to ``max_batch`` images) into the same batch;
the others find their features ready when their turn comes. A batch that fails is retried one
request at a time, so that one request's failure is its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cacl.inference.extractor import FeatureExtractor


@dataclass
class _Job:
    images: list[Image.Image]
    features: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = False


class Embedder:
    """Features of PIL images by a :class:`FeatureExtractor`, for many threads at once."""

    def __init__(self, extractor: FeatureExtractor, max_batch: int = 32) -> None:
        self.extractor, self.max_batch = extractor, max(1, max_batch)
        self._pass = threading.Lock()  # one forward pass at a time
        self._queue_lock = threading.Lock()
        self._waiting: list[_Job] = []

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        job = _Job(list(images))
        with self._queue_lock:
            self._waiting.append(job)
        with self._pass:
            while not job.done:  # else an earlier pass answered it
                self._run(self._take())
        if job.error is not None:
            raise job.error
        assert job.features is not None
        return job.features

    def _take(self) -> list[_Job]:
        """The waiting jobs, oldest first, up to ``max_batch`` images (at least one job)."""
        with self._queue_lock:
            taken, count = [], 0
            while self._waiting and (
                not taken or count + len(self._waiting[0].images) <= self.max_batch
            ):
                job = self._waiting.pop(0)
                taken.append(job)
                count += len(job.images)
            return taken

    def _run(self, jobs: list[_Job]) -> None:
        try:
            images = [image for job in jobs for image in job.images]
            features = self.extractor(images, progress=False).numpy()
        except BaseException as exc:  # noqa: BLE001 - each job gets its own answer below
            if len(jobs) == 1:
                jobs[0].error, jobs[0].done = exc, True
                return
            for job in jobs:
                self._run([job])
            return
        start = 0
        for job in jobs:
            job.features = features[start : start + len(job.images)]
            job.done, start = True, start + len(job.images)
