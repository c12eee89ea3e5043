"""The transit-time model's kernels and bandwidth rules, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cacl.errors import CaclError
from cacl.temporal import TransitModel, fit_transit
from cacl.temporal.transit import pooled_spread


def _visits(pairs: dict[tuple[int, int], list[float]]):
    """Labels, cameras and times of one two-camera cluster per transit ``a -> b`` of ``gap``."""
    labels, cams, times = [], [], []
    for (a, b), gaps in pairs.items():
        for gap in gaps:
            label = len(labels) // 2
            labels += [label, label]
            cams += [a, b]
            times += [100.0, 100.0 + gap]
    return np.array(labels), np.array(cams), np.array(times)


def test_the_log_kernel_is_the_hand_computed_log_normal_density():
    counts = np.zeros((2, 2, 60), dtype=int)
    counts[0, 1, 9] = 2  # two transits of 9-10 s
    counts[0, 1, 29] = 1  # one of 29-30 s
    width = 0.2
    model = TransitModel(counts, 1.0, np.full((2, 2), width), kernel="log")
    hand = np.zeros(60)
    for k in range(60):
        t = k + 0.5
        for j, c in ((9, 2), (29, 1)):
            hand[k] += c * math.exp(-0.5 * ((math.log(t) - math.log(j + 0.5)) / width) ** 2) / t
    np.testing.assert_allclose(model.density[0, 1], hand / hand.max(), atol=1e-6)
    assert not model.density[1, 0].any() and model.density[0, 1].max() == pytest.approx(1.0)


def test_the_log_kernel_is_wider_in_seconds_for_a_longer_transit():
    counts = np.zeros((3, 3, 200), dtype=int)
    counts[0, 1, 10] = 1
    counts[0, 2, 80] = 1
    log_model = TransitModel(counts, 1.0, np.full((3, 3), 0.2), kernel="log")
    time_model = TransitModel(counts, 1.0, np.full((3, 3), 2.0))

    def width(model, pair):  # bins above half the peak
        return int((model.density[pair] > 0.5).sum())

    assert width(time_model, (0, 1)) == width(time_model, (0, 2))
    # about 8 times the seconds (80 s against 10 s) for the same log-width
    short, long = width(log_model, (0, 1)), width(log_model, (0, 2))
    assert 5 * short <= long <= 11 * short


def test_the_pooled_rule_shares_the_spread_and_keeps_each_pairs_n():
    rng = np.random.default_rng(0)
    many = list(20.0 + rng.normal(0, 2.0, 30))
    few = [40.0, 47.0]
    labels, cams, times = _visits({(0, 1): many, (1, 0): few})
    a, b = np.array(many), np.array(few)
    spread = math.sqrt((((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / (29 + 1))
    assert pooled_spread([a, b]) == pytest.approx(spread)
    model = fit_transit(labels, cams, times, 2, bin_s=0.5, rule="pooled")
    assert model.bandwidth_s[0, 1] == pytest.approx(1.06 * spread * 30**-0.2)
    assert model.bandwidth_s[1, 0] == pytest.approx(1.06 * spread * 2**-0.2)
    # Silverman's rule alone gives the two-sample pair its own (wide) spread
    own = fit_transit(labels, cams, times, 2)
    assert own.bandwidth_s[1, 0] == pytest.approx(1.06 * b.std(ddof=1) * 2**-0.2)
    assert own.bandwidth_s[1, 0] > 2 * model.bandwidth_s[1, 0]
    assert math.isnan(pooled_spread([np.array([1.0]), np.array([])]))


def test_the_log_kernel_fits_its_width_on_log_seconds():
    gaps = [9.2, 10.4, 11.7, 12.1, 36.5, 41.2, 47.9]
    labels, cams, times = _visits({(0, 1): gaps[:4], (0, 2): gaps[4:]})
    model = fit_transit(labels, cams, times, 3, kernel="log")
    assert model.kernel == "log"
    short = np.log(np.floor(gaps[:4]) + 0.5)  # the samples at their bins' centres
    assert model.bandwidth_s[0, 1] == pytest.approx(1.06 * short.std(ddof=1) * 4**-0.2)
    pooled = fit_transit(labels, cams, times, 3, kernel="log", rule="pooled")
    logs = [np.log(np.floor(g) + 0.5) for g in (gaps[:4], gaps[4:])]
    assert pooled.bandwidth_s[0, 2] == pytest.approx(1.06 * pooled_spread(logs) * 3**-0.2)
    # the density peaks near each pair's transits
    assert pooled.probability(0, 0.0, 1, 10.8) > 0.8 > pooled.probability(0, 0.0, 1, 25.0)
    assert pooled.probability(0, 0.0, 2, 41.5) > 0.8


def test_the_kernel_survives_save_and_load_and_an_unknown_one_is_refused(tmp_path):
    labels, cams, times = _visits({(0, 1): [10.0, 12.0, 13.0], (1, 0): [30.0, 33.0]})
    model = fit_transit(labels, cams, times, 2, kernel="log", rule="pooled")
    model.save(tmp_path / "transit.json")
    back = TransitModel.load(tmp_path / "transit.json")
    assert back.kernel == "log"
    np.testing.assert_allclose(back.density, model.density, atol=1e-4)
    with pytest.raises(CaclError, match="unknown transit kernel"):
        fit_transit(labels, cams, times, 2, kernel="gamma")
    with pytest.raises(CaclError, match="unknown transit kernel"):
        TransitModel(model.counts, 1.0, model.bandwidth_s, kernel="gamma")


def test_a_symmetric_model_pools_each_pair_with_its_reverse():
    labels, cams, times = _visits({(0, 1): [10.0, 12.0, 14.0], (1, 0): [30.0], (0, 2): [20.0]})
    directed = fit_transit(labels, cams, times, 3, bandwidth_s=1.0)
    both = fit_transit(labels, cams, times, 3, bandwidth_s=1.0, symmetric=True)
    np.testing.assert_array_equal(both.counts, directed.counts + directed.counts.transpose(1, 0, 2))
    assert both.counts[2, 0, 20] == 1 and directed.counts[2, 0].sum() == 0
    # the probability of 1 -> 0 after 12 s: never seen that way, seen 0 -> 1
    assert directed.probability(1, 0.0, 0, 12.5) == 0.0 < both.probability(1, 0.0, 0, 12.5)
    np.testing.assert_allclose(both.density, both.density.transpose(1, 0, 2))


def test_the_product_uses_the_default_estimator(monkeypatch):
    from cacl.temporal import run as run_module
    from cacl.temporal.transit import DEFAULT_ESTIMATOR

    seen = []
    monkeypatch.setattr(run_module, "fit_transit", lambda *a, **k: seen.append(k))
    labels, cams, times = _visits({(0, 1): [10.0, 12.0]})
    run_module.epoch_transit(labels, cams, times)
    assert seen and all(seen[0][k] == v for k, v in DEFAULT_ESTIMATOR.items())
