"""A real `cacl serve` process on loopback: kill -9 during adds loses nothing acknowledged,
searches beside the adds all succeed, the process refuses to expose itself without a token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from cacl.inference.live import LiveIndex  # noqa: E402
from serve_fixtures import (  # noqa: E402
    GALLERY_SIZE,
    copy_index,
    gallery_name,
    jpeg_bytes,
    make_template,
    start_server,
    stop_server,
)

TOKEN = "a-long-enough-test-token"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_template(tmp_path_factory.mktemp("serve-process"))


def test_kill_9_during_adds_loses_nothing_acknowledged(template, tmp_path):
    index = copy_index(template, tmp_path / "index")
    process, url = start_server(index)
    acknowledged: dict[str, bytes] = {}
    failures: list[str] = []
    searches = {"ok": 0}
    killed = threading.Event()
    lock = threading.Lock()

    def add(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(10_000):
                data = jpeg_bytes(10_000 * (worker + 1) + i)
                try:
                    response = client.post(
                        "/api/images", files=[("image", (f"w{worker}_{i}_c4s1.jpg", data))]
                    )
                except httpx.HTTPError:
                    return  # the server died with this add in flight: never acknowledged
                if response.status_code != 201:
                    failures.append(f"add: {response.status_code} {response.text}")
                    return
                with lock:
                    acknowledged[response.json()["added"][0]["name"]] = data

    def search() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not killed.is_set():
                try:
                    response = client.get(
                        "/api/search", params={"name": gallery_name(3), "top": 50}
                    )
                except httpx.HTTPError:
                    return
                if response.status_code != 200 and not killed.is_set():
                    failures.append(f"search: {response.status_code} {response.text}")
                    return
                searches["ok"] += 1

    threads = [threading.Thread(target=add, args=(w,)) for w in range(2)]
    threads += [threading.Thread(target=search) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 12 and time.monotonic() < deadline and not failures:
        time.sleep(0.05)
    with lock:  # kill while adds are in flight; what was acknowledged by now must survive
        process.send_signal(signal.SIGKILL)
        survivors = dict(acknowledged)
    killed.set()
    process.wait()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures[:3]
    assert len(survivors) >= 12 and searches["ok"] > 0
    assert acknowledged == survivors  # no answer came after the kill

    with LiveIndex.open(index, writable=True) as live:  # repairs a torn tail, if any
        assert len(live) >= GALLERY_SIZE + len(survivors)
        for name, data in survivors.items():
            assert name in live, name
            assert live.file_of(name).read_bytes() == data
            assert live.camera_of(name) == "4"
            hit = live.search(live.vector_of(name), 1)[0]
            assert hit.distance < 1e-5
    # and a restarted server serves them
    process, url = start_server(index)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            size = client.get("/api/stats").json()["size"]
            assert size >= GALLERY_SIZE + len(survivors)
            name = next(iter(survivors))
            assert client.get(f"/api/images/{name}").content == survivors[name]
            body = client.get("/api/search", params={"name": name, "top": 3}).json()
            assert len(body["results"]) == 3
    finally:
        stop_server(process)


def test_process_refuses_an_exposed_address_without_a_token(template):
    result = subprocess.run(
        [sys.executable, "-m", "cacl", "serve", str(template), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CACL_SERVE_TOKEN": ""},
    )
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr


def test_token_over_a_real_socket(template, tmp_path):
    index = copy_index(template, tmp_path / "index")
    env_token = {**os.environ}
    os.environ["CACL_SERVE_TOKEN"] = TOKEN  # from the environment: not in the process list
    try:
        process, url = start_server(index, "--read-only")
    finally:
        os.environ.clear()
        os.environ.update(env_token)
    try:
        assert TOKEN not in " ".join(process.args)
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/api/stats").status_code == 401
            headers = {"Authorization": f"Bearer {TOKEN}"}
            stats = client.get("/api/stats", headers=headers)
            assert stats.status_code == 200 and stats.json()["size"] == GALLERY_SIZE
            assert stats.json()["writable"] is False
            found = client.get(
                "/api/search", params={"name": gallery_name(0), "top": 2}, headers=headers
            )
            assert np.isfinite([r["distance"] for r in found.json()["results"]]).all()
    finally:
        stop_server(process)
    log = next(tmp_path.glob("serve-*.log")).read_text()
    assert TOKEN not in log
