"""A tiny index folder for the ``cacl serve`` tests: 12 random crops of 3 cameras, a random
resnet18 checkpoint at 32 x 16 (built once per session, copied per test)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import write_image
from model_factory import save_random_checkpoint

GALLERY_SIZE = 12


def gallery_name(i: int) -> str:
    return f"{i:04d}_c{i % 3 + 1}s1_{i:06d}_00.jpg"


def jpeg_bytes(seed: int, size: tuple[int, int] = (40, 20)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def make_template(root: Path) -> Path:
    """``root/index``: the index of ``root/gallery`` with ``root/run/best.pt``."""
    from cacl.cli import main

    checkpoint = save_random_checkpoint(root / "run" / "best.pt", "resnet18", 32, 16)
    for i in range(GALLERY_SIZE):
        write_image(root / "gallery" / gallery_name(i), seed=i, size=(40, 20))
    args = ["index", "build", str(checkpoint), str(root / "gallery"), str(root / "index")]
    assert main([*args, "--device", "cpu", "--no-progress"]) == 0
    return root / "index"


def copy_index(template: Path, to: Path) -> Path:
    """A fresh copy of the template index (its manifest keeps the template's gallery root)."""
    shutil.copytree(template, to)
    return to
