"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (16, 8)) -> Path:
    """Write a small random RGB JPEG (H x W = size) at ``path``, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def image_writer():
    return write_image


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh CACL_CACHE folder (synthetic sets, weights) shared by one test module."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CACL_CACHE", str(path))
        yield path


@pytest.fixture(scope="session", autouse=True)
def no_server_outlives_the_suite():
    """Stop every ``cacl serve`` a test started, even one a skipped or failed test left."""
    yield
    from serve_fixtures import stop_all

    stop_all()
