"""The transit model of a training run and the fused query x gallery distances of ``cacl eval
--st``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from cacl.data.times import require_times
from cacl.data.types import ReidDataset
from cacl.errors import CaclError
from cacl.temporal.fusion import fused_distance
from cacl.temporal.transit import DEFAULT_ESTIMATOR, TransitModel, fit_transit

log = logging.getLogger(__name__)

SOURCES = ("pseudo", "truth")


def run_pseudo_labels(checkpoint: str | Path) -> np.ndarray:
    """The last relabelling's pseudo labels of a run (``last.pt``, else the given file)."""
    from cacl.checkpoints.io import LAST, load_checkpoint

    state = load_checkpoint(checkpoint, prefer=LAST)
    classes = state.get("classes")
    if classes is None:
        raise CaclError(f"{state['_path']} holds no pseudo labels (was it trained by cacl train?)")
    return torch.as_tensor(classes).numpy()


def run_transit(checkpoint: str | Path, dataset: ReidDataset, source: str = "pseudo",
                times: np.ndarray | None = None, **options) -> TransitModel:  # fmt: skip
    """The transit model of the run's last pseudo labels (``pseudo``) or of the training set's
    true identities (``truth``, for comparison only) on ``dataset``'s training images;
    ``options`` go to :func:`~cacl.temporal.transit.fit_transit` over those of
    :data:`~cacl.temporal.transit.DEFAULT_ESTIMATOR`."""
    if source not in SOURCES:
        raise CaclError(f"the transit source must be one of {SOURCES}, got {source!r}")
    if times is None:
        times = require_times(dataset, "train")
    cams = np.array([s.camid for s in dataset.train])
    if source == "truth":
        labels = np.array([s.pid for s in dataset.train])
        if (labels < 0).all():
            raise CaclError(
                f"{dataset.name} ({dataset.root}) has no true identities for its training "
                "images: use --st-source pseudo"
            )
    else:
        labels = run_pseudo_labels(checkpoint)
        if len(labels) != len(cams):
            raise CaclError(
                f"the run's pseudo labels cover {len(labels)} images, its training set now has "
                f"{len(cams)}: evaluate on the data it was trained on"
            )
    everyone = [s.camid for s in dataset.train + dataset.query + dataset.gallery]
    options = {**DEFAULT_ESTIMATOR, **options}
    return fit_transit(labels, cams, times, max(everyone) + 1, source=source, **options)


def epoch_transit(classes, cams, times, epoch: int | None = None) -> TransitModel | None:
    """The transit model of one epoch's pseudo labels, or None (logged) when the times are not
    all known or no cluster spans two cameras: a training run never fails for it."""
    times = np.asarray(times, dtype=np.float64)
    if not np.isfinite(times).all():
        return None
    try:
        return fit_transit(classes, cams, times, int(np.max(cams)) + 1, **DEFAULT_ESTIMATOR)
    except CaclError as exc:
        log.warning("%sno transit-time model (%s)", f"epoch {epoch}: " if epoch else "", exc)
        return None


def cosine(qf: torch.Tensor, gf: torch.Tensor) -> np.ndarray:
    q = torch.nn.functional.normalize(qf.float(), dim=1)
    g = torch.nn.functional.normalize(gf.float(), dim=1)
    return (q @ g.t()).numpy()


def st_distances(qf, gf, q_cams, q_times, g_cams, g_times, model: TransitModel,
                 rerank: bool = False,
                 fusion: tuple[str, dict] | None = None) -> np.ndarray:  # fmt: skip
    """Fused appearance + time distances ``(q, g)``. With ``rerank`` the appearance part is the
    k-reciprocal re-ranked distance ``d`` (in ``[0, 1]``), fused as the similarity ``1 - d``:
    re-ranking works on neighbourhoods in appearance space, and re-ranking the fused distances
    instead breaks them (two crops of one person in one camera have transit probability 0, so
    the query-query and gallery-gallery neighbour sets lose their closest members). ``fusion``:
    ``(name, parameters)`` of :data:`cacl.temporal.fusion.FUSIONS` (default
    :data:`~cacl.temporal.fusion.DEFAULT_FUSION`)."""
    qc, gc = np.asarray(q_cams)[:, None], np.asarray(g_cams)[None, :]
    qt, gt = np.asarray(q_times)[:, None], np.asarray(g_times)[None, :]
    probability = model.probability(qc, qt, gc, gt)
    if not rerank:
        return fused_distance(cosine(qf, gf), probability, fusion)
    from cacl.evaluation.rerank import re_ranking_features

    return fused_distance(1.0 - re_ranking_features(qf, gf), probability, fusion)
