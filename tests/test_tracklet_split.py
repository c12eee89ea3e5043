"""Splitting tracklets at likely identity switches (cluster.split=on, and auto by default)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cacl.clustering import splitting
from cacl.clustering.splitting import best_cuts, mixed_share, split_tracklets, time_order
from cacl.clustering.tracklets import Tracklets, cannot_link_pairs
from cacl.config import ClusterConfig, Config, ConfigError, validate
from cacl.engine.relabel import compute_classes


def _slow_best_cut(x: np.ndarray, min_side: int) -> tuple[int, float]:
    """The best cut of one segment by trying every position (Ward's criterion)."""
    n = len(x)
    best, where = -1.0, -1
    for c in range(min_side, n - min_side + 1):
        left, right = x[:c].mean(0), x[c:].mean(0)
        ward = c * (n - c) / n * float(((left - right) ** 2).sum())
        if ward > best:
            best, where = ward, c - 1
    if where < 0:
        return -1, 0.0
    a, b = x[: where + 1].sum(0), x[where + 1 :].sum(0)
    return where, 1.0 - float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("chunk", [5, 8192])
def test_best_cuts_match_a_loop_over_every_position(monkeypatch, chunk):
    monkeypatch.setattr(splitting, "CHUNK_ROWS", chunk)
    rng = np.random.default_rng(0)
    sizes = [1, 5, 6, 9, 17, 2, 30]
    segments = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.normal(size=(segments.size, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cut, distance = best_cuts(torch.from_numpy(x).float(), segments, min_side=3)
    start = 0
    for s, size in enumerate(sizes):
        where, d = _slow_best_cut(x[start : start + size], 3)
        assert cut[s] == (where + start if where >= 0 else -1)
        assert distance[s] == pytest.approx(d, abs=1e-5)
        start += size


def _people(rng: np.random.Generator, count: int, dim: int = 16) -> np.ndarray:
    centres = rng.normal(size=(count, dim))
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def _crops(centres: np.ndarray, who: list[int], rng: np.random.Generator) -> np.ndarray:
    x = centres[who] + 0.15 * rng.normal(size=(len(who), centres.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_switched_track_is_cut_where_the_person_changes_and_clean_ones_are_kept():
    rng = np.random.default_rng(1)
    centres = _people(rng, 8)
    # camera 0: tracklet 0 = person 0 for 6 crops, then person 1 for 5 (a switch);
    # tracklets 1..5 clean (persons 2..6), 8 crops each; camera 1: two clean tracklets
    who = [0] * 6 + [1] * 5 + sum(([p] * 8 for p in range(2, 7)), []) + [7] * 8 + [2] * 8
    ids = np.repeat(np.arange(8), [11, 8, 8, 8, 8, 8, 8, 8])
    cameras = np.r_[np.zeros(51, int), np.ones(16, int)]
    times = np.concatenate([np.arange(k, dtype=float) for k in np.bincount(ids)])
    # rows shuffled: the time order, not the row order, places the switch
    perm = rng.permutation(ids.size)
    x = _crops(centres, who, rng)[perm]
    new, info = split_tracklets(x, ids[perm], cameras[perm], times[perm])
    assert info["tracklets_split"] == 1 and info["split_pieces"] == 1
    truth = np.asarray(who)[perm]
    assert mixed_share(ids[perm], truth) > 0 and mixed_share(new, truth) == 0
    # the clean tracklets keep all their crops together
    for t in range(1, 8):
        assert np.unique(new[ids[perm] == t]).size == 1


def test_nothing_is_cut_without_two_tracklets_in_a_camera_or_below_min_side():
    rng = np.random.default_rng(2)
    centres = _people(rng, 4)
    x = _crops(centres, [0] * 6 + [1] * 6, rng)
    ids, cameras = np.zeros(12, int), np.zeros(12, int)
    new, info = split_tracklets(x, ids, cameras)
    assert info["split_threshold"] is None and (new == 0).all()
    # two more tracklets give the reference; with min_side 7 no cut fits in 12 crops
    x2 = np.r_[x, _crops(centres, [2] * 8 + [3] * 8, rng)]
    ids2, cams2 = np.r_[ids, np.ones(8, int), np.full(8, 2)], np.zeros(28, int)
    assert split_tracklets(x2, ids2, cams2, min_side=7)[1]["tracklets_split"] == 0
    new, info = split_tracklets(x2, ids2, cams2, min_side=3)
    assert info["tracklets_split"] == 1 and new[:6].tolist() != new[6:12].tolist()
    assert np.unique(new[:6]).size == np.unique(new[6:12]).size == 1
    with pytest.raises(Exception, match="split_ratio"):
        split_tracklets(x2, ids2, cams2, ratio=0)


def test_time_order_sorts_within_tracklets_with_unknown_times_last():
    ids = np.array([1, 0, 1, 0, 1])
    times = np.array([3.0, np.nan, 1.0, 2.0, 2.0])
    assert time_order(ids, times).tolist() == [3, 1, 2, 4, 0]


def test_compute_classes_uses_the_pieces_and_keeps_a_switch_out_of_one_cluster():
    """Two people each seen in two tracklets of camera 0 and camera 1; one tracklet of camera
    0 swaps from person 0 to person 1. Must-link alone glues them; with the split the pieces
    join their own people."""
    rng = np.random.default_rng(3)
    centres = _people(rng, 6, dim=32)
    who, ids, cams = [], [], []
    tracklet = 0
    for cam in (0, 1):
        for person in range(6):
            if cam == 0 and person in (0, 1):
                continue
            who += [person] * 10
            ids += [tracklet] * 10
            cams += [cam] * 10
            tracklet += 1
    who += [0] * 10 + [1] * 10  # the switched track (camera 0)
    ids += [tracklet] * 20
    cams += [0] * 20
    who, ids, cams = np.array(who), np.array(ids), np.array(cams)
    times = np.concatenate(
        [np.arange(k, dtype=float) + 100 * i for i, k in enumerate(np.bincount(ids))]
    )
    x = torch.from_numpy(_crops(centres, list(who), rng)).float()
    tracklets = Tracklets(ids, cannot_link_pairs(ids, cams, times), times)
    cfg = ClusterConfig(eps=0.5, min_samples=2, constraints="must_link", split="off")
    glued, _ = compute_classes(x, cfg, who, cameras=cams, tracklets=tracklets)
    switched = ids == tracklet
    assert np.unique(glued[switched]).size == 1  # must-link keeps the switch in one class
    cfg.split = "on"
    classes, stats = compute_classes(x, cfg, who, cameras=cams, tracklets=tracklets)
    assert stats["tracklets_split"] == 1 and stats["mixed_after"] == 0 < stats["mixed_before"]
    for person in (0, 1):
        mine = who == person
        assert np.unique(classes[mine]).size == 1  # the piece joined its person's other tracklet
    assert classes[switched & (who == 0)][0] != classes[switched & (who == 1)][0]
    assert ClusterConfig().split == "auto"  # the default: split wherever there are tracklets
    cfg.split = "auto"
    auto, stats = compute_classes(x, cfg, who, cameras=cams, tracklets=tracklets)
    assert np.array_equal(auto, classes) and stats["tracklets_split"] == 1
    cfg.constraints = "none"  # auto without constraints: nothing to cut, no refusal
    _, stats = compute_classes(x, cfg, who, cameras=cams, tracklets=tracklets)
    assert "tracklets_split" not in stats


def test_split_needs_constraints_and_sane_options():
    cfg = Config()
    cfg.cluster.split = "on"
    cfg.cluster.constraints = "none"
    with pytest.raises(ConfigError, match="cluster.constraints"):
        validate(cfg)
    cfg.cluster.split = "auto"
    validate(cfg)  # auto with constraints=none: no split, no error
    cfg.cluster.split = "sometimes"
    with pytest.raises(ConfigError, match="cluster.split"):
        validate(cfg)
    cfg.cluster.split = "on"
    cfg.cluster.constraints = "both"
    cfg.cluster.split_min = 0
    with pytest.raises(ConfigError, match="split_min"):
        validate(cfg)


def test_split_on_data_without_tracklets_is_refused(tmp_path):
    from cacl.config import load_config
    from cacl.engine.trainer import Trainer
    from cacl.errors import TrainingError

    cfg = load_config("smoke", ["cluster.split=on"])
    with pytest.raises(TrainingError, match="cluster.split=on cuts tracklets"):
        Trainer(cfg, tmp_path / "run", progress=False)
