"""Simulated labelling: how many clicks until a labelled split scores a run as the truth does.

A person is simulated by the true identities of a labelled test split (``--split``: Market-1501
layout, e.g. a synthetic site's ``eval/``): they open a query, look at its ``--top`` nearest
results in other cameras (the page's "other cameras only") and click "same person" on each
result that is the query's person (one click each) and "not this person" on the first
``--negatives`` results that are not (the exported split's distractors); the rest they leave
alone. Queries come
from the page's suggestions (the server's rule: of up to 256 random unlabelled images, those whose
two nearest neighbours in other cameras are the least decided) or at random. Every ``--every``
clicks the labels are exported with the rules of ``cacl labels export`` and the run is scored on
that split; the figure is compared with the run's mAP on the whole true split. Prints and appends
one JSON line per (strategy, seed) to ``--out``: the curve, and the clicks after which the
labelled split's mAP stays within ``--tolerance`` of the truth's.

    python benchmarks/sim_labelling.py RUN --split data/site/eval [--clicks 600 --seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_run import cpu_model  # noqa: E402

CANDIDATES = 256  # as cacl.serve.routes.labels.SUGGEST_CANDIDATES


def split_map(dist: np.ndarray, files, index: dict[str, int]) -> float | None:
    from cacl.evaluation.metrics import evaluate

    q = [f for f in files if f.split == "query"]
    g = [f for f in files if f.split != "query"]
    if not q or not g:
        return None
    qi, gi = [index[f.source] for f in q], [index[f.source] for f in g]
    result = evaluate(
        dist[np.ix_(qi, gi)], [f.identity for f in q], [f.identity for f in g],
        [f.camera for f in q], [f.camera for f in g], max_rank=min(10, len(g)),
    )  # fmt: skip
    return float(result.mAP)


def simulate(dist, names, pids, cams, strategy, seed, clicks, every, top, full, tolerance,
             negatives=0):  # fmt: skip
    from cacl.labels.export import plan_split
    from cacl.labels.store import LabelError, resolve

    rng = random.Random(seed)
    index = {n: i for i, n in enumerate(names)}
    cameras = {n: str(c) for n, c in zip(names, cams)}
    events, done, opened, curve = [], 0, 0, []
    looked: set[int] = set()
    labelled: set[int] = set()
    while done < clicks:
        free = [i for i in range(len(names)) if i not in labelled and i not in looked]
        if not free:
            break
        if strategy == "random":
            q = rng.choice(free)
        else:
            pool = rng.sample(free, min(len(free), CANDIDATES))
            gaps = []
            for i in pool:
                other = np.flatnonzero(cams != cams[i])
                two = other[np.argsort(dist[i, other])[:2]]
                if len(two) == 2:
                    gaps.append((dist[i, two[1]] - dist[i, two[0]], i))
            q = min(gaps)[1]
        looked.add(q)
        opened += 1
        other = np.flatnonzero(cams != cams[q])
        wrong = 0
        for j in other[np.argsort(dist[q, other])[:top]]:
            same = pids[j] == pids[q]
            if done >= clicks or not (same or wrong < negatives):
                continue
            wrong += not same
            op = "same" if same else "different"
            events.append({"id": f"e{len(events)}", "op": op, "a": names[q], "b": names[j]})
            labelled.update((q, int(j)) if same else (q,))
            done += 1
            if done % every == 0:
                try:
                    files = plan_split(resolve(events), cameras)
                    value = split_map(dist, files, index)
                except LabelError:
                    value = None
                curve.append({"clicks": done, "queries": opened, "mAP": value})
    within = None
    for k in range(len(curve)):
        if all(p["mAP"] is not None and abs(p["mAP"] - full) <= tolerance for p in curve[k:]):
            within = curve[k]["clicks"]
            break
    return {"strategy": strategy, "seed": seed, "clicks_until_within": within, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder or checkpoint")
    parser.add_argument("--split", required=True, help="a true split in the Market-1501 layout")
    parser.add_argument("--clicks", type=int, default=600)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--top", type=int, default=24, help="results a person looks at")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument(
        "--negatives", type=int, default=0, help='"not this person" marks per query (distractors)'
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default="benchmarks/results/sim_labelling.jsonl")
    args = parser.parse_args()
    from cacl.data.readers import load_dataset
    from cacl.evaluation.metrics import evaluate
    from cacl.inference import FeatureExtractor

    split = load_dataset("market-test", args.split)
    samples = [s for s in (*split.query, *split.gallery) if s.pid >= 0]
    names = [s.path for s in samples]
    pids = np.array([s.pid for s in samples])
    cams = np.array([s.camid for s in samples])
    features = FeatureExtractor(args.run, device="cpu", progress=False)(names).numpy()
    dist = 2 - 2 * features @ features.T
    nq = sum(1 for s in split.query if s.pid >= 0)
    full = float(
        evaluate(dist[:nq, nq:], pids[:nq], pids[nq:], cams[:nq], cams[nq:], max_rank=10).mAP
    )
    print(f"{len(names)} images, {len(set(pids))} identities; mAP on the true split {full:.4f}")
    for strategy in ("suggested", "random"):
        for seed in args.seeds:
            row = simulate(dist, names, pids, cams, strategy, seed, args.clicks, args.every,
                           args.top, full, args.tolerance, args.negatives)  # fmt: skip
            row.update(run=str(args.run), split=str(args.split), full_mAP=full, cpu=cpu_model(),
                       negatives=args.negatives)  # fmt: skip
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            last = row["curve"][-1] if row["curve"] else {}
            print(
                f"{strategy:9s} seed {seed}: within {args.tolerance} of the truth after "
                f"{row['clicks_until_within']} clicks; at {last.get('clicks')} clicks "
                f"({last.get('queries')} queries) mAP {last.get('mAP')}",
                flush=True,
            )


if __name__ == "__main__":
    main()
