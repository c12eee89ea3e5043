"""Time as a cue: times of images, the transit-time model, the fusion, ``cacl eval --st``."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from cacl.data.times import (
    duke_time,
    market_time,
    read_times_file,
    require_times,
    sample_times,
)
from cacl.data.types import ReidDataset, Sample
from cacl.errors import CaclError
from cacl.temporal import TransitModel, compare, fit_transit, fuse, fused_distance
from cacl.temporal.run import st_distances
from cacl.temporal.transit import transit_samples


# --- times of images ------------------------------------------------------------------------
def test_market_and_duke_names_give_the_frame_in_seconds():
    assert market_time("/x/0001_c1s1_001051_00.jpg") == pytest.approx(1051 / 25)
    assert market_time("-1_c3s2_000025_01.jpg") == pytest.approx(1.0)
    assert duke_time("0001_c2_f0046182.jpg") == pytest.approx(46182 / 60)
    assert math.isnan(market_time("0001_c2_f0046182.jpg"))
    assert math.isnan(duke_time("0001_c1s1_001051_00.jpg"))
    assert math.isnan(market_time("person.jpg"))


def _dataset(tmp_path, name="folder", with_file=None):
    query = tmp_path / "data" / "query"
    gallery = tmp_path / "data" / "bounding_box_test"
    for folder in (query, gallery):
        folder.mkdir(parents=True)
    q = [Sample(str(query / "0001_c1s1_000050_00.jpg"), 1, 0)]
    g = [Sample(str(gallery / f"0001_c2s1_0001{i}0_00.jpg"), 1, 1) for i in range(3)]
    if with_file is not None:
        (tmp_path / "data" / "times.csv").write_text(with_file)
    return ReidDataset(name, tmp_path / "data", train=[], query=q, gallery=g)


def test_times_come_from_times_csv_first_then_the_names(tmp_path):
    market = _dataset(tmp_path / "a", "market1501")
    assert sample_times(market, "query").tolist() == [2.0]
    assert sample_times(market, "gallery").tolist() == pytest.approx([4.0, 4.4, 4.8])
    rows = "name,time\n0001_c1s1_000050_00.jpg,7.5\n" + "".join(
        f"0001_c2s1_0001{i}0_00.jpg,{10 + i}\n" for i in range(3)
    )
    filed = _dataset(tmp_path / "b", "market1501", rows)
    assert sample_times(filed, "query").tolist() == [7.5]
    assert sample_times(filed, "gallery", "market").tolist() == pytest.approx([4.0, 4.4, 4.8])
    assert require_times(filed, "gallery").tolist() == [10, 11, 12]


def test_a_plain_folder_is_refused_with_what_to_give(tmp_path):
    plain = _dataset(tmp_path, "folder")
    assert sample_times(plain, "query") is None
    with pytest.raises(CaclError, match=r"time is needed for every query image.*times\.csv"):
        require_times(plain, "query")
    partial = _dataset(tmp_path / "p", "folder", "name,time\n0001_c1s1_000050_00.jpg,1\n")
    with pytest.raises(CaclError, match="3 of 3"):
        require_times(partial, "gallery")


def test_a_bad_times_file_names_the_line(tmp_path):
    path = tmp_path / "times.csv"
    path.write_text("name,time\na.jpg,1.5\nb.jpg,soon\n")
    with pytest.raises(CaclError, match="line 3.*not seconds"):
        read_times_file(path)
    path.write_text("name,time\na.jpg,inf\n")
    with pytest.raises(CaclError, match="line 2.*not finite"):
        read_times_file(path)
    path.write_text("file,seconds\na.jpg,1\n")
    with pytest.raises(CaclError, match="name,time"):
        read_times_file(path)


# --- the transit model ----------------------------------------------------------------------
def test_the_histogram_is_the_hand_computed_one():
    # cluster 0: camera 0 at 10 and 12 (median 11), camera 1 at 20 -> 0->1 after 9 s
    # cluster 1: camera 1 at 5, camera 0 at 8, camera 2 at 30 -> 1->0 3 s, 1->2 25 s, 0->2 22 s
    # an outlier (-1) and a one-camera cluster add nothing
    labels = [0, 0, 0, 1, 1, 1, -1, 2, 2]
    cams = [0, 0, 1, 1, 0, 2, 1, 2, 2]
    times = [10, 12, 20, 5, 8, 30, 0, 3, 4]
    assert sorted(transit_samples(labels, cams, times)) == [
        (0, 1, 9.0), (0, 2, 22.0), (1, 0, 3.0), (1, 2, 25.0),
    ]  # fmt: skip
    model = fit_transit(labels, cams, times, 3, bin_s=2.0, bandwidth_s=2.0)
    assert model.counts.shape == (3, 3, 14)  # horizon 25 + 2 s in 2 s bins
    expected = np.zeros((3, 3, 14), dtype=int)
    expected[0, 1, 4] = expected[1, 0, 1] = expected[0, 2, 11] = expected[1, 2, 12] = 1
    np.testing.assert_array_equal(model.counts, expected)


def test_the_robust_bandwidth_ignores_a_far_mode_that_widens_silvermans():
    from cacl.temporal.transit import silverman, silverman_robust

    # eight transits around 20 s and two around 80 s (two-hop routes, a wrong cluster)
    gaps = np.array([18, 19, 20, 20, 21, 21, 22, 23, 79, 81], dtype=float)
    sd = gaps.std(ddof=1)
    q75, q25 = np.percentile(gaps, [75, 25])  # 22.75 and 20.0
    assert silverman(gaps) == pytest.approx(1.06 * sd * 10**-0.2)
    assert silverman_robust(gaps) == pytest.approx(0.9 * (q75 - q25) / 1.34 * 10**-0.2)
    assert silverman_robust(gaps) < silverman(gaps) / 10
    # one mode, the IQR wider than the sd: the sd is taken
    even = np.array([0.0, 0.0, 10.0, 10.0])
    assert silverman_robust(even) == pytest.approx(0.9 * even.std(ddof=1) * 4**-0.2)
    assert np.isnan(silverman_robust(np.array([3.0])))
    # the rule reaches the model: the pair of the far mode gets the narrow kernel
    labels = np.repeat(np.arange(10), 2)
    cams = np.tile([0, 1], 10)
    times = np.ravel([[0.0, g] for g in gaps])
    wide = fit_transit(labels, cams, times, 2)
    narrow = fit_transit(labels, cams, times, 2, rule="robust")
    assert narrow.bandwidth_s[0, 1] == pytest.approx(silverman_robust(gaps))
    assert wide.bandwidth_s[0, 1] == pytest.approx(silverman(gaps))
    assert narrow.probability(0, 0.0, 1, 50.0) < 0.01 < wide.probability(0, 0.0, 1, 50.0)
    with pytest.raises(CaclError, match="bandwidth rule"):
        fit_transit(labels, cams, times, 2, rule="scott")


def test_the_smoothing_is_a_gaussian_scaled_to_one_at_its_peak():
    counts = np.zeros((2, 2, 40), dtype=int)
    counts[0, 1, 20] = 3
    model = TransitModel(counts, 0.5, np.full((2, 2), 1.5))  # sigma: 3 bins
    j = np.arange(40)
    hand = np.exp(-((j - 20) ** 2) / (2 * 3.0**2))
    hand[np.abs(j - 20) > 12] = 0  # the filter's truncation at 4 sigma
    np.testing.assert_allclose(model.density[0, 1], hand, atol=1e-6)
    assert not model.density[1, 0].any()


def test_the_probability_follows_the_direction_and_the_gap():
    counts = np.zeros((3, 3, 10), dtype=int)
    counts[0, 1, 5] = 4  # from camera 0 to camera 1 in 5-6 s
    model = TransitModel(counts, 1.0, np.ones((3, 3)))
    assert model.probability(0, 100.0, 1, 105.5) == pytest.approx(1.0)
    # the same pair seen in the other order: camera 1 first, then camera 0
    assert model.probability(1, 105.5, 0, 100.0) == pytest.approx(1.0)
    assert model.probability(1, 100.0, 0, 105.5) == 0.0  # 1 -> 0 never seen
    assert model.probability(0, 100.0, 0, 105.5) == 0.0  # same camera
    assert model.probability(0, 0.0, 1, 50.0) == 0.0  # beyond the horizon
    assert model.probability(0, 0.0, 7, 5.5) == 0.0  # unknown camera
    grid = model.probability(np.array([[0], [0]]), np.array([[0.0], [0.0]]), np.array([[1, 2]]),
                             np.array([[5.2, 5.2]]))  # fmt: skip
    assert grid.shape == (2, 2) and grid[0, 0] == pytest.approx(1.0) and grid[0, 1] == 0.0


def test_save_load_and_a_damaged_file(tmp_path):
    model = fit_transit([0, 0, 1, 1], [0, 1, 1, 0], [1.0, 4.0, 2.0, 9.0], 2, bin_s=0.5)
    model.save(tmp_path / "transit.json")
    back = TransitModel.load(tmp_path / "transit.json")
    np.testing.assert_array_equal(back.counts, model.counts)
    np.testing.assert_allclose(back.density, model.density, atol=1e-4)
    (tmp_path / "bad.json").write_text(json.dumps({"num_cams": 2, "bins": 10**9}))
    with pytest.raises(CaclError, match="not a transit model"):
        TransitModel.load(tmp_path / "bad.json")
    with pytest.raises(CaclError, match="no cluster spans two cameras"):
        fit_transit([0, 0], [1, 1], [1.0, 2.0], 2)


def test_compare_measures_a_shift_in_seconds():
    def one(peak):
        counts = np.zeros((2, 2, 60), dtype=int)
        counts[0, 1, peak] = 5
        return TransitModel(counts, 1.0, np.full((2, 2), 2.0))

    assert compare(one(20), one(20))["mean_w1_s"] == pytest.approx(0.0)
    shifted = compare(one(20), one(27))
    assert shifted["mean_w1_s"] == pytest.approx(7.0, abs=0.01)
    assert 0.5 < shifted["mean_tv"] <= 1.0 and list(shifted["pairs"]) == ["0->1"]


# --- the fusion -----------------------------------------------------------------------------
def test_the_fusion_on_a_hand_made_example():
    assert fuse(0.0, 0.0) == pytest.approx(0.5 / 3)
    assert fuse(1.0, 1.0) == pytest.approx(1 / (1 + math.exp(-5)) / (1 + 2 * math.exp(-5)))
    # two gallery images that look alike to the query: the one that fits the transit time wins,
    # and beats a better look at an impossible time: 0.932 > 0.373 > 0.330
    similarity = np.array([0.6, 0.6, 0.9])
    probability = np.array([0.05, 0.9, 0.0])
    st_reid = ("logistic", {"gamma": 5.0, "lambda_time": 2.0})
    assert np.argsort(fused_distance(similarity, probability, st_reid)).tolist() == [1, 0, 2]
    assert fuse(0.6, 0.9) == pytest.approx(0.9526 / (1 + 2 * math.exp(-4.5)), abs=1e-4)


def test_the_log_linear_fusion_on_a_hand_made_example():
    from cacl.temporal.fusion import fusion

    # s + 0.1 log(p + 0.01): 0.8 - 0.4605 = 0.3395, 0.6 + 0.0010 = 0.6010, 0.5 - 0.0673 = 0.4327
    similarity, probability = np.array([0.8, 0.6, 0.5]), np.array([0.0, 1.0, 0.5])
    params = {"weight": 0.1, "floor": 0.01}
    score = fusion("log_linear", similarity, probability, **params)
    assert score == pytest.approx([0.3395, 0.6010, 0.4327], abs=1e-4)
    distance = fused_distance(similarity, probability, ("log_linear", params))
    assert distance == pytest.approx(1 - score, abs=1e-6)
    assert np.argsort(distance).tolist() == [1, 2, 0]
    # with a zero weight the time does nothing: the ranking is the appearance's
    flat = fused_distance(similarity, probability, ("log_linear", {"weight": 0.0, "floor": 0.01}))
    assert np.argsort(flat).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown fusion"):
        fused_distance(similarity, probability, ("average", {}))


def test_st_distances_are_the_fusion_of_cosine_and_transit():
    counts = np.zeros((2, 2, 20), dtype=int)
    counts[0, 1, 10] = 2
    model = TransitModel(counts, 1.0, np.ones((2, 2)))
    rng = np.random.default_rng(0)
    qf, gf = torch.from_numpy(rng.normal(size=(3, 8))), torch.from_numpy(rng.normal(size=(5, 8)))
    qc, qt = [0, 0, 1], [0.0, 3.0, 1.0]
    gc, gt = [1, 1, 0, 0, 1], [10.5, 30.0, 4.0, 0.0, 13.2]
    from cacl.temporal.fusion import DEFAULT_FUSION

    assert DEFAULT_FUSION[0] == "log_linear"  # the default: 1 - (s + w log(p + floor))
    w, floor = DEFAULT_FUSION[1]["weight"], DEFAULT_FUSION[1]["floor"]
    got = st_distances(qf, gf, qc, qt, gc, gt, model)
    for i in range(3):
        for j in range(5):
            s = float(torch.nn.functional.cosine_similarity(qf[i], gf[j], dim=0))
            p = float(model.probability(qc[i], qt[i], gc[j], gt[j]))
            assert got[i, j] == pytest.approx(1 - s - w * math.log(p + floor), abs=1e-5)
    # re-ranked: the appearance distance is re-ranked on its own, then fused with the same p
    from cacl.evaluation import re_ranking_features

    reranked = re_ranking_features(qf.float(), gf.float())
    got = st_distances(qf, gf, qc, qt, gc, gt, model, rerank=True)
    for i in range(3):
        for j in range(5):
            p = float(model.probability(qc[i], qt[i], gc[j], gt[j]))
            assert got[i, j] == pytest.approx(reranked[i, j] - w * math.log(p + floor), abs=1e-5)


# --- end to end on a tiny site --------------------------------------------------------------
@pytest.fixture(scope="module")
def site_run(tmp_path_factory):
    from cacl.config import load_config
    from cacl.data.site.crops import cut_site
    from cacl.data.synth.scene_render import generate_site
    from cacl.engine.trainer import Trainer

    tmp = tmp_path_factory.mktemp("st")
    site = tmp / "site"
    generate_site(site, preset="site-tiny", seed=3, workers=1, progress=False)
    crops = tmp / "crops"
    cut_site(site, crops, progress=False)
    cfg = load_config(
        "smoke",
        [
            "data.name=folder", f"data.root={crops}", f"data.eval_root={site / 'eval'}",
            "data.height=32", "data.width=16", "train.batch_size=8", "train.epochs=1",
            "train.iters=2", "cluster.eps=0.7", "cluster.min_samples=2",
        ],
    )  # fmt: skip
    Trainer(cfg, tmp / "run", progress=False).fit()
    return site, crops, tmp / "run"


def cacl(*args):
    return subprocess.run([sys.executable, "-m", "cacl", *args], capture_output=True, text=True)


def test_the_site_eval_split_has_times_on_the_site_clock(site_run):
    site, _, _ = site_run
    times = read_times_file(site / "eval" / "times.csv")
    names = {p.name for p in (site / "eval").rglob("*.jpg")}
    assert set(times) == names
    assert all(0 <= t < 100 for t in times.values())


def test_cacl_eval_st_with_and_without_rerank(site_run):
    _, _, run = site_run
    for extra in ([], ["--rerank"]):
        # a one-epoch smoke run's clusters may not span two cameras: the true identities do
        for source in ("truth",):
            done = cacl("eval", str(run), "--st", "--st-source", source, "--device", "cpu",
                        *extra)  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "appearance + time" in done.stdout and "transit model" in done.stdout
            result = json.loads(done.stdout.strip().splitlines()[-1])
            assert 0 < result["mAP"] <= 1 and 0 < result["appearance"]["mAP"] <= 1
            assert result["transit_source"] == source and result["rerank"] == bool(extra)


def test_cacl_eval_st_from_pseudo_labels_reads_the_runs_last_labels(site_run, tmp_path):
    """The pseudo path end to end: with the run's last pseudo labels replaced by the true
    identities, ``--st-source pseudo`` must give exactly what ``--st-source truth`` gives, and
    labels of the wrong length are refused."""
    import torch

    from cacl.config import load_config
    from cacl.data.default import resolve_dataset

    _, _, run = site_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = load_config(str(copy / "config.yaml"))
    dataset = resolve_dataset(**cfg.data.dataset_options())
    state = torch.load(copy / "last.pt", map_location="cpu", weights_only=True)
    state["classes"] = torch.tensor([s.pid for s in dataset.train])
    torch.save(state, copy / "last.pt")
    results = {}
    for source in ("pseudo", "truth"):
        done = cacl("eval", str(copy), "--st", "--st-source", source, "--device", "cpu")
        assert done.returncode == 0, done.stderr
        results[source] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["pseudo"]["mAP"] == pytest.approx(results["truth"]["mAP"])
    assert results["pseudo"]["transit_source"] == "pseudo"
    state["classes"] = state["classes"][:-1]
    torch.save(state, copy / "last.pt")
    done = cacl("eval", str(copy), "--st", "--st-source", "pseudo", "--device", "cpu")
    assert done.returncode != 0 and "pseudo labels cover" in done.stderr


def test_cluster_time_on_weights_by_the_previous_labels_transit_model(site_run, tmp_path):
    from cacl.config import load_config
    from cacl.engine.trainer import Trainer
    from cacl.temporal.fusion import time_factor

    _, _, run = site_run
    cfg = load_config(str(run / "config.yaml"), ["cluster.time=on"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer._time_weight() is None  # the first epoch: no labels yet
    pids = np.array([s.pid for s in trainer.dataset.train])
    trainer.classes = pids
    weight = trainer._time_weight()
    from cacl.temporal.transit import DEFAULT_ESTIMATOR

    cams = int(trainer.camids.max()) + 1
    model = fit_transit(pids, trainer.camids, trainer.train_times, cams, **DEFAULT_ESTIMATOR)
    rng = np.random.default_rng(0)
    ca, cb = rng.integers(0, model.num_cams, 50), rng.integers(0, model.num_cams, 50)
    ta, tb = rng.uniform(0, 60, 50), rng.uniform(0, 60, 50)
    expected = time_factor(model.probability(ca, ta, cb, tb))
    assert weight(ca, ta, cb, tb) == pytest.approx(expected)
    assert expected.min() < 0.5 and expected.max() == pytest.approx(1.0, abs=0.05)


def test_each_relabellings_transit_model_is_fitted_once(site_run, tmp_path, monkeypatch):
    """transit.json and the next epoch's cluster.time=on weight ask for the model of the same
    labels: one fit per epoch, not two; a new set of labels is fitted again."""
    from cacl.config import load_config
    from cacl.engine.trainer import Trainer
    from cacl.temporal import run as temporal_run

    calls = []
    real = temporal_run.fit_transit
    monkeypatch.setattr(
        temporal_run, "fit_transit", lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    )
    _, _, run = site_run
    cfg = load_config(
        str(run / "config.yaml"), ["cluster.time=on", "train.epochs=3", "train.iters=1"]
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.fit()
    assert len(calls) == 3 and trainer.transit.fits == 3
    assert calls[-1] is trainer.classes
    trainer.classes = trainer.classes.copy()  # equal labels, a new relabelling: fitted again
    trainer._time_weight()
    assert len(calls) == 4


def test_cluster_time_on_is_refused_without_times(tmp_path):
    from cacl.config import load_config
    from cacl.engine.trainer import Trainer
    from cacl.errors import TrainingError

    cfg = load_config("smoke", ["cluster.time=on"])
    with pytest.raises(TrainingError, match="cluster.time=on needs training crops with times"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_trainer_relabels_with_split_tracklets_on_the_site(site_run, tmp_path):
    from cacl.config import load_config
    from cacl.engine.trainer import Trainer

    _, _, run = site_run
    cfg = load_config(str(run / "config.yaml"), ["cluster.split=on", "cluster.constraints=both"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.init_memory()
    stats = trainer.relabel()
    assert stats["split_threshold"] > 0 and stats["tracklets_split"] >= 0
    assert stats["mixed_after"] <= stats["mixed_before"]
    assert len(trainer.classes) == len(trainer.dataset.train)


def test_trainer_finds_the_crossings_once_and_cuts_only_next_to_them(
    site_run, tmp_path, monkeypatch
):
    from cacl.clustering.crossings import crossing_crops
    from cacl.config import load_config
    from cacl.engine import relabel as relabel_module
    from cacl.engine.trainer import Trainer

    _, _, run = site_run
    cfg = load_config(str(run / "config.yaml"), ["cluster.split_crossings=candidates"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    t = trainer.tracklets
    np.testing.assert_array_equal(t.crossings, crossing_crops(t.ids, trainer.camids, t.boxes))
    assert t.crossings.any()
    trainer.init_memory()
    found = []
    original = relabel_module.crossing_mask
    monkeypatch.setattr(relabel_module, "crossing_mask", lambda *a: found.append(1) or original(*a))
    stats = trainer.relabel()
    assert not found and stats["split_threshold"] > 0  # the mask of setup, not found again
    assert len(trainer.classes) == len(trainer.dataset.train)


def test_cacl_eval_st_refuses_a_test_split_without_times(site_run, tmp_path):
    site, _, run = site_run
    plain = tmp_path / "eval"
    shutil.copytree(site / "eval", plain)
    (plain / "times.csv").unlink()
    done = cacl("eval", str(run), "--st", "--device", "cpu", "--data", "market-test",
                "--root", str(plain))  # fmt: skip
    assert done.returncode != 0
    assert "time is needed" in done.stderr and "times.csv" in done.stderr


def test_the_run_keeps_its_transit_model_and_the_report_draws_it(site_run):
    from cacl.config import load_config
    from cacl.data.default import resolve_dataset
    from cacl.report.html import make_report
    from cacl.temporal.run import run_transit

    _, _, run = site_run
    if not (run / "transit.json").is_file():  # the smoke run's clusters span no two cameras
        cfg = load_config(str(run / "config.yaml"))
        dataset = resolve_dataset(**cfg.data.dataset_options())
        run_transit(run, dataset, "truth").save(run / "transit.json")
    model = TransitModel.load(run / "transit.json")
    assert model.counts.sum() > 0
    page = make_report(run, device="cpu", queries=2, top=3, progress=False).read_text()
    section = page.split("Transit times between cameras", 1)[1].split("<h2>", 1)[0]
    assert "data:image/png;base64," in section
