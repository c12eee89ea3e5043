"""Cutting tracklets where boxes overlap (cluster.split_crossings): the overlap search against a
loop over every pair, the pieces of a hand-made switch, the reader's boxes, the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cacl.clustering.crossings import crossing_crops, cut_at_crossings, pair_iou
from cacl.clustering.splitting import mixed_share
from cacl.clustering.tracklets import Tracklets, cannot_link_pairs
from cacl.config import ClusterConfig, Config, ConfigError, validate
from cacl.engine.relabel import compute_classes


def _slow_crossings(ids, cams, boxes, min_iou):
    hit = np.zeros(len(ids), dtype=bool)
    for i in range(len(ids)):
        for j in range(len(ids)):
            if i == j or ids[i] == ids[j] or cams[i] != cams[j] or boxes[i, 0] != boxes[j, 0]:
                continue
            if not (np.isfinite(boxes[i]).all() and np.isfinite(boxes[j]).all()):
                continue
            (l1, t1, w1, h1), (l2, t2, w2, h2) = boxes[i, 1:], boxes[j, 1:]
            iw = max(0.0, min(l1 + w1, l2 + w2) - max(l1, l2))
            ih = max(0.0, min(t1 + h1, t2 + h2) - max(t1, t2))
            union = w1 * h1 + w2 * h2 - iw * ih
            if union > 0 and iw * ih / union > min_iou:
                hit[i] = True
    return hit


@pytest.mark.parametrize("min_iou", [0.0, 0.2])
def test_crossing_crops_match_a_loop_over_every_pair(min_iou):
    rng = np.random.default_rng(0)
    n = 400
    ids = rng.integers(0, 40, n)
    cams = ids % 3  # a tracklet lies in one camera
    boxes = np.column_stack(
        [rng.integers(1, 12, n), rng.uniform(0, 200, n), rng.uniform(0, 50, n),
         rng.uniform(10, 40, n), rng.uniform(30, 80, n)]
    )  # fmt: skip
    boxes[::37] = np.nan  # crops without a box take part in nothing
    got = crossing_crops(ids, cams, boxes, min_iou)
    want = _slow_crossings(ids, cams, boxes, min_iou)
    assert want.any() and not want.all()
    assert np.array_equal(got, want)


def test_pair_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[5, 0, 10, 10], [10, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    assert pair_iou(a, b) == pytest.approx([50 / 150, 0.0, 1.0])


def _switch_site():
    """Camera 0, frames 1-20: person 0 walks right (x = 10 f), person 1 left (x = 210 - 10 f);
    their boxes overlap in frames 10-11. Tracklet 0 follows person 0 to frame 10, then person 1
    (a swap); tracklet 1 the other way round; tracklet 2 (person 2) walks alone. Camera 1 sees
    each person once, apart (tracklets 3-5)."""
    ids, cams, who, boxes = [], [], [], []
    for frame in range(1, 21):
        first, second = (0, 1) if frame <= 10 else (1, 0)
        for tracklet, person in ((0, first), (1, second), (2, 2)):
            x = (10.0 * frame, 210.0 - 10.0 * frame, 600.0)[person]
            ids.append(tracklet)
            cams.append(0)
            who.append(person)
            boxes.append((frame, x, 100.0, 20.0, 60.0))
    for person in range(3):
        for frame in range(1, 11):
            ids.append(3 + person)
            cams.append(1)
            who.append(person)
            boxes.append((frame, 300.0 * person, 50.0, 20.0, 60.0))
    return np.array(ids), np.array(cams), np.array(who), np.array(boxes)


def test_a_swap_at_a_crossing_leaves_pure_pieces_and_lone_tracklets_whole():
    ids, cams, who, boxes = _switch_site()
    assert mixed_share(ids, who) > 0  # tracklets 0 and 1 hold two people
    pieces, info = cut_at_crossings(ids, cams, boxes)
    assert mixed_share(pieces, who) == 0
    crossing = crossing_crops(ids, cams, boxes)
    assert info["crossing_crops"] == crossing.sum() > 0
    assert info["crossing_tracklets"] == 2
    assert np.all(np.bincount(pieces)[pieces[crossing]] == 1)  # each crossing crop alone
    for lone in (2, 3, 4, 5):  # no overlap: one piece
        assert np.unique(pieces[ids == lone]).size == 1
    # the pieces of one tracklet never overlap in time: no cannot-link between them
    times = boxes[:, 0].astype(float)
    pairs = cannot_link_pairs(pieces, cams, times)
    parent = np.zeros(pieces.max() + 1, dtype=np.int64)
    parent[pieces] = ids
    assert len(pairs) and not np.any(parent[pairs[:, 0]] == parent[pairs[:, 1]])


def test_compute_classes_with_crossings_keeps_the_swapped_people_apart():
    ids, cams, who, boxes = _switch_site()
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[who] + 0.15 * rng.normal(size=(len(who), 32))
    x = torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True)).float()
    times = boxes[:, 0].astype(float)
    tracklets = Tracklets(ids, cannot_link_pairs(ids, cams, times), times, boxes)
    cfg = ClusterConfig(eps=0.5, min_samples=2, constraints="must_link", split="off")
    glued, _ = compute_classes(x, cfg, who, cameras=cams, tracklets=tracklets)
    assert glued[(ids == 0) & (who == 0)][0] == glued[(ids == 0) & (who == 1)][0]
    cfg.split_crossings = "on"
    classes, stats = compute_classes(x, cfg, who, cameras=cams, tracklets=tracklets)
    assert stats["crossing_tracklets"] == 2 and stats["mixed_after"] == 0 < stats["mixed_before"]
    away = ~crossing_crops(ids, cams, boxes)
    for person in range(3):  # each person's pieces in one class, apart from the others
        assert np.unique(classes[away & (who == person)]).size == 1
    assert len({classes[away & (who == p)][0] for p in range(3)}) == 3
    no_boxes = Tracklets(ids, tracklets.pairs, times, None)
    with pytest.raises(Exception, match="frame and box"):
        compute_classes(x, cfg, who, cameras=cams, tracklets=no_boxes)
    # candidates: no crossing crop alone, the cut by features at the crossing instead
    cfg.split_crossings, cfg.split = "candidates", "on"
    classes, stats = compute_classes(x, cfg, who, cameras=cams, tracklets=tracklets)
    assert "crossing_crops" not in stats and stats["tracklets_split"] == 2
    assert stats["mixed_after"] == 0 < stats["mixed_before"]
    assert len({classes[who == p][0] for p in range(3)}) == 3
    for person in range(3):
        assert np.unique(classes[who == person]).size == 1
    # the mask found once before training is used as it is
    none = tracklets._replace(crossings=np.zeros(ids.size, bool))
    _, stats = compute_classes(x, cfg, who, cameras=cams, tracklets=none)
    assert stats["tracklets_split"] == 0 and stats["mixed_after"] > 0


def test_split_crossings_needs_constraints_and_an_iou_below_one():
    cfg = Config()
    cfg.cluster.split_crossings = "candidates"  # the cut by features only at crossings
    validate(cfg)
    cfg.cluster.split = "off"
    with pytest.raises(ConfigError, match="cluster.split=on or auto"):
        validate(cfg)
    cfg.cluster.split = "auto"
    cfg.cluster.split_crossings = "on"
    validate(cfg)
    cfg.cluster.constraints = "none"
    with pytest.raises(ConfigError, match="split_crossings"):
        validate(cfg)
    cfg.cluster.constraints = "both"
    cfg.cluster.split_iou = 1.0
    with pytest.raises(ConfigError, match="split_iou"):
        validate(cfg)
    cfg.cluster.split_iou = 0.0
    cfg.cluster.split_crossings = "maybe"
    with pytest.raises(ConfigError, match="split_crossings"):
        validate(cfg)


def test_the_reader_keeps_each_crops_frame_and_box(tmp_path):
    from PIL import Image

    from cacl.data.readers.folder import read_folder
    from cacl.errors import DatasetError

    for name in ("c1_t1_f1.jpg", "c1_t1_f2.jpg"):
        (tmp_path / "cam1").mkdir(exist_ok=True)
        Image.new("RGB", (16, 32)).save(tmp_path / "cam1" / name)
    header = "name,camera,tracklet,frame,time,left,top,width,height,conf\n"
    (tmp_path / "tracklets.csv").write_text(
        header + "c1_t1_f1.jpg,cam1,1,1,0.0,5,6,7,8,0.9\nc1_t1_f2.jpg,cam1,1,2,0.2,,,,,0.9\n"
    )
    dataset = read_folder(tmp_path)
    seen = {s.path.rsplit("/", 1)[1]: dataset.sightings[s.path] for s in dataset.train}
    assert seen["c1_t1_f1.jpg"].frame == 1 and seen["c1_t1_f1.jpg"].box == (5, 6, 7, 8)
    assert seen["c1_t1_f2.jpg"].box is None  # empty box columns: unknown, not an error
    (tmp_path / "tracklets.csv").write_text(header + "c1_t1_f1.jpg,cam1,1,1,0.0,5,x,7,8,0.9\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_folder(tmp_path)


# --- cluster.split_crossings=candidates: the cut by features only next to a crossing ----------
def test_allowed_cuts_match_a_loop_over_the_allowed_positions():
    from cacl.clustering.splitting import best_cuts

    rng = np.random.default_rng(5)
    sizes = [9, 17, 30, 6]
    segments = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.normal(size=(segments.size, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    allowed = rng.random(segments.size) < 0.3
    cut, distance = best_cuts(torch.from_numpy(x).float(), segments, 3, allowed)
    start = 0
    for s, size in enumerate(sizes):
        part, best, where = x[start : start + size], -1.0, -1
        for c in range(3, size - 3 + 1):  # c rows before the cut, the last one at c - 1
            if not allowed[start + c - 1]:
                continue
            gap = part[:c].mean(0) - part[c:].mean(0)
            ward = c * (size - c) / size * float(gap @ gap)
            if ward > best:
                best, where = ward, c - 1
        assert cut[s] == (where + start if where >= 0 else -1)
        if where >= 0:
            a, b = part[: where + 1].sum(0), part[where + 1 :].sum(0)
            d = 1.0 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            assert distance[s] == pytest.approx(d, abs=1e-5)
        start += size


def test_a_switch_is_cut_only_where_a_crossing_allows_it():
    from cacl.clustering.splitting import split_tracklets

    rng = np.random.default_rng(6)
    centres = rng.normal(size=(7, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # camera 0: tracklet 0 holds person 0 for 8 crops, then person 1 for 8; five clean ones
    who = np.array([0] * 8 + [1] * 8 + sum(([p] * 8 for p in range(2, 7)), []))
    ids = np.repeat(np.arange(6), [16, 8, 8, 8, 8, 8])
    cams = np.zeros(ids.size, int)
    times = np.concatenate([np.arange(k, dtype=float) for k in np.bincount(ids)])
    x = centres[who] + 0.15 * rng.normal(size=(who.size, 16))
    free, _ = split_tracklets(x, ids, cams, times)
    assert np.unique(free[ids == 0]).size == 2  # the cut by features finds the switch
    # a crossing at the switch (rows 7-8 overlap another box): the same cut
    at_switch = np.zeros(ids.size, bool)
    at_switch[[7, 8]] = True
    cut, _ = split_tracklets(x, ids, cams, times, candidates=at_switch)
    assert (cut[:8] == cut[0]).all() and (cut[8:16] == cut[8]).all() and cut[0] != cut[8]
    # no crossing in the switched tracklet: nothing may be cut there; a crossing in a clean
    # tracklet does not cut it
    elsewhere = np.zeros(ids.size, bool)
    elsewhere[[16 + 3, 16 + 4]] = True
    kept, info = split_tracklets(x, ids, cams, times, candidates=elsewhere)
    assert info["tracklets_split"] == 0 and np.unique(kept[ids == 0]).size == 1
