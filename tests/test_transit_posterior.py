"""The transit model's ``posterior`` scale: the strangers' gaps and the share of one person,
against slow, obvious computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cacl.errors import CaclError
from cacl.temporal import TransitModel, fit_transit
from cacl.temporal.transit import STRANGERS_PRIOR, background_counts


def _crops(seed: int = 0, clusters: int = 12, cams: int = 3):
    """Crops of clusters seen in 1-3 cameras, 1-4 crops a visit, times on one clock."""
    rng = np.random.default_rng(seed)
    labels, cam, times = [], [], []
    for c in range(clusters):
        for k in rng.permutation(cams)[: rng.integers(1, cams + 1)]:
            start = rng.uniform(0, 60)
            for _ in range(rng.integers(1, 5)):
                labels.append(c)
                cam.append(int(k))
                times.append(start + rng.uniform(0, 3))
    labels += [-1, -1]  # outliers are nobody's visit
    cam += [0, 1]
    times += [5.0, 6.0]
    return np.array(labels), np.array(cam), np.array(times)


def _slow_background(labels, cams, times, num_cams, bins, bin_s):
    visits = {}
    for lab, c, t in zip(labels, cams, times):
        if lab >= 0:
            visits.setdefault((int(lab), int(c)), []).append(t)
    medians = [(lab, c, float(np.median(v))) for (lab, c), v in visits.items()]
    out = np.zeros((num_cams, num_cams, bins), dtype=int)
    for la, ca, ta in medians:
        for lb, cb, tb in medians:
            if la == lb or ca == cb:
                continue
            first_a = ta < tb or (ta == tb and ca < cb)
            if first_a and math.floor((tb - ta) / bin_s) < bins:
                out[ca, cb, math.floor((tb - ta) / bin_s)] += 1
    return out


def test_background_counts_every_two_strangers_visits_once_in_time_order():
    labels, cams, times = _crops()
    fast = background_counts(labels, cams, times, 3, 40, 2.0)
    slow = _slow_background(labels, cams, times, 3, 40, 2.0)
    np.testing.assert_array_equal(fast, slow)
    assert fast.sum() > 0 and not fast[0, 0].any()
    both = background_counts(labels, cams, times, 3, 40, 2.0, symmetric=True)
    np.testing.assert_array_equal(both, slow + slow.transpose(1, 0, 2))


def _smooth(row: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian of ``sigma`` bins, cut at 4 sigma and normalised over its bins."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    out = np.zeros(len(row))
    for i in range(len(row)):
        for d, w in zip(offsets, weights):
            if 0 <= i - d < len(row):
                out[i] += w * row[i - d]
    return out


def test_the_posterior_is_the_share_of_one_person_scaled_by_the_largest_share():
    counts = np.zeros((3, 3, 30), dtype=int)
    strangers = np.zeros((3, 3, 30), dtype=int)
    counts[0, 1, 10], counts[0, 2, 20], counts[2, 1, 5] = 4, 2, 1
    strangers[0, 1, 8:14] = 30  # a busy gap
    strangers[0, 2, :] = 3
    width = np.full((3, 3), 2.0)
    model = TransitModel(counts, 1.0, width, scale="posterior", background=strangers)
    hand = np.zeros((3, 3, 30))
    for a, b in ((0, 1), (0, 2), (2, 1)):
        same = _smooth(counts[a, b].astype(float), 2.0)
        hand[a, b] = same / (same + _smooth(strangers[a, b].astype(float), 2.0) + STRANGERS_PRIOR)
    np.testing.assert_allclose(model.density, hand / hand.max(), atol=1e-6)
    # the peak scale gives every pair 1 at its likeliest gap; the posterior does not: the
    # 0 -> 1 transit is shared with many strangers, the lone 2 -> 1 sample with none
    peak = TransitModel(counts, 1.0, width)
    assert peak.density[0, 1].max() == pytest.approx(1.0) == peak.density[2, 1].max()
    assert model.density[0, 1].max() < model.density[0, 2].max()
    assert model.density.max() == pytest.approx(1.0) and not model.density[1, 0].any()


def test_fit_transit_with_the_posterior_scale_counts_the_strangers():
    labels, cams, times = _crops(seed=3, clusters=30)
    model = fit_transit(labels, cams, times, 3, bin_s=2.0, horizon_s=80, scale="posterior",
                        symmetric=True)  # fmt: skip
    np.testing.assert_array_equal(
        model.background, background_counts(labels, cams, times, 3, 40, 2.0, symmetric=True)
    )
    peak = fit_transit(labels, cams, times, 3, bin_s=2.0, horizon_s=80, symmetric=True)
    np.testing.assert_array_equal(model.counts, peak.counts)
    assert peak.background is None and model.density.max() == pytest.approx(1.0)


def test_the_posterior_survives_save_and_load_and_bad_ones_are_refused(tmp_path):
    labels, cams, times = _crops(seed=1, clusters=20)
    model = fit_transit(labels, cams, times, 3, scale="posterior")
    model.save(tmp_path / "transit.json")
    back = TransitModel.load(tmp_path / "transit.json")
    assert back.scale == "posterior"
    np.testing.assert_array_equal(back.background, model.background)
    np.testing.assert_allclose(back.density, model.density, atol=1e-5)  # widths to 6 places
    with pytest.raises(CaclError, match="background"):
        TransitModel(model.counts, 1.0, model.bandwidth_s, scale="posterior")
    with pytest.raises(CaclError, match="unknown transit scale"):
        fit_transit(labels, cams, times, 3, scale="ratio")


def test_the_pair_posterior_is_each_pairs_share_over_its_own_largest():
    labels, cams, times = _crops(seed=2, clusters=40)
    fit = lambda scale: fit_transit(labels, cams, times, 3, scale=scale)  # noqa: E731
    posterior, pair = fit("posterior"), fit("pair_posterior")
    np.testing.assert_array_equal(pair.background, posterior.background)
    for a in range(3):
        for b in range(3):
            row = posterior.density[a, b]
            if row.any():
                np.testing.assert_allclose(pair.density[a, b], row / row.max(), atol=1e-6)
                assert pair.density[a, b].max() == pytest.approx(1.0)
            else:
                assert not pair.density[a, b].any()


def test_the_drawn_and_compared_distribution_is_the_transit_times_whatever_the_scale():
    labels, cams, times = _crops(seed=4, clusters=30)
    peak = fit_transit(labels, cams, times, 3)
    for scale in ("posterior", "pair_posterior"):
        other = fit_transit(labels, cams, times, 3, scale=scale)
        for a, b in ((0, 1), (1, 2), (2, 0)):
            np.testing.assert_allclose(other.pair_density(a, b), peak.pair_density(a, b), atol=1e-6)
            np.testing.assert_allclose(peak.pair_density(a, b).sum(), 1.0, atol=1e-6)
