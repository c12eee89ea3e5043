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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Every server process started here, stopped at the end of the session whatever happened
#: (tests/conftest.py), so none outlives the suite.
STARTED: list = []


def stop_all() -> None:
    while STARTED:
        stop_server(STARTED.pop())


def start_server(index: Path, *args: str, timeout: float = 120.0):
    """A real ``cacl serve`` process on a free loopback port: ``(process, base url)``, once it
    answers ``/api/stats``."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    log = open(index.parent / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed by the process
    command = [sys.executable, "-m", "cacl", "serve", str(index), "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [*command, "--device", "cpu", "--no-access-log", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    STARTED.append(process)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"cacl serve exited with {process.returncode}:\n"
                + (index.parent / f"serve-{port}.log").read_text()
            )
        try:
            with urllib.request.urlopen(f"{url}/api/stats", timeout=2) as response:
                if response.status in (200, 401):
                    return process, url
        except OSError as exc:
            if getattr(exc, "code", None) == 401:
                return process, url
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"cacl serve did not answer within {timeout} s")


def stop_server(process) -> None:
    import subprocess

    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
