"""Speed of ``cacl.evaluation.evaluate_rank`` at Market-1501 size, against a plain argsort.

Prints the seconds of ``np.argsort(distmat, axis=1)`` of the same matrix (what torchreid's
evaluation starts with), of ``evaluate_rank``, their ratio, and whether the results equal those of
a slow per-query transcription of torchreid's python ``eval_market1501`` (run on the first
``--reference-queries`` queries, or on all of them with ``--reference full``).

    python benchmarks/bench_evaluation.py                  # Market-1501 size, 300-query check
    python benchmarks/bench_evaluation.py --reference full # full check, about a minute
    python benchmarks/bench_evaluation.py --threads 1      # skip the timing with threads
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from cacl.evaluation import evaluate, evaluate_rank


def make_problem(
    num_query: int,
    num_gallery: int,
    num_ids: int,
    num_cams: int,
    num_distractors: int,
    signal: float,
    dtype: str,
    seed: int,
) -> tuple[np.ndarray, ...]:
    """Random distances with Market-like labels: every query id has gallery images."""
    rng = np.random.default_rng(seed)
    num_labelled = num_gallery - num_distractors
    g_pids = np.concatenate(
        [np.arange(1, num_ids + 1), rng.integers(1, num_ids + 1, num_labelled - num_ids)]
    )
    g_pids = rng.permutation(np.concatenate([g_pids, np.zeros(num_distractors, dtype=int)]))
    g_camids = rng.integers(1, num_cams + 1, num_gallery)
    q_pids = rng.permutation(np.resize(np.arange(1, num_ids + 1), num_query))
    q_camids = rng.integers(1, num_cams + 1, num_query)
    distmat = rng.random((num_query, num_gallery), dtype=np.float32).astype(dtype)
    if signal:
        same_id = q_pids[:, None] == g_pids[None, :]
        distmat -= (signal * same_id * rng.random(distmat.shape)).astype(dtype)
    return distmat, q_pids, g_pids, q_camids, g_camids


def reference_eval(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> tuple[np.ndarray, float]:
    """Per-query loop following torchreid's python ``eval_market1501``."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap = [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][~remove]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    cmc_mean = np.asarray(all_cmc).astype(np.float32).sum(0) / float(len(all_ap))
    return cmc_mean, float(np.mean(all_ap))


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-query", type=int, default=3368)
    parser.add_argument("--num-gallery", type=int, default=15913)
    parser.add_argument("--num-ids", type=int, default=750)
    parser.add_argument("--num-cams", type=int, default=6)
    parser.add_argument("--num-distractors", type=int, default=2793, help="gallery id 0 images")
    parser.add_argument("--signal", type=float, default=0.0, help="lower same-id distances")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--max-rank", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of N runs")
    parser.add_argument("--threads", type=int, default=2, help="also time N worker threads")
    parser.add_argument("--reference", choices=["subset", "full", "none"], default="subset")
    parser.add_argument("--reference-queries", type=int, default=300)
    args = parser.parse_args()

    problem = make_problem(
        args.num_query,
        args.num_gallery,
        args.num_ids,
        args.num_cams,
        args.num_distractors,
        args.signal,
        args.dtype,
        args.seed,
    )
    distmat = problem[0]
    print(
        f"distmat {distmat.shape[0]} x {distmat.shape[1]} {distmat.dtype}, "
        f"{args.num_ids} ids, {args.num_cams} cameras, {args.num_distractors} distractors, "
        f"best of {args.repeat}"
    )

    t_argsort = best_time(lambda: np.argsort(distmat, axis=1), args.repeat)
    print(f"np.argsort(distmat, axis=1):   {t_argsort:7.3f} s")
    t_sort = best_time(lambda: np.sort(distmat, axis=1), args.repeat)
    print(f"np.sort(distmat, axis=1):      {t_sort:7.3f} s  ({t_sort / t_argsort:.2f}x argsort)")
    cmc, mAP = evaluate_rank(*problem, max_rank=args.max_rank)
    t_eval = best_time(lambda: evaluate_rank(*problem, max_rank=args.max_rank), args.repeat)
    print(f"evaluate_rank:                 {t_eval:7.3f} s  ({t_eval / t_argsort:.2f}x argsort)")
    if args.threads > 1:
        result = evaluate(*problem, max_rank=args.max_rank, num_workers=args.threads)
        assert np.array_equal(result.cmc, cmc) and result.mAP == mAP
        t_threads = best_time(
            lambda: evaluate(*problem, max_rank=args.max_rank, num_workers=args.threads),
            args.repeat,
        )
        print(
            f"evaluate, {args.threads} threads:          {t_threads:7.3f} s  "
            f"({t_threads / t_argsort:.2f}x argsort)"
        )
    result = evaluate(*problem, max_rank=args.max_rank)
    print(
        f"mAP {mAP:.6f}  mINP {result.mINP:.6f}  rank-1 {cmc[0]:.6f}  "
        f"valid queries {result.num_valid_queries}  skipped {result.num_skipped}"
    )

    if args.reference == "none":
        return
    n = distmat.shape[0] if args.reference == "full" else min(args.reference_queries, len(distmat))
    sub = tuple(a[:n] for a in problem[:2]) + (problem[2], problem[3][:n], problem[4])
    start = time.perf_counter()
    ref_cmc, ref_mAP = reference_eval(*sub, args.max_rank)
    t_ref = time.perf_counter() - start
    if n == distmat.shape[0]:
        our_cmc, our_mAP = cmc, mAP
    else:
        our_cmc, our_mAP = evaluate_rank(*sub, max_rank=args.max_rank)
    print(f"reference (per-query loop) on {n} queries: {t_ref:.3f} s")
    print(
        f"CMC identical: {np.array_equal(our_cmc, ref_cmc)}; "
        f"mAP {our_mAP!r} vs reference {ref_mAP!r}, |diff| = {abs(our_mAP - ref_mAP):.1e}, "
        f"bitwise identical: {our_mAP == ref_mAP}"
    )


if __name__ == "__main__":
    main()
