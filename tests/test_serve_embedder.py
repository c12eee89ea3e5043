"""cacl serve's Embedder: concurrent requests share forward passes, each gets its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from cacl.serve.embedder import Embedder


def crop(value: int) -> Image.Image:
    return Image.fromarray(np.full((16, 8, 3), value, dtype=np.uint8))


class SlowNet:
    """A stand-in extractor: the feature of an image is (its pixel value, 1); each pass takes
    a while (so that requests queue up) and is recorded; a pixel value of 13 makes it fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, images, progress=False):
        values = [int(np.asarray(image)[0, 0, 0]) for image in images]
        with self.lock:
            self.batches.append(values)
        time.sleep(0.05)
        if 13 in values:
            raise RuntimeError("cannot embed 13")
        return torch.tensor([[v, 1.0] for v in values])


def ask_together(embedder: Embedder, requests: list[list[int]]) -> list:
    def ask(values):
        try:
            return embedder([crop(v) for v in values])
        except RuntimeError as exc:
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        futures = []
        for values in requests:
            futures.append(pool.submit(ask, values))
            time.sleep(0.005)  # in this order
        return [f.result() for f in futures]


def test_concurrent_requests_share_passes_and_get_their_own_rows():
    net = SlowNet()
    embedder = Embedder(net, max_batch=32)
    requests = [[i] for i in range(1, 9)] + [[20, 21, 22]]
    answers = ask_together(embedder, requests)
    for values, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer, [[v, 1.0] for v in values])
    assert len(net.batches) < len(requests)  # some passes were shared
    assert sorted(v for b in net.batches for v in b) == sorted(v for r in requests for v in r)


def test_batches_hold_at_most_max_batch_images_but_a_big_request_runs_whole():
    net = SlowNet()
    embedder = Embedder(net, max_batch=3)
    requests = [[1], [2], [3], [4], [5], [30, 31, 32, 33, 34], [6]]
    answers = ask_together(embedder, requests)
    for values, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer[:, 0], values)
    assert [30, 31, 32, 33, 34] in net.batches  # alone, whole
    assert all(len(b) <= 3 for b in net.batches if 30 not in b)


def test_a_failing_request_fails_alone():
    net = SlowNet()
    embedder = Embedder(net)
    requests = [[1], [2], [13], [4], [5, 6]]
    answers = ask_together(embedder, requests)
    assert isinstance(answers[2], RuntimeError) and "13" in str(answers[2])
    for values, answer in zip(requests, answers):
        if 13 not in values:
            np.testing.assert_array_equal(answer[:, 0], values)


def test_batched_features_equal_one_at_a_time(tmp_path):
    from cacl.inference import FeatureExtractor
    from model_factory import save_random_checkpoint

    checkpoint = save_random_checkpoint(tmp_path / "best.pt", "resnet18", 32, 16)
    extractor = FeatureExtractor(checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)) for _ in range(6)]
    alone = [extractor([image], progress=False).numpy() for image in images]
    embedder = Embedder(extractor)
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda image: embedder([image]), images))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b, a, atol=1e-5)
