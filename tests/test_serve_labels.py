"""The labelling API of ``cacl serve``: marks, merges, undo, suggestions, bad input; an
acknowledged click survives a kill -9 of a real server; ``cacl labels export`` of what was
labelled, and a run evaluated on it."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cacl.cli import main  # noqa: E402
from cacl.data.readers import load_dataset  # noqa: E402
from cacl.inference import FeatureExtractor  # noqa: E402
from cacl.inference.live import LiveIndex  # noqa: E402
from cacl.labels.store import LabelStore  # noqa: E402
from cacl.serve.app import create_app  # noqa: E402
from cacl.serve.embedder import Embedder  # noqa: E402
from serve_fixtures import (  # noqa: E402
    copy_index,
    gallery_name,
    make_template,
    start_server,
    stop_server,
)

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_template(tmp_path_factory.mktemp("labels"))


@pytest.fixture
def client(template, tmp_path):
    extractor = FeatureExtractor(template.parent / "run" / "best.pt", device="cpu")
    live = LiveIndex.open(copy_index(template, tmp_path / "index"), writable=True)
    yield TestClient(create_app(live, Embedder(extractor)), base_url=BASE), live
    live.close()


def post(client, **body):
    return client.post("/api/labels", json=body)


def test_label_merge_undo(client):
    http, live = client
    a, b, c, d = (gallery_name(i) for i in (0, 1, 3, 4))  # cameras 1, 2, 1, 2
    first = post(http, op="same", a=a, b=b, by="ann")
    assert first.status_code == 201 and first.json()["identity"] == 1
    assert post(http, op="same", a=c, b=d, by="bob").json()["identity"] == 2
    conflict = post(http, op="same", a=a, b=d, by="ann")
    assert conflict.status_code == 409
    assert conflict.json()["merge"] is True and conflict.json()["identities"] == [1, 2]
    merged = post(http, op="same", a=a, b=d, by="ann", merge=True)
    assert merged.status_code == 201
    body = http.get("/api/labels").json()
    assert len(body["identities"]) == 1 and sorted(body["identities"][0]["images"]) == sorted(
        [a, b, c, d]
    )
    assert body["identities"][0]["cameras"] == ["1", "2"] and body["by"] == {"ann": 2, "bob": 1}
    assert http.get("/api/labels/image", params={"name": c}).json()["identity"] == 1
    # undo ann's merge: two identities again; bob's label stays
    assert http.post("/api/labels/undo", json={"by": "ann"}).status_code == 200
    assert len(http.get("/api/labels").json()["identities"]) == 2
    assert http.post("/api/labels/undo", json={"by": "carl"}).status_code == 404


@pytest.mark.parametrize(
    "body, status",
    [
        ({"op": "same", "a": gallery_name(0), "b": "nope.jpg"}, 404),
        ({"op": "same", "a": gallery_name(0), "b": gallery_name(0)}, 400),
        ({"op": "maybe", "a": gallery_name(0), "b": gallery_name(1)}, 400),
        ({"op": "same", "a": gallery_name(0)}, 400),
        ({"op": "same", "a": gallery_name(0), "b": gallery_name(1), "by": "<script>"}, 400),
        ({"op": "same", "a": gallery_name(0), "b": gallery_name(1), "merge": "yes"}, 400),
    ],
)
def test_bad_labels_are_refused(client, body, status):
    http, live = client
    response = post(http, **body)
    assert response.status_code == status and response.json()["detail"]
    assert http.get("/api/labels").json()["events"] == 0
    assert http.post("/api/labels", content=b"not json").status_code == 400


def test_suggestions_are_unlabelled_and_least_decided(client):
    http, live = client
    post(http, op="same", a=gallery_name(0), b=gallery_name(1))
    hints = http.get("/api/labels/suggest", params={"count": 5}).json()["suggestions"]
    names = [h["name"] for h in hints]
    assert len(names) == 5 and gallery_name(0) not in names and gallery_name(1) not in names
    gaps = [h["gap"] for h in hints]
    assert gaps == sorted(gaps)
    # the gap is the second minus the first other-camera distance, as a search shows it
    top = http.get("/api/search", params={"name": names[0], "top": 2, "other_cameras": 1}).json()[
        "results"
    ]
    assert hints[0]["gap"] == pytest.approx(top[1]["distance"] - top[0]["distance"], abs=1e-5)


def test_an_acknowledged_click_survives_kill_9(template, tmp_path):
    index = copy_index(template, tmp_path / "index")
    process, url = start_server(index)
    acknowledged = []
    try:
        for i in range(6):
            body = json.dumps({"op": "same", "a": gallery_name(i), "b": gallery_name(i + 6)})
            request = urllib.request.Request(
                f"{url}/api/labels", body.encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 201
                acknowledged.append(json.loads(response.read())["event"]["id"])
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        stop_server(process)
    kept = [e["id"] for e in LabelStore(index).events()]
    assert kept == acknowledged


def test_export_and_evaluate_on_the_labelled_split(client, tmp_path, capsys):
    http, live = client
    # identities across cameras: (0, 1, 2) spans cameras 1-3, (3, 4) cameras 1-2
    for a, b in [(0, 1), (0, 2), (3, 4)]:
        assert post(http, op="same", a=gallery_name(a), b=gallery_name(b)).status_code == 201
    out = tmp_path / "split"
    assert main(["labels", "export", str(live.folder), str(out)]) == 0
    split = load_dataset("market-test", out)
    assert sorted({s.pid for s in split.query}) == [1, 2]
    assert len(split.query) + len(split.gallery) == 5
    summary = json.loads((out / "split.json").read_text())
    assert summary["identities"] == 2 and summary["queried_identities"] == 2
    # a run that evaluates on the exported split scores what cacl eval scores on it
    from cacl.config import load_config
    from cacl.engine.trainer import Trainer

    cfg = load_config(
        "smoke",
        [
            "train.epochs=1",
            "train.iters=2",
            "data.height=32",
            "data.width=16",
            f"data.eval_root={out}",
        ],
    )
    results = Trainer(cfg, tmp_path / "run", progress=False).fit()
    capsys.readouterr()
    args = ["eval", str(tmp_path / "run"), "--data", "market-test", "--root", str(out)]
    assert main([*args, "--device", "cpu", "--workers", "0"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["mAP"] == pytest.approx(results["mAP"], abs=1e-6)


def test_export_refuses_without_a_cross_camera_identity(client, tmp_path, capsys):
    http, live = client
    post(http, op="same", a=gallery_name(0), b=gallery_name(3))  # both camera 1
    assert main(["labels", "export", str(live.folder), str(tmp_path / "split")]) == 1
    assert "no labelled identity spans two cameras" in capsys.readouterr().err
    assert not (tmp_path / "split").exists()


def test_export_takes_results_marked_not_this_person_as_distractors(client, tmp_path, capsys):
    http, live = client
    for a, b in [(0, 1), (0, 2)]:
        assert post(http, op="same", a=gallery_name(a), b=gallery_name(b)).status_code == 201
    assert post(http, op="different", a=gallery_name(0), b=gallery_name(5)).status_code == 201
    out = tmp_path / "split"
    assert main(["labels", "export", str(live.folder), str(out)]) == 0
    assert "(1 of them distractors)" in capsys.readouterr().out
    split = load_dataset("market-test", out)
    assert sorted(s.pid for s in split.gallery).count(0) == 1
    distractor = next(s for s in split.gallery if s.pid == 0)
    assert distractor.camid == 2  # gallery_name(5) is camera 3 (0-based 2)
    kept = tmp_path / "kept"
    assert main(["labels", "export", str(live.folder), str(kept), "--no-distractors"]) == 0
    assert all(s.pid > 0 for s in load_dataset("market-test", kept).gallery)


ANN, BOB = "ann-personal-token-0123456789", "bob-personal-token-0123456789"


def test_personal_tokens_name_who_marks(template, tmp_path):
    from cacl.serve.security import read_people
    from cacl.serve.settings import ServeSettings

    people_file = tmp_path / "people.txt"
    people_file.write_text(f"# who labels\nAnn Lee {ANN}\n\nbob {BOB}  # the night shift\n")
    people = read_people(people_file)
    assert people == {ANN: "Ann Lee", BOB: "bob"}
    extractor = FeatureExtractor(template.parent / "run" / "best.pt", device="cpu")
    live = LiveIndex.open(copy_index(template, tmp_path / "index"), writable=True)
    settings = ServeSettings(people=people, allowed_hosts=None)
    try:
        http = TestClient(create_app(live, Embedder(extractor), settings), base_url=BASE)
        body = {"op": "same", "a": gallery_name(0), "b": gallery_name(1)}
        assert http.post("/api/labels", json=body).status_code == 401  # no token
        wrong = {"Authorization": "Bearer not-a-token-of-anyone-here"}
        assert http.post("/api/labels", json=body, headers=wrong).status_code == 401
        ann = {"Authorization": f"Bearer {ANN}"}
        bob = {"Authorization": f"Bearer {BOB}"}
        # ann's token marks for ann, whatever name the page sends or leaves out
        assert http.post("/api/labels", json=body, headers=ann).status_code == 201
        refused = http.post("/api/labels", json={**body, "by": "bob"}, headers=ann)
        assert refused.status_code == 403 and "Ann Lee" in refused.json()["detail"]
        other = {"op": "same", "a": gallery_name(3), "b": gallery_name(4), "by": "bob"}
        assert http.post("/api/labels", json=other, headers=bob).status_code == 201
        seen = http.get("/api/labels", headers=bob).json()
        assert seen["by"] == {"Ann Lee": 1, "bob": 1} and seen["you"] == "bob"
        # undo takes the caller's own last mark: bob cannot undo ann's
        assert http.post("/api/labels/undo", json={}, headers=bob).status_code == 200
        assert http.post("/api/labels/undo", json={}, headers=bob).status_code == 404
        assert http.get("/api/labels", headers=ann).json()["by"] == {"Ann Lee": 1}
        # the sign-in form takes a personal token and the cookie carries it
        signed = http.post("/login", data={"token": BOB}, follow_redirects=False)
        assert signed.status_code == 303
        assert http.get("/api/labels").json()["you"] == "bob"
    finally:
        live.close()


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "names nobody"),
        (f"{ANN}\n", "NAME TOKEN"),
        (f"ann {ANN}\nbob {ANN}\n", "has the token of ann"),
        (f"ann {ANN}\nann {BOB}\n", "has a token already"),
        (f"<b> {ANN}\n", "NAME TOKEN"),
    ],
)
def test_bad_people_files_say_what_to_fix(tmp_path, text, message):
    from cacl.serve.security import ServeError, check_bind, read_people

    path = tmp_path / "people.txt"
    path.write_text(text)
    with pytest.raises(ServeError, match=message):
        read_people(path)
    with pytest.raises(ServeError, match="fewer than"):
        check_bind("0.0.0.0", None, {"short": "ann"})
    check_bind("0.0.0.0", None, {ANN: "ann"})  # a personal token is a token
