"""`cacl serve`'s JSON API in-process (FastAPI TestClient): search, adds, limits, access rules."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cacl.cli import main  # noqa: E402
from cacl.inference import FeatureExtractor  # noqa: E402
from cacl.inference.index import file_sha256  # noqa: E402
from cacl.inference.live import LiveIndex  # noqa: E402
from cacl.serve.app import create_app  # noqa: E402
from cacl.serve.embedder import Embedder  # noqa: E402
from cacl.serve.security import ServeError, check_bind  # noqa: E402
from cacl.serve.settings import ServeSettings  # noqa: E402
from serve_fixtures import GALLERY_SIZE, copy_index, gallery_name, jpeg_bytes, make_template  # noqa: E402

TOKEN = "s3cret-token-for-the-tests"
BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_template(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def extractor(template):
    return FeatureExtractor(template.parent / "run" / "best.pt", device="cpu")


@pytest.fixture
def server(template, extractor, tmp_path):
    """``make(settings=None, writable=True)`` -> (client, live)."""
    opened = []

    def make(settings: ServeSettings | None = None, writable: bool = True):
        folder = tmp_path / f"index{len(opened)}"
        live = LiveIndex.open(copy_index(template, folder), writable=writable)
        opened.append(live)
        client = TestClient(create_app(live, Embedder(extractor), settings), base_url=BASE)
        return client, live

    yield make
    for live in opened:
        live.close()


def brute_force(extractor, template, query: np.ndarray) -> list[tuple[str, float]]:
    names = json.loads((template / "names.json").read_text())
    features = extractor([template.parent / "gallery" / n for n in names]).numpy()
    dist = ((features - query) ** 2).sum(1)
    return [(names[i], float(dist[i])) for i in np.argsort(dist, kind="stable")]


def upload(name: str, data: bytes, content_type: str = "image/jpeg"):
    return ("image", (name, data, content_type))


def test_stats_and_search_by_name(server, template, extractor):
    client, live = server()
    stats = client.get("/api/stats").json()
    assert stats["size"] == GALLERY_SIZE and stats["kind"] == "flat"
    assert stats["checkpoint_sha256"] == file_sha256(template.parent / "run" / "best.pt")
    assert stats["cameras"] == {"1": 4, "2": 4, "3": 4}

    query = gallery_name(4)  # camera 2
    body = client.get("/api/search", params={"name": query, "top": 5}).json()
    assert body["query"] == {"name": query, "camera": "2"}
    truth = [
        hit for hit in brute_force(extractor, template, live.vector_of(query)) if hit[0] != query
    ]
    assert [r["name"] for r in body["results"]] == [n for n, _ in truth[:5]]
    np.testing.assert_allclose(
        [r["distance"] for r in body["results"]], [d for _, d in truth[:5]], atol=1e-4
    )
    assert all(r["camera"] == r["name"][6] for r in body["results"])  # "0004_c2s1..." -> "2"

    other = client.get("/api/search", params={"name": query, "top": 20, "other_cameras": 1}).json()
    assert [r["name"] for r in other["results"]] == [n for n, _ in truth if n[6] != "2"]
    only3 = client.get("/api/search", params={"name": query, "camera": "3"}).json()["results"]
    assert [r["name"] for r in only3] == [n for n, _ in truth if n[6] == "3"]

    for params, status, words in [
        ({"name": "nobody.jpg"}, 404, "no indexed image"),
        ({"name": query, "top": 0}, 400, "top must be between 1 and 500"),
        ({"name": query, "top": "ten"}, 400, "whole number"),
        ({}, 400, "give name="),
        ({"name": query, "query": "0" * 24}, 400, "give name="),
        ({"query": "0" * 24}, 404, "no query crop"),
        ({"name": query, "other_cameras": "maybe"}, 400, "other_cameras"),
    ]:
        response = client.get("/api/search", params=params)
        assert response.status_code == status, params
        assert words in response.json()["detail"]
    assert client.get("/api/nothing").status_code == 404


def test_search_by_upload_is_shareable(server, template, extractor):
    client, live = server()
    data = (template.parent / "gallery" / gallery_name(7)).read_bytes()
    response = client.post("/api/search", files=[upload("crop.jpg", data)], data={"top": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["results"][0]["name"] == gallery_name(7) and body["results"][0]["distance"] < 1e-4
    assert len(body["results"]) == 3 and body["query"]["camera"] is None
    query_id = body["query"]["id"]
    again = client.get("/api/search", params={"query": query_id, "top": 3}).json()
    assert again["results"] == body["results"]  # the URL of the search gives the same search
    assert client.get(f"/api/queries/{query_id}").content == data
    assert client.get("/api/queries/../manifest.json").status_code == 404
    # the query's camera from the upload's file name, or from query_camera
    named = client.post(
        "/api/search", files=[upload("x_c2s1_1.jpg", data)], params={"other_cameras": 1, "top": 20}
    ).json()
    assert named["query"]["camera"] == "2" and {r["camera"] for r in named["results"]} == {"1", "3"}
    blind = client.post(
        "/api/search", files=[upload("crop.jpg", data)], data={"other_cameras": "1"}
    )
    assert blind.status_code == 400 and "query_camera" in blind.json()["detail"]
    shared = client.get(
        "/api/search", params={"query": query_id, "other_cameras": 1, "query_camera": "1"}
    ).json()
    assert "1" not in {r["camera"] for r in shared["results"]}


def test_added_images_are_searchable_served_and_kept(server, template, monkeypatch):
    client, live = server()
    crops = [jpeg_bytes(100 + i) for i in range(3)]
    response = client.post(
        "/api/images",
        files=[upload(f"new{i}_c7s1_0.jpg", c) for i, c in enumerate(crops)]
        + [upload("other.jpg", jpeg_bytes(200))],
        data={"camera": ""},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["size"] == GALLERY_SIZE + 4
    added = body["added"]
    assert [a["camera"] for a in added] == ["7", "7", "7", None] and all(a["new"] for a in added)
    assert all(a["name"].startswith("added/") for a in added)
    same = client.post("/api/images", files=[upload("again.jpg", crops[0])], data={"camera": "5"})
    assert same.json()["added"][0] == {"name": added[0]["name"], "camera": "7", "new": False}
    assert client.get("/api/stats").json()["added"] == 4

    hits = client.get("/api/search", params={"name": added[1]["name"], "top": 30}).json()
    assert len(hits["results"]) == GALLERY_SIZE + 3  # all but the query itself
    search = client.post("/api/search", files=[upload("q.jpg", crops[2])], data={"top": 1})
    assert search.json()["results"][0]["name"] == added[2]["name"]
    assert client.get(f"/api/images/{added[0]['name']}").content == crops[0]
    newest = client.get("/api/gallery", params={"count": 2}).json()["results"]
    assert [r["name"] for r in newest] == [added[3]["name"], added[2]["name"]]

    # thumbnails: JPEG, at most thumb_height high, made once
    from cacl.serve import thumbs

    made = []
    real_make = thumbs.ThumbnailCache._make
    monkeypatch.setattr(
        thumbs.ThumbnailCache, "_make", lambda self, p: made.append(p) or real_make(self, p)
    )
    for _ in range(2):
        thumb = client.get(f"/api/thumbs/{gallery_name(1)}")
        assert thumb.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumb.content)).size == (20, 40)  # small: not enlarged
    assert len(made) == 1 and len(list((live.folder / "thumbs").glob("*.jpg"))) == 1

    # durable: a fresh open of the folder has them all
    live.close()
    reopened = LiveIndex.open(live.folder)
    assert len(reopened) == GALLERY_SIZE + 4 and added[3]["name"] in reopened


def test_image_routes_serve_indexed_files_only(server, template):
    client, live = server()
    (live.folder / "added").mkdir(exist_ok=True)
    (live.folder / "added" / "planted.jpg").write_bytes(jpeg_bytes(1))  # in the folder, not indexed
    ok = client.get(f"/api/images/{gallery_name(0)}")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
    assert ok.content == (template.parent / "gallery" / gallery_name(0)).read_bytes()
    assert ok.headers["x-content-type-options"] == "nosniff"
    for path in [
        "/api/images/../index0/manifest.json",
        "/api/images/..%2Fmanifest.json",
        "/api/images/%2e%2e/%2e%2e/etc/passwd",
        "/api/images//etc/passwd",
        "/api/images/manifest.json",
        "/api/images/names.json",
        "/api/images/added/planted.jpg",
        "/api/images/added/",
        "/api/images/",
        "/api/thumbs/../manifest.json",
        "/api/thumbs/added/planted.jpg",
        "/api/thumbs/",
        "/static/../manifest.json",
        "/static/",
    ]:
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"manifest" not in response.content and b"root" not in response.content


def test_bad_uploads_are_refused(server):
    settings = ServeSettings(max_upload_bytes=200_000, max_pixels=1_000_000, max_files=3)
    client, live = server(settings)
    big = jpeg_bytes(1, size=(400, 400))  # a valid image in a body over the limit
    big = big + b"\0" * (200_001 - len(big))
    response = client.post("/api/images", files=[upload("big.jpg", big)])
    assert response.status_code == 413 and "limit" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(30):
            yield b"x" * 10_000

    response = client.post(
        "/api/images", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413

    bomb = io.BytesIO()
    Image.new("1", (2000, 2000)).save(bomb, "PNG")  # 4 MP in a few kB: over max_pixels
    cases = [
        ([upload("bomb.png", bomb.getvalue(), "image/png")], 413, "pixels"),
        ([upload("notes.jpg", b"just some text")], 415, "not a readable image"),
        ([upload("cut.jpg", jpeg_bytes(2)[:300])], 415, "cannot decode"),
        ([upload("a.gif", _gif())], 415, "not a readable image"),
        ([upload(f"{i}.jpg", jpeg_bytes(i)) for i in range(4)], 400, "Too many files"),
    ]
    for files, status, words in cases:
        for route in ("/api/images", "/api/search"):
            response = client.post(route, files=files)
            if route == "/api/search" and len(files) > 1:
                status, words = 400, "files"
            assert response.status_code == status, (route, files[0][1][0], response.text)
            assert words in response.json()["detail"]
    assert client.post("/api/images", data={"camera": "1"}).status_code == 400
    assert len(live) == GALLERY_SIZE  # nothing bad was added
    assert not (live.folder / "added").exists()


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    return out.getvalue()


def test_token_is_enforced(server):
    client, live = server(ServeSettings(token=TOKEN, allowed_hosts=None))
    for path in [
        "/api/stats",
        f"/api/images/{gallery_name(0)}",
        f"/api/thumbs/{gallery_name(0)}",
        "/api/search?name=" + gallery_name(0),
        "/static/app.js",
    ]:  # noqa: E501
        response = client.get(path)
        assert response.status_code == 401, path
        assert "www-authenticate" in response.headers
        bad = client.get(path, headers={"Authorization": f"Bearer {TOKEN}x"})
        assert bad.status_code == 401
        good = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200, path
    assert client.post("/api/images", files=[upload("a.jpg", jpeg_bytes(3))]).status_code == 401
    assert len(live) == GALLERY_SIZE
    page = client.get("/")
    assert page.status_code == 401 and b"name=token" in page.content  # the page asks for it
    assert client.get("/static/style.css").status_code == 200  # the sign-in form's style only
    wrong = client.post("/login", data={"token": "guess"}, follow_redirects=False)
    assert wrong.status_code == 401 and "cacl_token" not in wrong.headers.get("set-cookie", "")
    right = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert right.status_code == 303
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert client.get("/api/stats").status_code == 200  # the cookie now carries it
    assert b"cacl person search" in client.get("/").content


def test_host_and_cross_site_rules(server):
    client, live = server()  # loopback, no token
    assert client.get("/api/stats").status_code == 200
    rebound = client.get("/api/stats", headers={"host": "evil.example:8000"})
    assert rebound.status_code == 400
    files = [upload("a.jpg", jpeg_bytes(4))]
    csrf = client.post("/api/images", files=files, headers={"origin": "http://evil.example"})
    assert csrf.status_code == 403
    for headers in [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": BASE},  # another port of this host
        {"origin": "null"},
    ]:
        assert client.post("/api/images", files=files, headers=headers).status_code == 403
    assert len(live) == GALLERY_SIZE
    same = client.post("/api/images", files=files, headers={"origin": BASE})
    assert same.status_code == 201
    page = client.post("/api/images", files=files, headers={"sec-fetch-site": "same-origin"})
    assert page.status_code == 201
    headers = client.get("/").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_read_only_server_refuses_adds(server):
    client, live = server(writable=False)
    response = client.post("/api/images", files=[upload("a.jpg", jpeg_bytes(5))])
    assert response.status_code == 403 and "read-only" in response.json()["detail"]
    assert client.get("/api/stats").json()["writable"] is False


def test_exposed_address_needs_a_token(template, capsys):
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(ServeError, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ServeError, match="without a token"):
        check_bind("192.168.1.20", None)
    with pytest.raises(ServeError, match="at least 16 characters"):
        check_bind("127.0.0.1", "short")
    assert main(["serve", str(template), "--host", "0.0.0.0", "--port", "0"]) == 1
    assert "refusing to listen on 0.0.0.0 without a token" in capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 3])
def test_searches_run_at_most_search_threads_at_once(server, monkeypatch, threads):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    client, live = server(ServeSettings(search_threads=threads))
    search, state, lock = live.search, {"now": 0, "most": 0}, threading.Lock()

    def slow_search(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.25)  # long enough for the requests to meet on a slow machine
        with lock:
            state["now"] -= 1
        return search(*args, **kwargs)

    monkeypatch.setattr(live, "search", slow_search)
    names = [gallery_name(i) for i in range(6)]
    with client, ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda n: client.get("/api/search", params={"name": n, "top": 3}), names)
        )
    assert [a.status_code for a in answers] == [200] * 6
    assert all(len(a.json()["results"]) == 3 for a in answers)
    assert state["most"] == threads  # never more at once, and as many when asked for
