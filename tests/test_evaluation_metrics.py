"""Tests of cacl.evaluation.metrics against a slow per-query transcription of torchreid."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cacl.errors import EvaluationError
from cacl.evaluation import RetrievalResult, evaluate, evaluate_rank
from peak_memory import hwm_increase


def reference_eval(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    same_camera_filter: bool = True,
) -> tuple[np.ndarray, float, float, int]:
    """Per-query loop following torchreid's python ``eval_market1501``, plus mINP.

    Two additions: ``same_camera_filter=False`` removes nothing, and a filtered row shorter than
    ``max_rank`` is padded with its last CMC value (torchreid would build a ragged array there).
    Returns ``(cmc, mAP, mINP, num_valid)``.
    """
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        if same_camera_filter:
            remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        else:
            remove = np.zeros(num_g, dtype=bool)
        raw_cmc = matches[q_idx][~remove]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        last_hit = np.flatnonzero(raw_cmc).max()
        all_inp.append(cmc[last_hit] / (last_hit + 1.0))
        cmc[cmc > 1] = 1
        cmc = cmc[:max_rank]
        if len(cmc) < max_rank:
            cmc = np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])
        all_cmc.append(cmc)
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    num_valid = len(all_ap)
    assert num_valid > 0
    cmc_mean = np.asarray(all_cmc).astype(np.float32).sum(0) / float(num_valid)
    return cmc_mean, float(np.mean(all_ap)), float(np.mean(all_inp)), num_valid


def random_problem(
    rng: np.random.Generator,
    num_q: int,
    num_g: int,
    num_ids: int,
    num_cams: int,
    tie_levels: int | None = None,
    distractors: float = 0.0,
    dtype: type = np.float32,
) -> tuple[np.ndarray, ...]:
    """Random distances and labels; ``tie_levels`` draws distances from that many values."""
    if tie_levels is None:
        dist = rng.random((num_q, num_g)).astype(dtype)
    else:
        dist = rng.integers(0, tie_levels, size=(num_q, num_g)).astype(dtype)
    q_pids = rng.integers(1, num_ids + 1, size=num_q)
    g_pids = rng.integers(1, num_ids + 1, size=num_g)
    g_pids[rng.random(num_g) < distractors] = 0
    q_camids = rng.integers(0, num_cams, size=num_q)
    g_camids = rng.integers(0, num_cams, size=num_g)
    return dist, q_pids, g_pids, q_camids, g_camids


def assert_matches_reference(
    problem: tuple[np.ndarray, ...], max_rank: int, same_camera_filter: bool = True, **kwargs
) -> RetrievalResult:
    result = evaluate(*problem, max_rank=max_rank, same_camera_filter=same_camera_filter, **kwargs)
    cmc, mAP, mINP, num_valid = reference_eval(*problem, max_rank, same_camera_filter)
    assert result.cmc.dtype == np.float32
    np.testing.assert_array_equal(result.cmc, cmc)
    assert result.mAP == pytest.approx(mAP, rel=1e-12, abs=1e-15)
    assert result.mINP == pytest.approx(mINP, rel=1e-12, abs=1e-15)
    assert result.num_valid_queries == num_valid
    assert result.num_skipped == problem[0].shape[0] - num_valid
    return result


@pytest.mark.parametrize("seed", range(12))
def test_random_inputs_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(1, 30)), int(rng.integers(5, 120))
    problem = random_problem(
        rng,
        num_q,
        num_g,
        num_ids=int(rng.integers(1, 12)),
        num_cams=int(rng.integers(1, 5)),
        distractors=float(rng.choice([0.0, 0.3])),
        dtype=(np.float32, np.float64)[seed % 2],
    )
    ensure_one_valid_query(problem)
    assert_matches_reference(problem, max_rank=int(rng.integers(1, 60)))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("tie_levels", [2, 5, 40])
def test_ties_break_like_argsort(seed: int, tie_levels: int) -> None:
    rng = np.random.default_rng(100 + seed)
    problem = random_problem(rng, 20, 90, num_ids=6, num_cams=3, tie_levels=tie_levels)
    ensure_one_valid_query(problem)
    assert_matches_reference(problem, max_rank=20)


def test_mixed_tied_and_untied_rows_in_small_chunks() -> None:
    rng = np.random.default_rng(7)
    problem = random_problem(rng, 60, 200, num_ids=15, num_cams=4, distractors=0.2)
    dist = problem[0]
    dist[::3] = np.round(dist[::3] * 8) / 8  # every third row has many ties
    # A tiny budget forces one query per chunk; threads must give the same numbers.
    for kwargs in ({}, {"chunk_bytes": 1}, {"chunk_bytes": 1, "num_workers": 2}):
        assert_matches_reference(problem, max_rank=50, **kwargs)


def test_chunked_evaluation_is_exact_and_bounded() -> None:
    """Chunks of queries give the numbers of one chunk, bit for bit, in working memory bounded by
    ``chunk_bytes`` (a sorted or argsorted copy of the whole 80 MB matrix would exceed it)."""
    rng = np.random.default_rng(11)
    problem = random_problem(rng, 1000, 20_000, num_ids=300, num_cams=6, distractors=0.1)
    whole = evaluate(*problem, chunk_bytes=2**40)
    results = []
    rise = hwm_increase(lambda: results.append(evaluate(*problem, chunk_bytes=4 * 2**20)))
    chunked = results[0]
    assert rise < 24 * 2**20, f"peak rose by {rise / 2**20:.0f} MB"
    np.testing.assert_array_equal(chunked.cmc, whole.cmc)
    np.testing.assert_array_equal(chunked.query_ap, whole.query_ap)
    assert chunked.mAP == whole.mAP and chunked.mINP == whole.mINP
    assert chunked.num_valid_queries == whole.num_valid_queries


def test_same_camera_filter_off_matches_reference() -> None:
    rng = np.random.default_rng(3)
    problem = random_problem(rng, 25, 80, num_ids=5, num_cams=2, tie_levels=10)
    on = assert_matches_reference(problem, max_rank=10, same_camera_filter=True)
    off = assert_matches_reference(problem, max_rank=10, same_camera_filter=False)
    assert off.num_valid_queries >= on.num_valid_queries


def test_duplicate_pids_and_distractors_hand_example() -> None:
    # Query id 1 from camera 0.  Ranked gallery: [id 1 cam 0 (removed), id 0, id 1 cam 1,
    # id 1 cam 2, id 0].  After removal: [0, 1, 1, 0] -> AP = (1/2 + 2/3) / 2, INP = 2 / 3.
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], dtype=np.float32)
    g_pids = np.array([1, 0, 1, 1, 0])
    g_camids = np.array([0, 1, 1, 2, 0])
    result = evaluate(dist, np.array([1]), g_pids, np.array([0]), g_camids, max_rank=4)
    np.testing.assert_array_equal(result.cmc, np.array([0, 1, 1, 1], dtype=np.float32))
    assert result.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result.mINP == pytest.approx(2 / 3)
    assert result.rank(2) == 1.0
    # Without the filter the first image is a true match too: [1, 0, 1, 1, 0].
    off = evaluate(
        dist, np.array([1]), g_pids, np.array([0]), g_camids, max_rank=4, same_camera_filter=False
    )
    assert off.mAP == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert off.mINP == pytest.approx(3 / 4)


def test_minp_hand_example_two_queries() -> None:
    # Query A (id 1): true matches at ranks 1 and 4 -> INP = 2 / 4.
    # Query B (id 2): true match at rank 2 -> INP = 1 / 2.  mINP = 0.5.
    dist = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 2.0, 1.0, 3.0]])
    g_pids = np.array([1, 3, 2, 1])
    result = evaluate(dist, np.array([1, 2]), g_pids, np.array([0, 0]), np.ones(4, int))
    assert result.mINP == pytest.approx(0.5)
    assert result.mAP == pytest.approx(((1 + 2 / 4) / 2 + 1 / 2) / 2)


def test_max_rank_larger_than_gallery(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(11)
    problem = random_problem(rng, 10, 12, num_ids=3, num_cams=3)
    with caplog.at_level(logging.WARNING, logger="cacl.evaluation.metrics"):
        result = assert_matches_reference(problem, max_rank=50)
    assert len(result.cmc) == 12
    assert result.cmc[-1] == 1.0
    assert "fewer than max_rank" in caplog.text


def test_skipped_queries_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    dist = np.random.default_rng(0).random((4, 5)).astype(np.float32)
    q_pids = np.array([1, 2, 9, 1])  # id 9 is not in the gallery: the third query is skipped
    g_pids = np.array([1, 1, 2, 2, 0])
    q_camids = np.array([0, 0, 0, 1])
    g_camids = np.array([1, 0, 1, 0, 0])
    with caplog.at_level(logging.WARNING, logger="cacl.evaluation.metrics"):
        result = assert_matches_reference((dist, q_pids, g_pids, q_camids, g_camids), max_rank=5)
    assert result.num_valid_queries == 3 and result.num_skipped == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1 of 4 queries" in warnings[0].getMessage()


def test_no_valid_query_raises_with_explanation() -> None:
    dist = np.ones((2, 3), dtype=np.float32)
    g_pids = np.array([1, 1, 2])
    g_camids = np.array([0, 0, 1])
    with pytest.raises(EvaluationError, match="only under their own camera"):
        evaluate(dist, np.array([1, 1]), g_pids, np.array([0, 0]), g_camids)
    with pytest.raises(EvaluationError, match="absent from the gallery"):
        evaluate_rank(dist, np.array([1, 7]), g_pids, np.array([0, 0]), g_camids)
    # Without the filter the same-camera images count, so the first case becomes valid.
    assert evaluate(
        dist, np.array([1, 1]), g_pids, np.array([0, 0]), g_camids, same_camera_filter=False
    ).mAP == pytest.approx(1.0)


def test_torch_tensors_give_the_same_result() -> None:
    rng = np.random.default_rng(5)
    problem = random_problem(rng, 15, 40, num_ids=4, num_cams=3, tie_levels=6)
    expected = evaluate(*problem, max_rank=10)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in problem]
    got = evaluate(*tensors, max_rank=10)
    np.testing.assert_array_equal(got.cmc, expected.cmc)
    assert got.mAP == expected.mAP and got.mINP == expected.mINP
    cmc, mAP = evaluate_rank(*tensors, max_rank=10)
    np.testing.assert_array_equal(cmc, expected.cmc)
    assert mAP == expected.mAP


def test_evaluate_rank_matches_reference_at_larger_size() -> None:
    rng = np.random.default_rng(21)
    problem = random_problem(rng, 150, 900, num_ids=60, num_cams=6, distractors=0.15)
    cmc, mAP = evaluate_rank(*problem, max_rank=50)
    ref_cmc, ref_mAP, _, _ = reference_eval(*problem, 50)
    np.testing.assert_array_equal(cmc, ref_cmc)
    assert mAP == pytest.approx(ref_mAP, rel=1e-12)


def test_non_contiguous_and_integer_distances() -> None:
    rng = np.random.default_rng(9)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 30, 20, 5, 3, tie_levels=4)
    # Evaluate the gallery->query direction through a transposed (Fortran-ordered) view.
    problem = (dist.T.astype(np.int64), g_pids, q_pids, g_camids, q_camids)
    assert_matches_reference(problem, max_rank=10)


def test_nan_and_shape_errors() -> None:
    dist = np.zeros((2, 3), dtype=np.float32)
    pids, camids = np.array([1, 2]), np.array([0, 1])
    g_pids, g_camids = np.array([1, 2, 3]), np.array([1, 0, 1])
    bad = dist.copy()
    bad[1, 2] = np.nan
    with pytest.raises(EvaluationError, match="1 NaN distances .first at query 1, gallery 2"):
        evaluate(bad, pids, g_pids, camids, g_camids)
    with pytest.raises(EvaluationError, match="NaN"):  # in a row whose id is not in the gallery
        evaluate(bad, np.array([1, 9]), g_pids, camids, g_camids, chunk_bytes=1)
    with pytest.raises(EvaluationError, match="NaN"):  # in a thread
        evaluate(bad, pids, g_pids, camids, g_camids, chunk_bytes=1, num_workers=2)
    with pytest.raises(EvaluationError, match="g_pids must be 1-D"):
        evaluate(dist, pids, g_pids[:2], camids, g_camids)
    with pytest.raises(EvaluationError, match="q_camids"):
        evaluate(dist, pids, g_pids, camids[:1], g_camids)
    with pytest.raises(EvaluationError, match="2-D"):
        evaluate(dist[0], pids, g_pids, camids, g_camids)
    with pytest.raises(EvaluationError, match="at least one"):
        evaluate(dist[:0], pids[:0], g_pids, camids[:0], g_camids)
    with pytest.raises(EvaluationError, match="max_rank"):
        evaluate(dist, pids, g_pids, camids, g_camids, max_rank=0)


def ensure_one_valid_query(problem: tuple[np.ndarray, ...]) -> None:
    """Give the first query a true match under another camera (in place), if none has one."""
    _, q_pids, g_pids, q_camids, g_camids = problem
    same_id = q_pids[:, None] == g_pids[None, :]
    if not (same_id & (q_camids[:, None] != g_camids[None, :])).any():
        g_pids[0] = q_pids[0]
        g_camids[0] = q_camids[0] + 1
