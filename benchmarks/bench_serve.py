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
import json
import os
import random
import resource
import shlex
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
from _serve_setup import (  # noqa: E402
    CAMERAS,
    build_index,
    crop_jpeg,
    free_port,
    index_names,
    multipart,
    server_memory_mb,
    start_server,
    write_times,
)
from _stages import load_average  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "serve.jsonl"
GOALS = {"name_rps": 300.0, "name_p99_ms": 50.0, "upload_p99_ms": 250.0}


# ---------------------------------------------------------------------- the clients


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
