"""How well pseudo labels agree with the identities a person labelled (``cacl eps --labels``).

An exported split (``cacl labels export``) names, in ``split.json``, the indexed image each of its
files came from. When the index was built over a run's training crops, those images are training
rows, so the clustering of every ``eps`` can be scored against the person's identities on them
without training again: pairwise precision (of the labelled pairs a clustering puts together, the
share that are one person), recall (of the labelled same-person pairs, the share it puts together)
and their F-score; an un-clustered row is a cluster of its own.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from cacl.labels.store import LabelError


def labelled_rows(split: str | os.PathLike, paths: list[str], root: str | os.PathLike):
    """``(rows, identities)``: the training rows (indices into ``paths``) of the split's images
    and their identities. An image is found by its path relative to ``root``, else by its file
    name where that is unique among ``paths``."""
    file = Path(split) / "split.json" if Path(split).is_dir() else Path(split)
    try:
        files = json.loads(file.read_text())["files"]
        pairs = [(str(f["source"]), int(f["identity"])) for f in files]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabelError(f"{file}: not the split.json of cacl labels export ({exc})") from exc
    by_relative = {os.path.relpath(p, root).replace(os.sep, "/"): i for i, p in enumerate(paths)}
    counts = Counter(os.path.basename(p) for p in paths)
    by_name = {
        os.path.basename(p): i for i, p in enumerate(paths) if counts[os.path.basename(p)] == 1
    }
    rows, identities, missing = [], [], []
    for source, identity in pairs:
        row = by_relative.get(source.replace(os.sep, "/"), by_name.get(os.path.basename(source)))
        if row is None:
            missing.append(source)
            continue
        rows.append(row)
        identities.append(identity)
    if len(set(identities)) < 2 or len(rows) < 3:
        example = f" (e.g. {missing[0]})" if missing else ""
        raise LabelError(
            f"only {len(rows)} of the {len(pairs)} labelled images of {file} are training images "
            f"of this run{example}: label an index built over the run's own training crops"
        )
    return np.array(rows, dtype=np.int64), np.array(identities, dtype=np.int64)


def pair_agreement(labels: np.ndarray, identities: np.ndarray) -> dict[str, float]:
    """Pairwise precision, recall and F-score of ``labels`` (-1: un-clustered) against
    ``identities`` on the same rows, counted from the contingency table."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    identities = np.asarray(identities, dtype=np.int64)
    lone = labels < 0
    labels[lone] = labels.max(initial=-1) + 1 + np.arange(int(lone.sum()))  # singletons
    pairs = lambda counts: float((counts * (counts - 1) // 2).sum())  # noqa: E731
    joint = pairs(np.unique(np.stack([labels, identities]), axis=1, return_counts=True)[1])
    together = pairs(np.unique(labels, return_counts=True)[1])
    same = pairs(np.unique(identities, return_counts=True)[1])
    precision = joint / together if together else 0.0
    recall = joint / same if same else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f": f, "rows": int(len(labels))}
