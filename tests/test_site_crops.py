"""``cacl crops``: the crops of small hand-made sites against their boxes, the clock, the resume
after a kill -9, bad input; the folder reader with and without ``tracklets.csv``."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from cacl.data.readers.folder import read_folder
from cacl.data.site import CropOptions, cut_site, read_site
from cacl.data.site.select import clip_boxes
from cacl.errors import CaclError, DatasetError
from site_fixtures import make_camera, walkers

W, H, FRAMES, FPS = 160, 120, 24, 10


def rows(out):
    with open(out / "tracklets.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    people = {
        "cam1": walkers(FRAMES, W, H, people=3, seed=1),
        "cam2": walkers(FRAMES, W, H, people=2, seed=2),
    }
    make_camera(root / "cam1", people["cam1"], FRAMES, W, H, start="2026-03-01T08:00:00")
    make_camera(root / "cam2", people["cam2"], FRAMES, W, H, start="2026-03-01T08:00:30")
    (root / "eval").mkdir()  # not a camera: skipped
    return root, people


def test_crops_match_the_boxes_one_by_one(site, tmp_path):
    root, people = site
    out = tmp_path / "crops"
    summary = cut_site(root, out, progress=False)
    assert summary["clock"] == "site" and summary["origin"].startswith("2026-03-01T08:00:00")
    table = rows(out)
    expected = sum(len(range(w.first, w.last + 1)) for ws in people.values() for w in ws)
    assert len(table) == summary["crops"] == expected
    assert set(table[0]) >= {"name", "camera", "tracklet", "frame", "time", "true_id"}
    by_track = {(cam, w.track): w for cam, ws in people.items() for w in ws}
    for row in table:
        walker = by_track[(row["camera"], int(row["tracklet"]))]
        frame = int(row["frame"])
        x, y, w, h = clip_boxes(np.round([walker.box(frame)], 2), W, H)[0]  # as tracks.txt has it
        assert [int(row[k]) for k in ("left", "top", "width", "height")] == [x, y, w, h]
        assert row["name"] == f"{row['camera']}_t{row['tracklet']}_f{frame}.jpg"
        offset = 30.0 if row["camera"] == "cam2" else 0.0
        assert float(row["time"]) == pytest.approx(offset + (frame - 1) / FPS, abs=1e-3)
        assert int(row["true_id"]) == walker.pid
        crop = np.asarray(Image.open(out / row["camera"] / row["name"]))
        assert crop.shape == (h, w, 3)
        # the middle of the crop is the walker's colour (flat colours survive JPEG closely; the
        # other walkers may overlap the edges)
        middle = crop[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].reshape(-1, 3)
        if not any(
            other is not walker and _overlaps(other, walker, frame) for other in by_track.values()
        ):
            assert np.abs(np.median(middle, axis=0) - walker.colour).max() <= 8


def _overlaps(a, b, frame):
    if not (a.first <= frame <= a.last and b.first <= frame <= b.last):
        return False
    ax, ay, aw, ah = a.box(frame)
    bx, by, bw, bh = b.box(frame)
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def test_video_camera_and_per_camera_clock(tmp_path):
    pytest.importorskip("av")
    root = tmp_path / "site"
    people = walkers(FRAMES, W, H, people=2, seed=3)
    make_camera(root / "door", people, FRAMES, W, H, video=True)
    make_camera(root / "hall", walkers(FRAMES, W, H, people=1, seed=4), FRAMES, W, H)
    site = read_site(root)
    assert [c.kind for c in site.cameras] == ["video", "images"] and site.clock == "camera"
    out = tmp_path / "crops"
    summary = cut_site(root, out, CropOptions(every=2), progress=False)
    assert summary["clock"] == "camera" and summary["origin"] is None
    door = [r for r in rows(out) if r["camera"] == "door"]
    frames = {w.track: range(w.first, w.last + 1)[::2] for w in people}
    assert sorted((int(r["tracklet"]), int(r["frame"])) for r in door) == sorted(
        (t, f) for t, fs in frames.items() for f in fs
    )
    assert summary["cameras"]["door"]["frames_decoded"] == FRAMES
    for r in door:
        assert float(r["time"]) == pytest.approx((int(r["frame"]) - 1) / FPS, abs=1e-3)
        crop = np.asarray(Image.open(out / "door" / r["name"]).convert("RGB"), dtype=float)
        assert crop.shape[:2] == (int(r["height"]), int(r["width"]))


def test_boxes_past_the_video_end_are_counted(tmp_path):
    pytest.importorskip("av")
    root = tmp_path / "site"
    people = walkers(FRAMES, W, H, people=1, seed=5)
    make_camera(root / "cam1", people, FRAMES, W, H, video=True)
    with open(root / "cam1" / "tracks.txt", "a") as handle:
        handle.write(f"{FRAMES + 5},{people[0].track},10,10,20,40,1,-1,-1,-1\n")
    summary = cut_site(root, tmp_path / "crops", progress=False)
    cam = summary["cameras"]["cam1"]
    assert cam["skipped"] == {"past the video's end": 1}
    assert cam["crops"] == FRAMES - people[0].first + 1


def test_a_bad_tracks_line_names_file_and_line(site, tmp_path):
    root, _ = site
    with open(root / "cam2" / "tracks.txt", "a") as handle:
        handle.write("7,1,oops,3,4,5,1,-1,-1,-1\n")
    with pytest.raises(DatasetError, match=r"cam2/tracks.txt, line \d+: 'oops' is not a number"):
        cut_site(root, tmp_path / "crops", progress=False)


def test_not_a_site_and_a_camera_without_tracks(tmp_path):
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no camera folder"):
        read_site(tmp_path / "empty")
    make_camera(tmp_path / "s" / "cam1", walkers(5, W, H, people=1), 5, W, H)
    (tmp_path / "s" / "cam1" / "tracks.txt").unlink()
    (tmp_path / "s" / "cam1" / "gt" / "gt.txt").unlink()
    with pytest.raises(DatasetError, match="has no tracks"):
        read_site(tmp_path / "s")


def test_other_options_into_the_same_folder_are_refused(site, tmp_path):
    root, _ = site
    out = tmp_path / "crops"
    cut_site(root, out, CropOptions(every=2), progress=False)
    again = cut_site(root, out, CropOptions(every=2), progress=False)  # done: nothing to do
    assert all(c["written"] == 0 or c["already_there"] == 0 for c in again["cameras"].values())
    with pytest.raises(CaclError, match="other options"):
        cut_site(root, out, CropOptions(every=3), progress=False)


def test_resume_after_kill_writes_no_crop_twice(tmp_path):
    """kill -9 in the middle of a camera; the second run keeps every crop the first one wrote
    (same inode, same modification time) and ends with what one uninterrupted run writes."""
    root = tmp_path / "site"
    frames, width, height = 300, 320, 240
    make_camera(
        root / "cam1",
        walkers(frames, width, height, people=4, seed=6),
        frames,
        width,
        height,
        ext=".jpg",
    )
    make_camera(
        root / "cam2",
        walkers(frames, width, height, people=4, seed=7),
        frames,
        width,
        height,
        ext=".jpg",
    )
    out = tmp_path / "crops"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "cacl", "crops", str(root), str(out), "--no-progress"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = list((out / "cam1").glob("*.jpg")) if (out / "cam1").is_dir() else []
        if len(done) >= 100:
            break
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert not (out / "tracklets.csv").exists(), "the first run ended before it was killed"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("cam*/*.jpg")}
    assert before  # a crop being written is a .part file until it is whole
    subprocess.run(command, env=env, check=True, capture_output=True)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("cam*/*.jpg")}
    assert all(after[name] == stat for name, stat in before.items())
    assert not list(out.glob("cam*/*.part"))
    clean = tmp_path / "clean"
    cut_site(root, clean, progress=False)
    assert (out / "tracklets.csv").read_text() == (clean / "tracklets.csv").read_text()
    assert sorted(after) == sorted(p.name for p in clean.glob("cam*/*.jpg"))
    for name in list(after)[::50]:
        camera = name.split("_t")[0]
        assert (out / camera / name).read_bytes() == (clean / camera / name).read_bytes()


def test_folder_reader_with_and_without_tracklets_csv(site, tmp_path):
    root, people = site
    out = tmp_path / "crops"
    cut_site(root, out, progress=False)
    data = read_folder(out)
    table = {r["name"]: r for r in rows(out)}
    assert data.has_tracklets and data.clock == "site" and len(data.train) == len(table)
    keys = {}
    for sample in data.train:
        row = table[os.path.basename(sample.path)]
        sighting = data.sightings[sample.path]
        assert sample.camid == {"cam1": 0, "cam2": 1}[row["camera"]]
        assert sample.pid == int(row["true_id"])
        assert sighting.time == pytest.approx(float(row["time"]))
        # one tracklet number per (camera, track) pair, and only one pair per number
        assert (
            keys.setdefault((row["camera"], row["tracklet"]), sighting.tracklet)
            == sighting.tracklet
        )
    assert len(set(keys.values())) == len(keys) == sum(len(ws) for ws in people.values())
    plain = read_folder(out, tracklets="off")
    assert not plain.has_tracklets and all(s.pid == -1 for s in plain.train)
    assert sorted(s.path for s in plain.train) == sorted(s.path for s in data.train)
    # an image that tracklets.csv does not list is left out, with a warning
    Image.new("RGB", (8, 16)).save(out / "cam1" / "stray.jpg")
    assert len(read_folder(out).train) == len(table)
    assert math.isfinite(next(iter(data.sightings.values())).time)


def test_tracklets_csv_errors(tmp_path):
    (tmp_path / "c").mkdir()
    Image.new("RGB", (8, 16)).save(tmp_path / "c" / "a.jpg")
    (tmp_path / "tracklets.csv").write_text("name,camera,time\na.jpg,c,0\n")
    with pytest.raises(DatasetError, match="tracklet are missing|columns tracklet"):
        read_folder(tmp_path)
    (tmp_path / "tracklets.csv").write_text("name,camera,tracklet,time\na.jpg,c,1,soon\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_folder(tmp_path)


def test_a_folder_run_evaluates_on_an_eval_root(site, tmp_path):
    from cacl.config import load_config
    from cacl.data.default import resolve_dataset

    root, _ = site
    out = tmp_path / "crops"
    cut_site(root, out, progress=False)
    split = tmp_path / "eval"
    for folder, names in {
        "query": ["0001_c1s1_000001_00.jpg", "0002_c2s1_000001_00.jpg"],
        "bounding_box_test": ["0001_c2s1_000002_00.jpg", "0002_c1s1_000003_00.jpg"],
    }.items():
        (split / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (8, 16)).save(split / folder / name)
    cfg = load_config(
        None,
        ["data.name=folder", f"data.root={out}", f"data.eval_root={split}", "data.tracklets=off"],
    )
    assert cfg.data.tracklets == "off"
    dataset = resolve_dataset(**cfg.data.dataset_options())
    assert dataset.has_test_split and not dataset.has_tracklets
    assert [s.pid for s in dataset.query] == [1, 2] and [s.camid for s in dataset.gallery] == [1, 0]
    # YAML reads a bare off as false: it still means off
    (tmp_path / "c.yaml").write_text(f"data:\n  name: folder\n  root: {out}\n  tracklets: off\n")
    assert load_config(str(tmp_path / "c.yaml")).data.tracklets == "off"


@pytest.mark.parametrize("constraints", ["none", "both"])
def test_training_on_crops_logs_the_constraint_figures(site, tmp_path, constraints):
    from cacl.config import load_config
    from cacl.engine.trainer import Trainer

    root, _ = site
    out = tmp_path / "crops"
    cut_site(root, out, progress=False)
    cfg = load_config(
        "smoke",
        [
            "data.name=folder",
            f"data.root={out}",
            "data.height=32",
            "data.width=16",
            "train.batch_size=8",
            "train.epochs=1",
            "train.iters=2",
            f"cluster.constraints={constraints}",
            "cluster.split=off",  # the constraints' guarantees on the tracker's tracklets
        ],
    )
    results = Trainer(cfg, tmp_path / "run", progress=False).fit()
    cluster = results["history"][0]["cluster"]
    assert {"tracklets", "tracklets_broken", "cannot_link_separated", "ari"} <= set(cluster)
    assert cluster["tracklets"] == 5 and cluster["cannot_link_pairs"] > 0
    if constraints == "both":
        assert cluster["tracklets_broken"] == 0 and cluster["cannot_link_separated"] == 1.0
