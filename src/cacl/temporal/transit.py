"""How long people take from one camera to the next: a histogram per ordered camera pair,
smoothed, estimated from pseudo labels (or, to compare, from true identities).

The samples: for every cluster (one pseudo identity) the median time of its crops in each camera
it was seen in; every two of its cameras, in the order it was seen, give one transit time
``t_later - t_earlier``. One sample per visit, not per pair of crops (st-ReID's count), so a
long visit does not outweigh a short one and a 50-crop tracklet does not count 2,500 times.

The density of a pair: its histogram (``bin_s`` seconds) smoothed by a Gaussian whose width is
Silverman's rule on that pair's samples (``1.06 sd n^(-1/5)``, at least one bin; the pooled
rule where a pair has fewer than 2 samples), as st-ReID smooths its histograms with a Gaussian
but with a width that follows the data, then scaled so that its most likely transit time has
probability 1 (the fusion's constants then mean the same for every pair, however many samples
it has). Same-camera pairs, pairs never seen and gaps beyond the horizon get 0. Those are
``fit_transit``'s own defaults; the product's (:data:`DEFAULT_ESTIMATOR`) pool the two
directions, smooth in log-seconds and divide by the strangers' gaps first (:data:`SCALES`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from cacl.errors import CaclError

#: Largest ``C x C x bins`` table (40 MB of float32).
MAX_CELLS = 10_000_000
TRANSIT_FILE = "transit.json"


@dataclass
class TransitModel:
    counts: np.ndarray  # (C, C, B) transit samples [earlier camera, later camera, bin]
    bin_s: float
    bandwidth_s: np.ndarray  # (C, C) smoothing width per pair: seconds, or log-seconds ("log")
    source: str = "pseudo"
    kernel: str = "time"  # :data:`KERNELS`
    scale: str = "peak"  # :data:`SCALES`
    background: np.ndarray | None = None  # (C, C, B) gaps between different clusters' visits

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if self.scale not in SCALES:
            raise CaclError(f"unknown transit scale {self.scale!r}; known: {', '.join(SCALES)}")
        if self.scale != "peak":
            if self.background is None or np.shape(self.background) != self.counts.shape:
                raise CaclError("a posterior transit model needs background counts shaped as "
                                f"its counts {self.counts.shape}")  # fmt: skip
            self.background = np.asarray(self.background, dtype=np.int64)
        self.bandwidth_s = np.asarray(self.bandwidth_s, dtype=np.float64)
        c = self.counts.shape[0]
        if self.counts.ndim != 3 or self.counts.shape[1] != c or self.bandwidth_s.shape != (c, c):
            raise CaclError(f"a transit model needs (C, C, B) counts, got {self.counts.shape}")
        if self.kernel not in KERNELS:
            raise CaclError(f"unknown transit kernel {self.kernel!r}; known: {', '.join(KERNELS)}")
        self.smoothed = self._smoothed()
        self.density = self._density()

    @property
    def num_cams(self) -> int:
        return self.counts.shape[0]

    @property
    def horizon_s(self) -> float:
        return self.counts.shape[2] * self.bin_s

    def _smooth(self, row: np.ndarray, a: int, b: int) -> np.ndarray:
        if self.kernel == "log":
            return log_smooth(row, self.bin_s, self.bandwidth_s[a, b])
        sigma = max(1.0, self.bandwidth_s[a, b] / self.bin_s)
        return gaussian_filter1d(row, sigma, mode="constant", truncate=4.0)

    def _smoothed(self) -> np.ndarray:
        """``(C, C, B)`` each pair's smoothed transit counts (0 for a pair without any)."""
        out = np.zeros(self.counts.shape, dtype=np.float64)
        for a in range(self.num_cams):
            for b in range(self.num_cams):
                row = self.counts[a, b].astype(np.float64)
                if a != b and row.sum() > 0:
                    out[a, b] = self._smooth(row, a, b)
        return out

    def _density(self) -> np.ndarray:
        density = np.zeros(self.counts.shape, dtype=np.float64)
        for a in range(self.num_cams):
            for b in range(self.num_cams):
                smooth = self.smoothed[a, b]
                if not smooth.any():
                    continue
                if self.scale == "peak":
                    density[a, b] = smooth / smooth.max()
                else:  # the share of visit pairs at this gap that are one person
                    strangers = self._smooth(self.background[a, b].astype(np.float64), a, b)
                    density[a, b] = smooth / (smooth + strangers + STRANGERS_PRIOR)
                    if self.scale == "pair_posterior":
                        density[a, b] /= density[a, b].max()
        if self.scale == "posterior" and density.max() > 0:
            density /= density.max()
        return density.astype(np.float32)

    def probability(self, cam_a, time_a, cam_b, time_b) -> np.ndarray:
        """Transit probability (0..1) of every pair (broadcast): a person seen in ``cam_a`` at
        ``time_a`` and in ``cam_b`` at ``time_b``, whichever came first. 0-based cameras."""
        ca, cb = np.broadcast_arrays(np.asarray(cam_a), np.asarray(cam_b))
        ta, tb = np.broadcast_arrays(np.asarray(time_a, float), np.asarray(time_b, float))
        ca, cb, ta, tb = np.broadcast_arrays(ca, cb, ta, tb)
        first = np.where(ta <= tb, ca, cb)
        second = np.where(ta <= tb, cb, ca)
        with np.errstate(invalid="ignore"):
            k = np.floor(np.abs(tb - ta) / self.bin_s)
        ok = (
            (ca != cb)
            & np.isfinite(k)
            & (k < self.counts.shape[2])
            & (ca >= 0) & (cb >= 0)
            & (ca < self.num_cams) & (cb < self.num_cams)
        )  # fmt: skip
        out = np.zeros(ca.shape, dtype=np.float32)
        out[ok] = self.density[first[ok], second[ok], k[ok].astype(np.int64)]
        return out

    def pair_density(self, a: int, b: int) -> np.ndarray:
        """The smoothed transit-time distribution of ``a -> b`` normalised to sum 1 (zeros if
        the pair has no samples), whatever the :data:`SCALES` of the fusion's probability."""
        row = self.smoothed[a, b]
        total = row.sum()
        return row / total if total > 0 else row

    def to_json(self) -> dict:
        return {
            "num_cams": self.num_cams,
            "bins": int(self.counts.shape[2]),
            "bin_s": self.bin_s,
            "source": self.source,
            "kernel": self.kernel,
            "bandwidth_s": self.bandwidth_s.round(6).tolist(),
            "counts": _sparse(self.counts),
            "scale": self.scale,
            **({"background": _sparse(self.background)} if self.background is not None else {}),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (a temporary file renamed over ``path``)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json()))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TransitModel:
        try:
            data = json.loads(Path(path).read_text())
            c, bins = int(data["num_cams"]), int(data["bins"])
            if c < 1 or bins < 1 or c * c * bins > MAX_CELLS:
                raise ValueError(f"{c} cameras x {bins} bins is out of range")
            counts = _dense(data["counts"], (c, c, bins))
            background = data.get("background")
            if background is not None:
                background = _dense(background, (c, c, bins))
            return cls(counts, float(data["bin_s"]), np.array(data["bandwidth_s"]),
                       str(data.get("source", "pseudo")), str(data.get("kernel", "time")),
                       str(data.get("scale", "peak")), background)  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise CaclError(f"{path}: not a transit model cacl wrote ({exc})") from exc


def _sparse(counts: np.ndarray) -> list[list[int]]:
    return [[int(a), int(b), int(k), int(counts[a, b, k])] for a, b, k in zip(*np.nonzero(counts))]


def _dense(rows, shape: tuple[int, int, int]) -> np.ndarray:
    counts = np.zeros(shape, dtype=np.int64)
    for a, b, k, n in rows:
        counts[a, b, k] = n
    return counts


def silverman(samples: np.ndarray) -> float:
    """Silverman's rule of thumb for a Gaussian kernel, seconds (NaN under 2 samples)."""
    if len(samples) < 2:
        return math.nan
    return 1.06 * float(np.std(samples, ddof=1)) * len(samples) ** -0.2


def silverman_robust(samples: np.ndarray) -> float:
    """Silverman's robust rule, ``0.9 min(sd, IQR / 1.34) n^(-1/5)`` (his eq. 3.31; R's
    ``bw.nrd0``), seconds (NaN under 2 samples): it does not widen the kernel for the second
    mode or the stray samples that make the sd large (two-hop routes, wrong clusters)."""
    if len(samples) < 2:
        return math.nan
    samples = np.asarray(samples, dtype=np.float64)
    spread = float(np.std(samples, ddof=1))
    q75, q25 = np.percentile(samples, [75, 25])
    iqr = (q75 - q25) / 1.34
    spread = min(spread, iqr) if iqr > 0 else spread
    return 0.9 * spread * len(samples) ** -0.2


def pooled_spread(groups: list[np.ndarray]) -> float:
    """The within-group standard deviation of several groups' samples, pooled (``sqrt(sum of
    squared deviations from each group's mean / (N - groups))``; NaN without two samples in
    one group)."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g) >= 2]
    dof = sum(len(g) - 1 for g in groups)
    if dof < 1:
        return math.nan
    return math.sqrt(sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / dof)


#: Bandwidth rules of :func:`fit_transit`: each pair's own spread (Silverman's rule, or his
#: robust one), or ``pooled``: the spread pooled over all pairs, Silverman's factor
#: ``1.06 n^(-1/5)`` with the pair's own ``n`` (every pair borrows the others' spread).
BANDWIDTH_RULES = {"silverman": silverman, "robust": silverman_robust, "pooled": silverman}

#: Kernels of :func:`fit_transit`: ``time``, a Gaussian in seconds; ``log``, a Gaussian in
#: log-seconds (a log-normal kernel), whose width in seconds grows with the transit time, as
#: when people's walking speeds differ by a share (a 15 % slower walker takes 15 % longer on
#: every route, long or short).
KERNELS = ("time", "log")

#: How a pair's smoothed counts become the fusion's probability: ``peak``, divided by the
#: pair's own peak (every pair's likeliest transit gets 1: st-ReID's per-pair normalisation up
#: to a constant); ``posterior``, the share of all visit pairs of the two cameras at that gap
#: that are one person (``same / (same + strangers + STRANGERS_PRIOR)``, strangers from
#: :func:`background_counts`), divided by the largest share of any pair: it keeps what
#: ``peak`` throws away, that a gap many strangers share says less than one few strangers
#: share, and that a route few people take says less than a busy one.
#: ``pair_posterior``: the same share divided by the pair's own largest (the strangers' gaps
#: kept, the route's traffic dropped: with few samples per pair that traffic is noisy).
SCALES = ("peak", "posterior", "pair_posterior")
#: The smoothed stranger pairs added to every bin of ``posterior`` (a bin no two strangers
#: fell in does not make a lone sample certain).
STRANGERS_PRIOR = 1.0

#: The estimator of the product's transit models (training's ``transit.json``, ``cacl eval
#: --st``): each pair's samples pooled with the reverse pair's (a walk from b to a takes as long
#: as one from a to b, which doubles the samples per pair), the log-normal kernel with each
#: pair's Silverman width, and each pair's share of one person among all visit pairs at a gap,
#: over its own largest (``pair_posterior``); chosen with
#: :data:`cacl.temporal.fusion.DEFAULT_FUSION` on held-out site seeds (docs/method.md).
DEFAULT_ESTIMATOR = {"kernel": "log", "rule": "silverman", "symmetric": True,
                     "scale": "pair_posterior"}  # fmt: skip


def log_smooth(row: np.ndarray, bin_s: float, width: float) -> np.ndarray:
    """A histogram row (bins of ``bin_s`` seconds, samples at the bin centres) smoothed by a
    Gaussian of sd ``width`` in log-seconds: the log-normal kernel density at every bin's
    centre (the ``1/t`` of the change of variable included)."""
    centres = (np.arange(len(row)) + 0.5) * bin_s
    filled = np.flatnonzero(row)
    z = (np.log(centres)[:, None] - np.log(centres[filled])[None, :]) / width
    return (np.exp(-0.5 * z * z) @ row[filled]) / centres


def transit_visits(labels, cams, times) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cluster, camera, seconds)`` of every visit: the median time of a cluster's crops in
    one camera (labels < 0, outliers, and unknown times left out), sorted by cluster."""
    labels, cams, times = np.asarray(labels), np.asarray(cams), np.asarray(times, float)
    keep = (labels >= 0) & np.isfinite(times)
    labels, cams, times = labels[keep], cams[keep], times[keep]
    order = np.lexsort((cams, labels))
    labels, cams, times = labels[order], cams[order], times[order]
    key = labels.astype(np.int64) * (int(cams.max(initial=0)) + 1) + cams
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    medians = np.array([np.median(times[s:e]) for s, e in zip(starts, ends)], dtype=np.float64)
    return labels[starts], cams[starts], medians


def transit_samples(labels, cams, times) -> list[tuple[int, int, float]]:
    """``(earlier camera, later camera, seconds)`` for every two cameras of every cluster,
    from the median time of the cluster's crops in each camera (labels < 0: outliers)."""
    visit_label, visit_cam, visit_time = transit_visits(labels, cams, times)
    out = []
    group_starts = np.flatnonzero(np.r_[True, visit_label[1:] != visit_label[:-1]])
    for s, e in zip(group_starts, np.r_[group_starts[1:], len(visit_label)]):
        seen = sorted(range(s, e), key=lambda v: (visit_time[v], visit_cam[v]))
        for x, i in enumerate(seen):
            for j in seen[x + 1 :]:
                out.append((int(visit_cam[i]), int(visit_cam[j]), visit_time[j] - visit_time[i]))
    return out


def background_counts(labels, cams, times, num_cams: int, bins: int, bin_s: float,
                      symmetric: bool = False) -> np.ndarray:  # fmt: skip
    """``(C, C, B)`` gaps between the visits of two *different* clusters in two cameras
    (earlier camera, later camera, bin of the gap): how often each gap occurs between any two
    people, the denominator of :data:`SCALES`' ``posterior``."""
    visit_label, visit_cam, visit_time = transit_visits(labels, cams, times)
    out = np.zeros((num_cams, num_cams, bins), dtype=np.int64)
    for a in range(num_cams):
        for b in range(num_cams):
            if a == b:
                continue
            ia, ib = np.flatnonzero(visit_cam == a), np.flatnonzero(visit_cam == b)
            gap = visit_time[ib][None, :] - visit_time[ia][:, None]
            other = visit_label[ia][:, None] != visit_label[ib][None, :]
            # a -> b when a's visit came first (a tie counts for the lower camera first)
            later = (gap > 0) | ((gap == 0) & (a < b))
            k = np.floor(gap[other & later] / bin_s).astype(np.int64)
            out[a, b] += np.bincount(k[k < bins], minlength=bins)
    if symmetric:
        out = out + out.transpose(1, 0, 2)
    return out


def fit_transit(
    labels, cams, times, num_cams: int, *, bin_s: float = 1.0, horizon_s: float | None = None,
    bandwidth_s: float | None = None, source: str = "pseudo", rule: str = "silverman",
    kernel: str = "time", symmetric: bool = False, scale: str = "peak",
) -> TransitModel:  # fmt: skip
    """The :class:`TransitModel` of crops with cluster ``labels``, 0-based ``cams`` and
    ``times`` (seconds); ``horizon_s`` defaults to the longest transit seen plus a bin;
    ``rule`` (:data:`BANDWIDTH_RULES`) sets each pair's smoothing, in the units of ``kernel``
    (:data:`KERNELS`), unless ``bandwidth_s`` does; ``scale`` (:data:`SCALES`) how the
    smoothed counts become probabilities."""
    if scale not in SCALES:
        raise CaclError(f"unknown transit scale {scale!r}; known: {', '.join(SCALES)}")
    if bin_s <= 0:
        raise CaclError(f"bin_s must be positive, got {bin_s}")
    if rule not in BANDWIDTH_RULES:
        raise CaclError(f"unknown bandwidth rule {rule!r}; known: {', '.join(BANDWIDTH_RULES)}")
    if kernel not in KERNELS:
        raise CaclError(f"unknown transit kernel {kernel!r}; known: {', '.join(KERNELS)}")
    bandwidth = BANDWIDTH_RULES[rule]
    samples = transit_samples(labels, cams, times)
    if symmetric:  # a walk from b to a takes as long as one from a to b: both pairs' samples
        samples = list(samples) + [(b, a, gap) for a, b, gap in samples]
    if not samples:
        raise CaclError(
            "no cluster spans two cameras: there is no transit time to learn (train longer, or "
            "check that the cameras share one clock)"
        )
    gaps = np.array([s[2] for s in samples])
    horizon = float(horizon_s) if horizon_s is not None else float(gaps.max()) + bin_s
    bins = max(1, int(math.ceil(horizon / bin_s)))
    if num_cams * num_cams * bins > MAX_CELLS:
        raise CaclError(
            f"{num_cams} cameras x {bins} bins of {bin_s} s is too large a table; use a wider bin"
        )
    counts = np.zeros((num_cams, num_cams, bins), dtype=np.int64)
    per_pair: dict[tuple[int, int], list[float]] = {}
    for a, b, gap in samples:
        k = int(gap // bin_s)
        if k < bins:
            counts[a, b, k] += 1
            # the kernel's units: the log kernel sees each sample at its bin's centre
            per_pair.setdefault((a, b), []).append(gap if kernel == "time" else (k + 0.5) * bin_s)
    units = (lambda v: np.asarray(v)) if kernel == "time" else (lambda v: np.log(v))  # noqa: E731
    values = {pair: units(v) for pair, v in per_pair.items()}
    # the narrowest width: one bin (seconds), or one bin at the median transit (log-seconds)
    least = bin_s if kernel == "time" else bin_s / max(float(np.median(gaps)), bin_s)
    pooled = bandwidth(units(np.maximum(gaps, bin_s / 2)))
    spread = pooled_spread(list(values.values())) if rule == "pooled" else math.nan
    width = np.full((num_cams, num_cams), bandwidth_s if bandwidth_s else pooled, dtype=float)
    if bandwidth_s is None:
        for (a, b), v in values.items():
            h = 1.06 * spread * len(v) ** -0.2 if rule == "pooled" else bandwidth(v)
            width[a, b] = h if math.isfinite(h) and h > 0 else pooled
    width = np.where(np.isfinite(width) & (width > 0), width, least)
    background = None
    if scale != "peak":
        background = background_counts(labels, cams, times, num_cams, bins, bin_s, symmetric)
    return TransitModel(counts, float(bin_s), np.maximum(width, least), source, kernel, scale,
                        background)  # fmt: skip


def compare(a: TransitModel, b: TransitModel) -> dict:
    """Per camera pair with samples in both: the Wasserstein-1 distance (seconds) and the total
    variation (0..1) between the two smoothed distributions, and their means over the pairs."""
    if a.num_cams != b.num_cams or a.bin_s != b.bin_s:
        raise CaclError("transit models with different cameras or bins cannot be compared")
    bins = max(a.counts.shape[2], b.counts.shape[2])
    pairs = {}
    for i in range(a.num_cams):
        for j in range(a.num_cams):
            pa, pb = a.pair_density(i, j), b.pair_density(i, j)
            if i == j or pa.sum() == 0 or pb.sum() == 0:
                continue
            pa, pb = np.pad(pa, (0, bins - len(pa))), np.pad(pb, (0, bins - len(pb)))
            w1 = float(np.abs(np.cumsum(pa) - np.cumsum(pb)).sum() * a.bin_s)
            pairs[f"{i}->{j}"] = {"w1_s": w1, "tv": float(0.5 * np.abs(pa - pb).sum())}
    mean = lambda key: float(np.mean([p[key] for p in pairs.values()])) if pairs else math.nan  # noqa: E731
    return {"pairs": pairs, "mean_w1_s": mean("w1_s"), "mean_tv": mean("tv")}
