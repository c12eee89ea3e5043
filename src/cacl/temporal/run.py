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
from cacl.temporal.transit import TransitModel, fit_transit

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
                times: np.ndarray | None = None) -> TransitModel:  # fmt: skip
    """The transit model of the run's last pseudo labels (``pseudo``) or of the training set's
    true identities (``truth``, for comparison only) on ``dataset``'s training images."""
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
    return fit_transit(labels, cams, times, max(everyone) + 1, source=source)


def cosine(qf: torch.Tensor, gf: torch.Tensor) -> np.ndarray:
    q = torch.nn.functional.normalize(qf.float(), dim=1)
    g = torch.nn.functional.normalize(gf.float(), dim=1)
    return (q @ g.t()).numpy()


def st_distances(qf, gf, q_cams, q_times, g_cams, g_times, model: TransitModel,
                 rerank: bool = False) -> np.ndarray:  # fmt: skip
    """Fused appearance + time distances ``(q, g)``; with ``rerank``, k-reciprocal re-ranking
    of the fused query-gallery, query-query and gallery-gallery distances."""
    qc, gc = np.asarray(q_cams)[:, None], np.asarray(g_cams)[None, :]
    qt, gt = np.asarray(q_times)[:, None], np.asarray(g_times)[None, :]
    qg = fused_distance(cosine(qf, gf), model.probability(qc, qt, gc, gt))
    if not rerank:
        return qg
    from cacl.evaluation.rerank import re_ranking

    qq = fused_distance(cosine(qf, qf), model.probability(qc, qt, qc.T, qt.T))
    gg = fused_distance(cosine(gf, gf), model.probability(gc.T, gt.T, gc, gt))
    return re_ranking(qg, qq, gg)
