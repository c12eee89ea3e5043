"""``cacl eps --labels``: pseudo labels scored against the identities a person labelled."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from cacl.labels.agreement import labelled_rows, pair_agreement
from cacl.labels.store import LabelError


def brute_force(labels, identities):
    lab = [(-1 - i if x < 0 else x) for i, x in enumerate(labels)]  # outliers: alone
    joint = together = same = 0
    for i, j in itertools.combinations(range(len(lab)), 2):
        t, s = lab[i] == lab[j], identities[i] == identities[j]
        together += t
        same += s
        joint += t and s
    p, r = joint / together if together else 0.0, joint / same if same else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_pair_agreement_against_all_pairs(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, 5, 40)
    identities = rng.integers(0, 6, 40)
    got = pair_agreement(labels, identities)
    p, r, f = brute_force(labels, identities)
    assert (got["precision"], got["recall"], got["f"]) == pytest.approx((p, r, f))
    assert got["rows"] == 40


def test_the_identities_themselves_score_one_and_all_outliers_zero():
    ids = np.array([0, 0, 1, 1, 1, 2])
    assert pair_agreement(ids, ids)["f"] == 1.0
    assert pair_agreement(np.full(6, -1), ids)["f"] == 0.0


def split(tmp_path, files):
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "split.json").write_text(json.dumps({"files": files}))
    return tmp_path / "split"


def test_labelled_images_are_found_by_relative_path_then_by_name(tmp_path):
    root = "/data/crops"
    paths = [f"{root}/cam1/a.jpg", f"{root}/cam2/a.jpg", f"{root}/cam2/b.jpg", f"{root}/cam3/c.jpg"]
    files = [
        {"source": "cam2/a.jpg", "identity": 1},  # relative path (a.jpg alone is ambiguous)
        {"source": "elsewhere/b.jpg", "identity": 1},  # a unique file name
        {"source": "c.jpg", "identity": 2},
        {"source": "nowhere.jpg", "identity": 2},  # not a training image: left out
    ]
    rows, identities = labelled_rows(split(tmp_path, files), paths, root)
    assert rows.tolist() == [1, 2, 3] and identities.tolist() == [1, 1, 2]


def test_a_split_of_other_images_is_refused_with_what_to_do(tmp_path):
    files = [{"source": f"x{i}.jpg", "identity": i % 2} for i in range(6)]
    with pytest.raises(LabelError, match="only 0 of the 6 labelled images"):
        labelled_rows(split(tmp_path, files), ["/r/a.jpg", "/r/b.jpg"], "/r")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "split.json").write_text("{")
    with pytest.raises(LabelError, match="not the split.json"):
        labelled_rows(tmp_path / "bad", ["/r/a.jpg"], "/r")
