"""The set-up of ``bench_serve.py``: the random index and its checkpoint, the times and transit
model of the ``name+st`` phase, the ``cacl serve`` process, and the request bodies."""

from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CAMERAS = 6
BUILD_FACTS = "bench_build.json"  # beside the index: the build time, kept for later runs


# ---------------------------------------------------------------------- the index


def make_checkpoint(folder: Path, backbone: str, height: int, width: int) -> tuple[Path, int]:
    """A checkpoint of ``backbone`` (random weights) and its feature length."""
    import torch

    from cacl.checkpoints.io import atomic_save
    from cacl.config import Config
    from cacl.models import CACLNet

    path = folder / "run" / "best.pt"
    cfg = Config()
    cfg.data.height, cfg.data.width, cfg.model.backbone = height, width, backbone
    cfg.model.pretrained, cfg.model.gray_branch, cfg.model.predictor = "none", False, False
    net = CACLNet(backbone, "none", gray_branch=False, predictor=False).eval()
    with torch.no_grad():
        dim = int(net(torch.zeros(1, 3, height, width)).shape[1])
    if not path.is_file():
        state = {"format": "cacl-model-v1", "config": cfg.to_dict(), "epoch": 0}
        atomic_save({**state, "model": net.state_dict()}, path)
    return path, dim


def random_rows(n: int, dim: int, seed: int = 0, chunk: int = 50_000) -> np.ndarray:
    """``bench_index.py --random``'s rows: standard normal, L2-normalised (chunk by chunk)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - start), dim)).astype(np.float32)
        out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def index_names(n: int) -> list[str]:
    return [f"{i // 8:05d}_c{i % CAMERAS + 1}s1_{i:07d}_00.jpg" for i in range(n)]


def build_index(args: argparse.Namespace) -> tuple[Path, dict]:
    from cacl.inference import GalleryIndex
    from cacl.inference.index import file_sha256

    work = Path(args.workdir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    checkpoint, dim = make_checkpoint(work, args.backbone, args.height, args.width)
    folder = work / f"index-{args.size}-{args.backbone}-{args.kind}"
    facts = {"dim": dim, "build_s": None}
    if (folder / "manifest.json").is_file():
        print(f"index: {folder} (built before)")
        if (folder / BUILD_FACTS).is_file():  # how long it took, for the record
            facts["build_s"] = json.loads((folder / BUILD_FACTS).read_text())["build_s"]
        # a fresh copy of the snapshot's state: drop what earlier runs added
        for name in ("additions.log", "writer.lock", "labels.log"):
            (folder / name).unlink(missing_ok=True)
        for name in ("added", "queries", "thumbs"):
            shutil.rmtree(folder / name, ignore_errors=True)
        return folder, facts
    start = time.perf_counter()
    x = random_rows(args.size, dim)
    info = {
        "root": str(work / "no-images"),
        "height": args.height,
        "width": args.width,
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
    }
    names = index_names(args.size)
    first = min(len(x), 100_000)  # then in steps, with progress: 10^6 HNSW takes a while
    index = GalleryIndex.build(x[:first], names[:first], kind=args.kind, info=info)
    for begin in range(first, len(x), 100_000):
        end = min(len(x), begin + 100_000)
        index.add(x[begin:end], names[begin:end])
        elapsed = time.perf_counter() - start
        print(f"index: {end:,} of {len(x):,} rows in {elapsed:.0f} s", flush=True)
    del x
    index.save(folder)
    facts["build_s"] = time.perf_counter() - start
    (folder / BUILD_FACTS).write_text(json.dumps({"build_s": facts["build_s"]}))
    print(f"index: {args.size} x {dim} ({index.kind}) built in {facts['build_s']:.1f} s: {folder}")
    return folder, facts


def write_times(folder: Path, names: list[str]) -> Path:
    """A ``times.csv`` of random times (an hour) in the index's gallery root and a random
    transit model of the cameras (``transit.json`` in the index folder), for ``name+st``."""
    import numpy as np

    from cacl.temporal import TransitModel

    root = Path(json.loads((folder / "manifest.json").read_text())["root"])
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    times = rng.uniform(0, 3600, len(names))
    lines = "".join(f"{n},{t:.2f}\n" for n, t in zip(names, times))
    (root / "times.csv").write_text("name,time\n" + lines)
    counts = rng.integers(0, 3, (CAMERAS, CAMERAS, 600))
    path = folder.parent / "transit.json"
    TransitModel(counts, 1.0, np.full((CAMERAS, CAMERAS), 5.0)).save(path)
    return path


# ---------------------------------------------------------------------- the server


def free_port() -> int:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    folder: Path, port: int, log_path: Path, options: list[str]
) -> tuple[subprocess.Popen, float]:
    command = [sys.executable, "-m", "cacl", "serve", str(folder), "--port", str(port)]
    command += ["--device", "cpu", "--no-access-log", *options]
    start = time.perf_counter()
    log = open(log_path, "wb")  # noqa: SIM115 - the server's output, closed with the process
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    while time.perf_counter() - start < 600:
        if process.poll() is not None:
            raise SystemExit(f"cacl serve exited:\n{log_path.read_text()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/stats")
            if connection.getresponse().status == 200:
                return process, time.perf_counter() - start
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("cacl serve did not answer within 600 s")


def server_memory_mb(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key = line.split(":")[0]
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(line.split()[1]) / 1024
    return {"peak_rss_mb": out.get("VmHWM", 0.0), "rss_mb": out.get("VmRSS", 0.0)}


def crop_jpeg(seed: int, height: int = 128, width: int = 64) -> bytes:
    """A person-sized JPEG with some structure (blocks of colour and noise), unique per seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((height // 8, width // 4, 1), dtype=np.uint8))
    noise = rng.integers(-12, 13, pixels.shape)
    pixels = np.clip(pixels.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = f"cacl-bench-{random.getrandbits(64):016x}"
    parts = []
    for key, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        )
    for key, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
