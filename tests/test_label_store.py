"""The labels journal (crash-safe, shared by several writers), identities from events (merge,
undo, tracklets) and the exported evaluation split's rules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from PIL import Image

from cacl.data.readers import load_dataset
from cacl.labels.export import GALLERY, QUERY, plan_split, write_split
from cacl.labels.store import (
    LABELS_LOG,
    LabelConflict,
    LabelError,
    LabelStore,
    decode_lines,
    encode_line,
    resolve,
)

NAMES = [f"c{c}/img{i}.jpg" for c in (1, 2, 3) for i in range(4)]


def test_same_joins_and_a_second_identity_needs_a_merge(tmp_path):
    store = LabelStore(tmp_path, known=NAMES)
    store.mark("same", "c1/img0.jpg", "c2/img0.jpg", who="ann")
    store.mark("same", "c1/img0.jpg", "c3/img0.jpg", who="ann")
    store.mark("same", "c1/img1.jpg", "c2/img1.jpg", who="bob")
    labels = store.labels()
    assert [sorted(i.images) for i in labels.identities] == [
        ["c1/img0.jpg", "c2/img0.jpg", "c3/img0.jpg"],
        ["c1/img1.jpg", "c2/img1.jpg"],
    ]
    with pytest.raises(LabelConflict, match="merge identities 1 and 2") as info:
        store.mark("same", "c2/img0.jpg", "c1/img1.jpg", who="ann")
    assert info.value.identities == (1, 2)
    store.mark("same", "c2/img0.jpg", "c1/img1.jpg", who="ann", merge=True)
    assert len(store.labels().identities) == 1 and len(store.labels().identities[0].images) == 5
    # undo: the merge goes, the two identities come back
    store.undo(who="ann")
    assert len(store.labels().identities) == 2
    assert store.labels().by == {"ann": 2, "bob": 1}


def test_different_keeps_identities_apart_and_blocks_a_merge(tmp_path):
    store = LabelStore(tmp_path, known=NAMES)
    store.mark("same", "c1/img0.jpg", "c2/img0.jpg")
    store.mark("same", "c1/img1.jpg", "c2/img1.jpg")
    store.mark("different", "c1/img0.jpg", "c1/img1.jpg")
    assert store.labels().apart == {(1, 2)}
    with pytest.raises(LabelConflict, match="marked as different"):
        store.mark("same", "c2/img0.jpg", "c2/img1.jpg", merge=True)
    with pytest.raises(LabelConflict, match="both images belong to identity 1"):
        store.mark("different", "c1/img0.jpg", "c2/img0.jpg")


def test_bad_marks_are_refused(tmp_path):
    store = LabelStore(tmp_path, known=NAMES)
    with pytest.raises(LabelError, match="not an image of this index"):
        store.mark("same", "c1/img0.jpg", "../etc/passwd")
    with pytest.raises(LabelError, match="itself"):
        store.mark("same", "c1/img0.jpg", "c1/img0.jpg")
    with pytest.raises(LabelError, match="op must be"):
        store.mark("maybe", "c1/img0.jpg", "c2/img0.jpg")
    with pytest.raises(LabelError, match="nothing of yours"):
        store.undo(who="carol")
    assert not (tmp_path / LABELS_LOG).exists()


def test_a_tracklet_is_labelled_as_a_whole():
    tracklets = {"a1": "t1", "a2": "t1", "a3": "t1", "b1": "t2", "c1": "t3"}
    events = [{"op": "same", "id": "e1", "a": "a2", "b": "b1"}]
    labels = resolve(events, tracklets)
    assert sorted(labels.identities[0].images) == ["a1", "a2", "a3", "b1"]
    assert labels.identity("c1") is None


def test_torn_and_damaged_lines_are_skipped(tmp_path):
    good = [encode_line({"op": "same", "id": str(i), "a": "x", "b": f"y{i}"}) for i in range(3)]
    damaged = good[1].replace(b'"y1"', b'"z1"')  # same length, wrong checksum
    data = good[0] + damaged + good[2] + good[0][:7]  # a torn last line
    events, consumed, bad = decode_lines(data)
    assert [e["id"] for e in events] == ["0", "2"] and bad == 1
    assert consumed == len(data) - 7  # the torn line waits
    # the writer cuts a torn tail before appending, so the next event is whole
    (tmp_path / LABELS_LOG).write_bytes(good[0] + good[2][:-5])
    store = LabelStore(tmp_path, known=["x", "y0", "y2", "q"])
    store.mark("same", "x", "q")
    assert [e["id"] for e in store.events()][0] == "0" and len(store.events()) == 2


def test_several_writers_lose_nothing(tmp_path):
    """4 threads here and 2 other processes append at once; every event is there, once."""
    names = [f"n{i}" for i in range(400)]
    script = textwrap.dedent(
        f"""
        from cacl.labels.store import LabelStore
        store = LabelStore({str(tmp_path)!r})
        for i in range(60):
            store.mark("different", "p{{0}}_%d" % i, "q%d" % i, who="proc{{0}}")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", script.format(k)], env=env) for k in range(2)]
    store = LabelStore(tmp_path)

    def work(t):
        for i in range(50):
            store.mark("different", names[t * 100 + i], names[t * 100 + 50 + i], who=f"t{t}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for p in procs:
        assert p.wait(60) == 0
    fresh = LabelStore(tmp_path).events()
    assert len(fresh) == 4 * 50 + 2 * 60 == len({e["id"] for e in fresh})
    assert len(store.events()) == len(fresh)  # the first store sees the others' work too


def test_an_acknowledged_label_survives_kill_9(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from cacl.labels.store import LabelStore
        store = LabelStore({str(tmp_path)!r})
        i = 0
        while True:
            event = store.mark("same", "a%d" % i, "b%d" % i, who="k")
            print(event["id"], flush=True)
            i += 1
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    acknowledged = [proc.stdout.readline().strip() for _ in range(40)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {e["id"] for e in LabelStore(tmp_path).events()}
    assert set(acknowledged) <= kept


def labels_of(groups):
    events = []
    for g, images in enumerate(groups):
        for other in images[1:]:
            events.append({"op": "same", "id": f"{g}-{other}", "a": images[0], "b": other})
    return resolve(events)


def test_split_rules():
    cameras = {f"{c}_{i}.jpg": c for c in ("1", "2", "10") for i in range(5)}
    labels = labels_of(
        [
            # 3 cameras: tentatively 3 queries and 1_1 in the gallery; 1_0's only gallery match
            # is in its own camera, so it joins the gallery and 2_0, 10_0 stay queries
            ["1_0.jpg", "1_1.jpg", "2_0.jpg", "10_0.jpg"],
            ["1_2.jpg", "1_3.jpg"],  # one camera: gallery only
        ]
    )
    files = plan_split(labels, cameras)
    queries = [f for f in files if f.split == QUERY]
    assert sorted((f.identity, f.camera) for f in queries) == [(1, 2), (1, 3)]
    assert {f.source for f in queries} == {"2_0.jpg", "10_0.jpg"}
    gallery = sorted(f.source for f in files if f.split == GALLERY)
    assert gallery == ["1_0.jpg", "1_1.jpg", "1_2.jpg", "1_3.jpg"]
    # every query has a gallery image of its identity in another camera
    for q in queries:
        assert any(
            g.identity == q.identity and g.camera != q.camera for g in files if g.split == GALLERY
        )
    # cameras numbered in numeric order: 1 -> 1, 2 -> 2, 10 -> 3
    assert {f.source: f.camera for f in files}["10_0.jpg"] == 3
    with pytest.raises(LabelError, match="no labelled identity spans two cameras"):
        plan_split(labels_of([["1_2.jpg", "1_3.jpg"]]), cameras)


def test_images_marked_different_and_in_no_identity_are_gallery_distractors(tmp_path):
    cameras = {f"{c}_{i}.jpg": c for c in ("1", "2") for i in range(4)}
    events = [
        {"op": "same", "id": "s1", "a": "1_0.jpg", "b": "2_0.jpg"},
        {"op": "same", "id": "s2", "a": "1_0.jpg", "b": "2_1.jpg"},
        {"op": "different", "id": "d1", "a": "1_0.jpg", "b": "2_2.jpg"},  # a distractor
        {"op": "different", "id": "d2", "a": "1_0.jpg", "b": "1_3.jpg"},  # undone below
        {"op": "undo", "id": "u1", "target": "d2"},
        {"op": "different", "id": "d3", "a": "2_0.jpg", "b": "1_1.jpg"},  # joins an identity:
        {"op": "same", "id": "s3", "a": "1_1.jpg", "b": "2_3.jpg"},  # not a distractor
    ]
    labels = resolve(events)
    files = plan_split(labels, cameras)
    distractors = [f for f in files if f.identity == 0]
    assert [(f.source, f.split, f.camera) for f in distractors] == [("2_2.jpg", GALLERY, 2)]
    assert distractors[0].name.startswith("0000_c2s1_")
    assert [f.source for f in plan_split(labels, cameras, distractors=False)] == [
        f.source for f in files if f.identity > 0
    ]
    root = tmp_path / "gallery"
    root.mkdir()
    for name in cameras:
        Image.new("RGB", (8, 16), (int(name[0]) * 90, int(name[2]) * 60, 0)).save(root / name)
    summary = write_split(files, lambda n: root / n, tmp_path / "split")
    assert summary["identities"] == 2 and summary["distractor_images"] == 1
    # the reader keeps id 0 in the gallery (Market-1501's distractors) and queries none of it
    split = load_dataset("market-test", tmp_path / "split")
    assert sorted(s.pid for s in split.gallery).count(0) == 1
    assert all(s.pid > 0 for s in split.query)
    # a distractor without a camera is refused like any exported image
    with pytest.raises(LabelError, match="have no camera"):
        plan_split(labels, {k: v for k, v in cameras.items() if k != "2_2.jpg"})


def test_export_writes_a_split_the_market_reader_reads(tmp_path):
    root = tmp_path / "gallery"
    root.mkdir()
    cameras = {}
    for c in ("1", "2"):
        for i in range(3):
            name = f"cam{c}_{i}.jpg"
            Image.new("RGB", (8, 16), (int(c) * 40, i * 60, 0)).save(root / name)
            cameras[name] = c
    labels = labels_of([["cam1_0.jpg", "cam2_0.jpg", "cam2_1.jpg"], ["cam1_1.jpg", "cam2_2.jpg"]])
    summary = write_split(plan_split(labels, cameras), lambda n: root / n, tmp_path / "split")
    # identity 1: cam2_0's only match is in its own camera -> gallery; identity 2: one image per
    # camera -> one query, one gallery image
    assert summary["query_images"] == 2 and summary["gallery_images"] == 3
    split = load_dataset("market-test", tmp_path / "split")
    assert sorted(s.pid for s in split.query) == [1, 2]
    assert sorted(s.pid for s in split.gallery) == [1, 1, 2]
    # the exported files are the labelled images themselves
    first = next(f for f in summary["files"] if f["source"] == "cam2_1.jpg")
    assert (tmp_path / "split" / first["split"] / first["name"]).read_bytes() == (
        root / "cam2_1.jpg"
    ).read_bytes()
    with pytest.raises(LabelError, match="exists"):
        write_split(plan_split(labels, cameras), lambda n: root / n, tmp_path / "split")
