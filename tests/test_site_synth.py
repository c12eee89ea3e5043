"""``cacl synth --site``: the synthetic site against its own plan, its determinism, the tracker's
faults, the eval split, and ``cacl crops`` on it (image sequences and videos)."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from cacl.data.readers import load_dataset
from cacl.data.site import CropOptions, cut_site, read_site
from cacl.data.site.mot import read_mot
from cacl.data.synth.scene import ground_truth, plan_visits, site_config, tracker_output
from cacl.data.synth.scene_render import generate_site
from cacl.errors import CaclError


def digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "site.json"):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def crop_rows(out):
    with open(out / "tracklets.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("site") / "tiny"
    generate_site(root, preset="site-tiny", seed=3, workers=1, progress=False)
    return root


def test_same_seed_same_bytes_other_seed_other_site(tiny, tmp_path):
    again = tmp_path / "again"
    generate_site(again, preset="site-tiny", seed=3, workers=2, progress=False)
    assert digest(again) == digest(tiny)  # workers do not change a byte
    other = tmp_path / "other"
    generate_site(other, preset="site-tiny", seed=4, workers=1, progress=False)
    assert (other / "cam1/gt/gt.txt").read_bytes() != (tiny / "cam1/gt/gt.txt").read_bytes()


def test_a_finished_site_is_kept_and_other_settings_are_refused(tiny):
    before = digest(tiny)
    summary = generate_site(tiny, preset="site-tiny", seed=3, progress=False)
    assert summary["skipped"] and digest(tiny) == before
    with pytest.raises(CaclError):
        generate_site(tiny, preset="site-tiny", seed=5, progress=False)


def test_the_layout_is_what_read_site_takes(tiny):
    site = read_site(tiny)
    assert [c.name for c in site.cameras] == ["cam1", "cam2"]  # eval/ is skipped
    cfg = site_config("site-tiny")
    for camera in site.cameras:
        gt = read_mot(tiny / camera.name / "gt" / "gt.txt")
        assert gt.frame.min() >= 1 and gt.frame.max() <= cfg.frames
        assert (tiny / camera.name / "img1" / f"{cfg.frames:06d}.jpg").is_file()


def test_ground_truth_follows_the_plan():
    cfg = site_config("site-tiny")
    visits = plan_visits(cfg, seed=3)
    pids = {v.pid for v in visits}
    assert len(pids) == cfg.num_ids
    for cam in range(cfg.num_cams):
        gt = ground_truth(cfg, visits, cam)
        # every visit of this camera has its boxes, and a person is in one place per frame
        assert set(np.unique(gt[:, 7]).astype(int)) == {
            i for i, v in enumerate(visits) if v.cam == cam
        }
        keys = gt[:, 0] * 1000 + gt[:, 1]
        assert np.unique(keys).size == len(gt)
        assert ((gt[:, 6] >= 0) & (gt[:, 6] <= 1)).all()
    # one person never stands in two cameras at once, and walks on after a transit
    by_pid: dict[int, list] = {}
    for v in visits:
        by_pid.setdefault(v.pid, []).append(v)
    for walks in by_pid.values():
        walks.sort(key=lambda v: v.start)
        for a, b in zip(walks, walks[1:]):
            assert b.start >= a.end and a.cam != b.cam


def test_a_perfect_tracker_gives_the_ground_truth():
    cfg = site_config("site-tiny", faults=0)
    visits = plan_visits(cfg, seed=3)
    gt = ground_truth(cfg, visits, 0)
    tracks = tracker_output(cfg, gt, 0, seed=3)
    assert len(tracks) == len(gt)
    order = np.lexsort((gt[:, 2], gt[:, 0]))
    got = tracks[np.lexsort((tracks[:, 2], tracks[:, 0]))]
    np.testing.assert_allclose(got[:, 2:6], gt[order, 2:6])
    # one track per visit, and the other way round
    pairs = {(int(t), int(v)) for t, v in zip(got[:, 1], gt[order, 7])}
    assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def test_faults_scale_the_tracker_errors():
    def errors(faults):
        cfg = site_config("site", faults=faults, duration=60.0)
        visits = plan_visits(cfg, seed=1)
        out = []
        for cam in range(cfg.num_cams):
            gt = ground_truth(cfg, visits, cam)
            tracks = tracker_output(cfg, gt, cam, seed=1)
            out.append((len(gt), len(tracks), len(np.unique(tracks[:, 1]))))
        gt_n, tr_n, tracks_n = np.array(out).sum(axis=0)
        return tracks_n, gt_n, tr_n

    perfect, _, _ = errors(0)
    default, _, _ = errors(1)
    bad, _, _ = errors(4)
    assert perfect < default < bad  # fragments and false tracks add tracks


def test_the_eval_split_is_a_market_test_split_of_other_people(tiny):
    split = load_dataset("market-test", tiny / "eval")
    cfg = site_config("site-tiny")
    assert len({s.pid for s in split.query}) == cfg.num_test_ids
    assert {s.pid for s in split.query} <= {s.pid for s in split.gallery}
    # the numbers start at 1 again, but the people are others: their looks differ
    from cacl.data.synth.scene_render import _identity

    assert _identity(3, 1, test=True) != _identity(3, 1, test=False)
    # every query has a match in another camera
    for q in split.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in split.gallery)


def test_crops_of_the_site_match_its_ground_truth(tmp_path):
    root = tmp_path / "perfect"
    generate_site(root, preset="site-tiny", seed=3, workers=1, progress=False, faults=0)
    out = tmp_path / "crops"
    summary = cut_site(root, out, CropOptions(), progress=False)
    rows = crop_rows(out)
    gt_boxes = sum(len(read_mot(root / c / "gt" / "gt.txt").frame) for c in ("cam1", "cam2"))
    skipped = sum(sum(c["skipped"].values()) for c in summary["cameras"].values())
    assert len(rows) + skipped == gt_boxes
    # with a perfect tracker every crop's tracklet is one person, known from the ground truth
    by_track: dict[tuple, set] = {}
    for r in rows:
        by_track.setdefault((r["camera"], r["tracklet"]), set()).add(int(r["true_id"]))
    assert all(len(ids) == 1 and -1 not in ids for ids in by_track.values())
    times = np.array([float(r["time"]) for r in rows])
    assert times.min() >= 0 and times.max() <= site_config("site-tiny").duration


def test_a_video_site_gives_the_crops_of_its_image_sequence(tmp_path, tiny):
    video = tmp_path / "video"
    generate_site(video, preset="site-tiny", seed=3, workers=1, progress=False, video=True)
    assert (video / "cam1" / "video.mp4").is_file() and (video / "cam1" / "start.txt").is_file()
    assert not (video / "cam1" / "img1").exists()
    from_video = crop_rows(cut_site(video, tmp_path / "v", progress=False) and tmp_path / "v")
    from_images = crop_rows(cut_site(tiny, tmp_path / "i", progress=False) and tmp_path / "i")
    key = lambda r: (r["name"], r["left"], r["top"], r["width"], r["height"], r["time"])  # noqa: E731
    assert sorted(map(key, from_video)) == sorted(map(key, from_images))


def test_cli_site_and_its_errors(tmp_path):
    run = [sys.executable, "-m", "cacl", "synth"]
    wrong = subprocess.run([*run, str(tmp_path / "x"), "--preset", "site"], capture_output=True)
    assert wrong.returncode != 0 and b"--site" in wrong.stderr
    done = subprocess.run(
        [*run, str(tmp_path / "s"), "--site", "--preset", "site-tiny", "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "2 cameras" in done.stdout and (tmp_path / "s" / "site.json").is_file()
