"""The figures of the run report, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Each function takes plain data (``results.json``'s history records, a CMC array) and returns
``None`` when there is nothing to draw, so that the report can say what is missing instead.
No ``pyplot`` state is used: every figure is a standalone :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

LOSS_ORDER = ("L_I", "L_C_inter", "L_C_intra", "L_cam", "total")
DPI = 100


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _epoch_axis(ax: Any, epochs: Sequence[int]) -> None:
    ax.set_xlabel("epoch")
    if epochs and max(epochs) - min(epochs) <= 20:
        ax.set_xticks(range(min(epochs), max(epochs) + 1))
    ax.grid(alpha=0.3)


def metrics_per_epoch(
    history: Sequence[dict[str, Any]],
    initial: dict[str, Any] | None,
    best_epoch: int | None = None,
) -> bytes | None:
    """mAP and rank-1 at epoch 0 (before training) and at every evaluated epoch."""
    points = [(0, initial)] if initial else []
    points += [(h["epoch"], h["eval"]) for h in history if h.get("eval")]
    if not points:
        return None
    epochs = [e for e, _ in points]
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for key, label, style in (("mAP", "mAP", "o-"), ("rank1", "rank-1", "s-")):
        values = [m[key] for _, m in points]
        ax.plot(epochs, values, style, label=f"{label} (epoch {epochs[-1]}: {values[-1]:.3f})")
    if best_epoch:
        ax.axvline(best_epoch, color="gray", ls=":", label=f"best epoch ({best_epoch})")
    ax.set_ylim(0, max(1e-3, max(max(m["mAP"], m["rank1"]) for _, m in points)) * 1.15)
    ax.set_ylabel("fraction")
    ax.set_title("Test-set mAP and rank-1 (epoch 0: before training)")
    _epoch_axis(ax, epochs)
    ax.legend(loc="upper left")
    return _png(fig)


def losses_per_epoch(history: Sequence[dict[str, Any]]) -> bytes | None:
    """One small panel per loss term (their scales differ by an order of magnitude)."""
    records = [h for h in history if h.get("loss")]
    if not records:
        return None
    keys = [k for k in LOSS_ORDER if any(k in h["loss"] for h in records)]
    keys += sorted({k for h in records for k in h["loss"]} - set(keys))
    cols = min(len(keys), 4)
    rows = -(-len(keys) // cols)
    fig = Figure(figsize=(2.9 * cols, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        pts = [(h["epoch"], h["loss"][key]) for h in records if key in h["loss"]]
        ax.plot([e for e, _ in pts], [v for _, v in pts], "o-", color="tab:purple")
        ax.set_title(key)
        _epoch_axis(ax, [e for e, _ in pts])
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle("Mean loss terms per epoch")
    return _png(fig)


def clusters_per_epoch(history: Sequence[dict[str, Any]]) -> bytes | None:
    """Clusters and outliers per epoch, after refinement (solid) and before it (dashed)."""
    records = [h for h in history if h.get("cluster")]
    if not records:
        return None
    epochs = [h["epoch"] for h in records]
    fig = Figure(figsize=(8.4, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, colour in zip(axes, ("clusters", "outliers"), ("tab:blue", "tab:orange")):
        ax.plot(epochs, [h["cluster"][key] for h in records], "o-", color=colour, label=key)
        before = [h["cluster"].get(f"{key}_before_refine") for h in records]
        if any(v is not None for v in before):
            ax.plot(epochs, before, "x--", color=colour, alpha=0.6, label="before refinement")
        ax.set_title(key)
        ax.set_ylim(bottom=0)
        _epoch_axis(ax, epochs)
        ax.legend(loc="best", fontsize="small")
    samples = records[-1]["cluster"].get("samples")
    fig.suptitle(f"Pseudo labels per epoch ({samples} training images)")
    return _png(fig)


def cluster_sizes(record: dict[str, Any]) -> bytes | None:
    """Bar chart of the cluster-size histogram of one epoch's cluster statistics."""
    stats = record.get("cluster") or {}
    hist = stats.get("size_histogram")
    if not hist:
        return None
    labels, counts = list(hist), list(hist.values())
    single = stats.get("clusters", 0) - sum(counts)  # clusters of size 1 are not binned
    if single > 0:
        labels, counts = ["1", *labels], [single, *counts]
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(labels, counts, color="tab:blue")
    ax.bar_label(bars, fontsize="small")
    ax.set_xlabel("cluster size (images)")
    ax.set_ylabel("clusters")
    ax.set_ylim(0, max(counts) * 1.15 + 1)
    ax.set_title(
        f"Cluster sizes, epoch {record.get('epoch')}: {stats.get('clusters')} clusters, "
        f"{stats.get('outliers')} outliers"
    )
    return _png(fig)


def nmi_ari_per_epoch(history: Sequence[dict[str, Any]]) -> bytes | None:
    """NMI and ARI of the pseudo labels against the true identities, when they were known."""
    records = [h for h in history if "nmi" in (h.get("cluster") or {})]
    if not records:
        return None
    epochs = [h["epoch"] for h in records]
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for key, style in (("nmi", "o-"), ("ari", "s-")):
        ax.plot(epochs, [h["cluster"][key] for h in records], style, label=key.upper())
    ax.set_ylim(0, 1.05)
    ax.set_title("Pseudo labels against the true identities")
    _epoch_axis(ax, epochs)
    ax.legend(loc="lower right")
    return _png(fig)


def camera_per_epoch(history: Sequence[dict[str, Any]]) -> bytes | None:
    """How camera-bound the pseudo labels and the memory are, epoch by epoch."""
    records = [h for h in history if "multi_camera_clusters" in (h.get("cluster") or {})]
    if not records:
        return None
    epochs = [h["epoch"] for h in records]
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.add_subplot()
    series = (
        ("multi_camera_clusters", "o-", "clusters spanning 2+ cameras"),
        ("own_camera_share", "s-", "own-camera share of the memory's 10-NN"),
        ("own_camera_chance", "--", "own-camera share by chance"),
    )
    for key, style, label in series:
        if all(key in h["cluster"] for h in records):
            ax.plot(epochs, [h["cluster"][key] for h in records], style, label=label)
    ax.set_ylim(0, 1.05)
    ax.set_title("Pseudo labels and memory against the cameras")
    _epoch_axis(ax, epochs)
    ax.legend(loc="best", fontsize="small")
    return _png(fig)


def cmc_curve(cmc: np.ndarray, title: str = "CMC curve") -> bytes | None:
    """CMC (fraction of queries with a true match in the top k) for k = 1 .. len(cmc)."""
    if cmc is None or len(cmc) == 0:
        return None
    ranks = np.arange(1, len(cmc) + 1)
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(ranks, cmc, "-", color="tab:green")
    for k in (1, 5, 10, 20):
        if k <= len(cmc):
            ax.plot(k, cmc[k - 1], "o", color="tab:green")
            ax.annotate(
                f"rank-{k} {cmc[k - 1]:.3f}",
                (k, cmc[k - 1]),
                xytext=(6, -12),
                textcoords="offset points",
            )
    ax.set_xlim(0, len(cmc) + 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("rank k")
    ax.set_ylabel("matched within top k")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(fig)


def transit_curves(model: Any, pairs: int = 12) -> bytes | None:
    """One curve per ordered camera pair of a transit model (its smoothed distribution of the
    seconds from one camera to the other), the ``pairs`` with most samples."""
    totals = model.counts.sum(2)
    order = [(a, b) for a, b in zip(*np.unravel_index(np.argsort(-totals, axis=None), totals.shape))
             if a != b and totals[a, b] > 0][:pairs]  # fmt: skip
    if not order:
        return None
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    seconds = (np.arange(model.counts.shape[2]) + 0.5) * model.bin_s
    for a, b in order:
        ax.plot(seconds, model.pair_density(a, b), label=f"{a + 1}->{b + 1} ({totals[a, b]})")
    ax.set_xlabel("seconds from the first camera to the second")
    ax.set_ylabel("probability per bin")
    ax.set_title(f"transit times ({model.source} labels)")
    ax.legend(fontsize=7, ncol=2, title="cameras (transits)", title_fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)
