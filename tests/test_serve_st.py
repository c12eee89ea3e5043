"""`cacl serve` ranking by appearance and time (``st=1``), in-process, against a brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cacl.inference import FeatureExtractor  # noqa: E402
from cacl.inference.live import LiveIndex  # noqa: E402
from cacl.serve.app import create_app  # noqa: E402
from cacl.serve.embedder import Embedder  # noqa: E402
from cacl.serve.timing import TimeRanking, camera_number, index_times  # noqa: E402
from cacl.temporal import TransitModel  # noqa: E402
from cacl.temporal.fusion import DEFAULT_FUSION  # noqa: E402
from serve_fixtures import GALLERY_SIZE, copy_index, gallery_name, make_template  # noqa: E402

BASE = "http://127.0.0.1"


def model() -> TransitModel:
    counts = np.zeros((3, 3, 60), dtype=int)
    counts[0, 1, 7] = 3  # camera 1 -> camera 2 after 7 s
    counts[0, 2, 35] = 5  # camera 1 -> camera 3 after 35 s
    return TransitModel(counts, 1.0, np.ones((3, 3)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-st")
    template = make_template(root)
    lines = "".join(f"{gallery_name(i)},{7 * i}\n" for i in range(GALLERY_SIZE))
    (root / "gallery" / "times.csv").write_text("name,time\n" + lines)
    extractor = FeatureExtractor(root / "run" / "best.pt", device="cpu")
    return root, template, extractor


@pytest.fixture
def client(setup, tmp_path):
    root, template, extractor = setup
    live = LiveIndex.open(copy_index(template, tmp_path / "index"), writable=False)
    names = [h.name for h in live.names(0, len(live))]
    times = index_times(names, root / "gallery")
    timing = TimeRanking(model(), times, candidates=500)
    yield TestClient(create_app(live, Embedder(extractor), timing=timing), base_url=BASE), live
    live.close()


def test_the_times_of_the_index_and_camera_numbers(setup):
    root, _, _ = setup
    times = index_times([gallery_name(i) for i in range(3)] + ["other.jpg"], root / "gallery")
    assert times == {gallery_name(0): 0.0, gallery_name(1): 7.0, gallery_name(2): 14.0}
    assert [camera_number(c) for c in ("1", "c2", "cam3", "lobby", None)] == [0, 1, 2, -1, -1]


def test_st_search_is_the_fused_ranking_of_a_brute_force(client, setup):
    http, live = client
    root, _, extractor = setup
    answer = http.get("/api/search", params={"name": gallery_name(0), "st": 1, "top": 11})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["st"] is True and body["query"]["time"] == 0.0
    names = [gallery_name(i) for i in range(1, GALLERY_SIZE)]
    features = extractor([root / "gallery" / n for n in names + [gallery_name(0)]]).numpy()
    query, gallery = features[-1], features[:-1]
    m = model()
    assert DEFAULT_FUSION[0] == "log_linear"
    w, floor = DEFAULT_FUSION[1]["weight"], DEFAULT_FUSION[1]["floor"]
    expected = []
    for i, name in enumerate(names, start=1):
        s = float(gallery[i - 1] @ query / np.linalg.norm(gallery[i - 1]) / np.linalg.norm(query))
        p = float(m.probability(0, 0.0, i % 3, 7.0 * i))
        expected.append((1 - s - w * math.log(p + floor), name, p))
    expected.sort()
    got = body["results"]
    assert [r["name"] for r in got] == [name for _, name, _ in expected]
    for row, (distance, _, p) in zip(got, expected):
        assert row["distance"] == pytest.approx(distance, abs=1e-4)
        assert row["transit"] == pytest.approx(p, abs=1e-4)
        assert row["time"] == 7.0 * int(row["name"][:4])
    by_name = {r["name"]: r["transit"] for r in got}
    assert by_name[gallery_name(1)] == pytest.approx(1.0) and by_name[gallery_name(5)] == 1.0
    plain = http.get("/api/search", params={"name": gallery_name(0), "top": 11}).json()
    assert plain["st"] is False and "transit" not in plain["results"][0]
    assert {r["name"] for r in plain["results"]} == set(names)


def test_st_errors_and_the_query_time(client):
    http, _ = client
    assert http.get("/api/stats").json()["st"] is True
    moved = http.get("/api/search", params={"name": gallery_name(0), "st": 1, "query_time": 28})
    assert moved.status_code == 200 and moved.json()["query"]["time"] == 28.0
    for bad, message in (("soon", "must be seconds"), ("nan", "must be finite")):
        answer = http.get("/api/search", params={"name": gallery_name(0), "st": 1,
                                                  "query_time": bad})  # fmt: skip
        assert answer.status_code == 400 and message in answer.json()["detail"]
    listed = http.get("/api/gallery", params={"count": 3}).json()["results"]
    assert [r["time"] for r in listed] == [7.0 * int(r["name"][:4]) for r in listed]


def test_a_server_without_times_refuses_st(setup, tmp_path):
    _, template, extractor = setup
    live = LiveIndex.open(copy_index(template, tmp_path / "index"), writable=False)
    try:
        http = TestClient(create_app(live, Embedder(extractor)), base_url=BASE)
        answer = http.get("/api/search", params={"name": gallery_name(0), "st": 1})
        assert answer.status_code == 400 and "appearance only" in answer.json()["detail"]
        assert http.get("/api/stats").json()["st"] is False
    finally:
        live.close()
