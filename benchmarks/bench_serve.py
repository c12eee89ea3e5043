"""Load test of ``cacl serve`` on loopback: searches by name and by upload, with and without adds.

An index of ``--size`` random unit features (the synthetic generator of ``bench_index.py
--random``: normal rows, L2-normalised; names in the Market style with 6 cameras) is built once
into ``--workdir`` (``kind auto``: exact below 10^5 images, HNSW from there), with a checkpoint of
``--backbone`` (random weights: the timing of a forward pass does not depend on them) whose
feature length sets the dimension. A real ``cacl serve`` process is started on a free loopback
port, and for ``--duration`` seconds per phase:

- ``name``: ``--clients`` clients search by a random indexed name (top 10);
- ``upload``: ``--upload-clients`` clients upload a 128 x 64 JPEG crop and search with it (a
  new crop each time, so that every upload is encoded: the server remembers crops it has seen);
- ``name+adds`` / ``upload+adds``: the same, while one more client adds ``--adds`` new images,
  one per request (the phase lasts until all are added, at least ``--duration`` seconds).

Each client keeps one HTTP/1.1 connection open and sends its next request when the answer
arrives. Printed per phase: requests, requests/s, p50 / p99 / max latency, errors; the server's
peak resident memory (``VmHWM``); whether the goals are met (search by name >= 300 requests/s
with p99 <= 50 ms; upload p99 <= 250 ms; every add answered, no failed request; ``name+st``:
searches by name ranked by appearance and time, over random times and a random transit
model, p99 <= 50 ms too; ``name+labels``: ``--labellers`` people each mark a random pair in the
labelling view every ``--label-interval`` seconds beside the searches, and afterwards the labels
the server holds per person must equal the clicks it acknowledged: no click lost). One JSON line per run is appended to ``benchmarks/results/serve.jsonl`` (``--no-record``: not).

    nice python benchmarks/bench_serve.py                            # 10^5 images, 60 s a phase
    python benchmarks/bench_serve.py --duration 5 --size 10000 --adds 100   # smoke run
    python benchmarks/bench_serve.py --size 1000000 --kind hnsw      # the 10^6 figures
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _labellers import Labellers  # noqa: E402
from _stages import load_average  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "serve.jsonl"
CAMERAS = 6
BUILD_FACTS = "bench_build.json"  # beside the index: the build time, kept for later runs
GOALS = {"name_rps": 300.0, "name_p99_ms": 50.0, "upload_p99_ms": 250.0}


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
    import socket

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


# ---------------------------------------------------------------------- the clients


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


@dataclass
class Tally:
    """Latencies (s) and errors of one kind of request."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.latencies.append(seconds)
            else:
                self.errors.append(error)

    def summary(self, wall: float) -> dict:
        lat = np.array(self.latencies) * 1000
        ok = len(lat)
        return {
            "requests": ok + len(self.errors),
            "rps": (ok + len(self.errors)) / wall if wall else 0.0,
            "p50_ms": float(np.percentile(lat, 50)) if ok else None,
            "p99_ms": float(np.percentile(lat, 99)) if ok else None,
            "max_ms": float(lat.max()) if ok else None,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
        }


class Client:
    """One keep-alive connection; ``request`` times a whole request and checks its status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body=None, headers=None, expect=200):
        start = time.perf_counter()
        try:
            self.connection.request(method, path, body=body, headers=headers or {})
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return time.perf_counter() - start, f"{type(exc).__name__}: {exc}", None
        seconds = time.perf_counter() - start
        if response.status != expect:
            return seconds, f"HTTP {response.status}: {data[:200]!r}", None
        return seconds, None, data


def run_phase(
    port: int,
    names: list[str],
    kind: str,
    clients: int,
    duration: float,
    adds: int,
    add_seed: int,
    st: bool = False,
    labellers: Labellers | None = None,
) -> dict:
    stop = threading.Event()
    searches, additions = Tally(), Tally()
    added = [0]

    def search_loop(worker: int) -> None:
        client, rng = Client(port), random.Random(worker)
        sent = 0
        while not stop.is_set():
            if kind == "name":
                fields = {"name": rng.choice(names), "top": 10, **({"st": 1} if st else {})}
                query = urllib.parse.urlencode(fields)
                seconds, error, _ = client.request("GET", f"/api/search?{query}")
            else:
                # a new crop every time: the server keeps the features of a crop it has seen (by
                # its bytes), and each upload must be encoded by the network
                crop = crop_jpeg(add_seed + 500_000 + 10_000 * worker + sent)
                sent += 1
                body, ctype = multipart({"top": "10"}, [("image", "q.jpg", crop)])
                seconds, error, _ = client.request(
                    "POST", "/api/search", body, {"Content-Type": ctype}
                )
            searches.add(seconds, error)

    def add_loop() -> None:
        client = Client(port)
        for i in range(adds):
            data = crop_jpeg(add_seed + i)
            camera = i % CAMERAS + 1
            body, ctype = multipart({}, [("image", f"new_c{camera}s9_{add_seed + i}.jpg", data)])
            seconds, error, _ = client.request(
                "POST", "/api/images", body, {"Content-Type": ctype}, expect=201
            )
            additions.add(seconds, error)
            added[0] += error is None

    threads = [threading.Thread(target=search_loop, args=(w,)) for w in range(clients)]
    if labellers is not None:
        threads += labellers.threads(stop)
    adder = threading.Thread(target=add_loop) if adds else None
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for thread in threads + ([adder] if adder else []):
        thread.start()
    time.sleep(duration)
    if adder is not None:
        adder.join(timeout=max(0.0, 10 * duration))
    stop.set()
    wall = time.perf_counter() - start
    for thread in threads:
        thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "clients": clients,
        "seconds": wall,
        "search": searches.summary(wall),
        "client_cpu_s": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
    }
    if adds:
        result["adds"] = {**additions.summary(wall), "added": added[0], "asked": adds}
    if labellers is not None:
        result["labels"] = labellers.result(wall, Client(port))
    return result


# ---------------------------------------------------------------------- report


def fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_phase(name: str, result: dict) -> None:
    s = result["search"]
    print(
        f"{name:12s} {result['clients']:3d} clients  {s['requests']:7d} requests  "
        f"{s['rps']:7.1f} req/s  p50 {fmt(s['p50_ms'])} ms  p99 {fmt(s['p99_ms'])} ms  "
        f"max {fmt(s['max_ms'])} ms  errors {s['errors']}  "
        f"(server peak {result['memory']['peak_rss_mb']:.0f} MB, client CPU "
        f"{result['client_cpu_s']:.1f} s)"
    )
    if "adds" in result:
        a = result["adds"]
        print(
            f"{'':12s} adds: {a['added']} of {a['asked']} answered, p50 {fmt(a['p50_ms'])} ms, "
            f"p99 {fmt(a['p99_ms'])} ms, errors {a['errors']}"
        )
    if "labels" in result:
        lab = result["labels"]
        print(
            f"{'':12s} labels: {lab['labellers']} labellers, {lab['acknowledged']} clicks "
            f"acknowledged, {lab['lost']} lost, {lab['conflicts']} refused as contradictions, "
            f"p50 {fmt(lab['p50_ms'])} ms, p99 {fmt(lab['p99_ms'])} ms, errors {lab['errors']}"
        )
    for error in s["first_errors"] + result.get("adds", {}).get("first_errors", []):
        print(f"{'':12s} error: {error}")


def goals(phases: dict) -> dict[str, bool]:
    out = {}
    if "name" in phases:
        s = phases["name"]["search"]
        out["name >= 300 req/s"] = s["rps"] >= GOALS["name_rps"]
        out["name p99 <= 50 ms"] = (s["p99_ms"] or 1e9) <= GOALS["name_p99_ms"]
    if "upload" in phases:
        out["upload p99 <= 250 ms"] = (phases["upload"]["search"]["p99_ms"] or 1e9) <= 250
    for name, result in phases.items():
        if "adds" in result:
            a = result["adds"]
            out[f"{name}: all adds answered"] = a["added"] == a["asked"] and a["errors"] == 0
    for name in ("name+st", "name+labels"):
        if name in phases:
            p99 = phases[name]["search"]["p99_ms"] or 1e9
            out[f"{name} p99 <= 50 ms"] = p99 <= GOALS["name_p99_ms"]
    if "name+labels" in phases:
        lab = phases["name+labels"]["labels"]
        out["name+labels: no click lost"] = lab["lost"] == 0 and lab["acknowledged"] > 0
    out["no failed request"] = all(
        r["search"]["errors"] == 0
        and r.get("adds", {}).get("errors", 0) == 0
        and r.get("labels", {}).get("errors", 0) == 0
        for r in phases.values()
    )
    return out


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="indexed images (10^5)")
    parser.add_argument("--kind", default="auto", choices=("auto", "flat", "hnsw", "ivf"))
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase (60)")
    parser.add_argument("--clients", type=int, default=16, help="search-by-name clients (16)")
    parser.add_argument("--upload-clients", type=int, default=4, help="upload clients (4)")
    parser.add_argument("--adds", type=int, default=1000, help="images added per adds phase")
    parser.add_argument(
        "--phases",
        default="name,upload,name+adds,upload+adds",
        help="comma-separated, of name, upload, name+adds, upload+adds, name+st (ranked by "
        "appearance and time: random times and transit model), name+labels (--labellers people "
        "marking pairs beside the searches)",
    )
    parser.add_argument("--labellers", type=int, default=4, help="people labelling (4)")
    parser.add_argument(
        "--label-interval", type=float, default=0.25, help="seconds between one's clicks (0.25)"
    )
    parser.add_argument("--backbone", default="efficientnet_lite0", help="the model of uploads")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument(
        "--workdir",
        default=str(Path(os.environ.get("CACL_CACHE", "~/.cache/cacl")) / "bench-serve"),
        help="where the index and checkpoint are kept between runs",
    )
    parser.add_argument("--build-only", action="store_true", help="build the index and stop")
    parser.add_argument(
        "--serve-options",
        default="",
        help="more options for 'cacl serve', e.g. \"--headroom 0 --search-threads 4\"",
    )
    parser.add_argument("--out", default=str(RESULTS), help="JSON lines file to append to")
    parser.add_argument("--no-record", action="store_true", help="do not append a JSON line")
    args = parser.parse_args()
    phases_asked = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases_asked) - {
        "name",
        "upload",
        "name+adds",
        "upload+adds",
        "name+st",
        "name+labels",
    }
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")

    print(load_average())
    folder, facts = build_index(args)
    if args.build_only:
        return
    port = free_port()
    options = shlex.split(args.serve_options)
    if "name+st" in phases_asked:
        options += ["--transit", str(write_times(folder, index_names(args.size)))]
    process, startup = start_server(folder, port, folder.parent / "serve.log", options)
    print(f"server: pid {process.pid}, port {port}, ready in {startup:.1f} s")
    phases: dict[str, dict] = {}
    try:
        names = index_names(args.size)
        for n, phase in enumerate(phases_asked):
            kind = "name" if phase.startswith("name") else "upload"
            clients = args.clients if kind == "name" else args.upload_clients
            adds = args.adds if phase.endswith("+adds") else 0
            labellers = None
            if phase.endswith("+labels"):
                labellers = Labellers(lambda: Client(port), Tally, names, args.labellers,
                                      args.label_interval, seed=n)  # fmt: skip
            result = run_phase(port, names, kind, clients, args.duration, adds, 1_000_000 * (n + 1),
                               st=phase.endswith("+st"), labellers=labellers)  # fmt: skip
            result["memory"] = server_memory_mb(process.pid)
            phases[phase] = result
            print_phase(phase, result)
    finally:
        process.terminate()
        process.wait(timeout=30)
    met = goals(phases)
    for goal, ok in met.items():
        print(f"goal {goal}: {'met' if ok else 'NOT met'}")
    record = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git_commit(),
        "load_average": load_average(),
        "cpus": os.cpu_count(),
        "size": args.size,
        "kind": args.kind,
        "dim": facts["dim"],
        "backbone": args.backbone,
        "image": [args.height, args.width],
        "duration_s": args.duration,
        "build_s": facts["build_s"],
        "startup_s": startup,
        "serve_options": options,
        "phases": phases,
        "peak_rss_mb": max((p["memory"]["peak_rss_mb"] for p in phases.values()), default=None),
        "goals": met,
    }
    if not args.no_record:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"recorded in {out}")


if __name__ == "__main__":
    main()
