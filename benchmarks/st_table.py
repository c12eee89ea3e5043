"""Appearance alone against appearance + time (``cacl eval --st``) on trained site runs.

For every run folder given (trained by ``cacl train --config site`` on a synthetic site whose
``eval/`` has ``times.csv``): the features of the best model are extracted once, then mAP and
rank-1 are scored by appearance, by appearance + the transit model of the run's last pseudo
labels, and by appearance + the model of the true identities, each without and with
re-ranking; the two transit models are compared (mean Wasserstein-1 seconds and total
variation over camera pairs). One JSON line per run goes to ``--out``; ``--summary`` prints
the table (mean +- sd over the runs of each label).

    python benchmarks/st_table.py runs/site-1 runs/site-2 runs/site-3 --label both
    python benchmarks/st_table.py --summary
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_run import cpu_model  # noqa: E402

#: How ``st_distances(..., rerank=True)`` combines the two: rows written before it had this key
#: re-ranked the fused distances (st-ReID's way), and are summarised apart.
RERANK_MODE = "appearance-then-fuse"


def cfg_overrides(cfg) -> list[str]:
    """The settings that tell the runs of one table apart."""
    return [f"cluster.constraints={cfg.cluster.constraints}", f"cluster.time={cfg.cluster.time}"]


def measure(run: Path, label: str, fusion: tuple[str, dict] | None = None,
            estimator: dict | None = None) -> dict:  # fmt: skip
    """One row: ``estimator`` overrides :data:`cacl.temporal.transit.DEFAULT_ESTIMATOR`."""
    import torch

    from cacl.checkpoints.network import load_network
    from cacl.data.default import resolve_dataset
    from cacl.data.times import require_times
    from cacl.evaluation import re_ranking_features
    from cacl.evaluation.network import network_features, score_distances, squared_euclidean
    from cacl.temporal import compare
    from cacl.temporal.fusion import DEFAULT_FUSION
    from cacl.temporal.run import run_transit, st_distances
    from cacl.temporal.transit import DEFAULT_ESTIMATOR

    estimator = {**DEFAULT_ESTIMATOR, **(estimator or {})}

    start = time.monotonic()
    net, cfg, _ = load_network(run, "cpu")
    dataset = resolve_dataset(**cfg.data.dataset_options())
    d = cfg.data
    qf, gf = network_features(net, dataset, height=d.height, width=d.width, device="cpu",
                              progress=False)  # fmt: skip
    q_times, g_times = require_times(dataset, "query"), require_times(dataset, "gallery")
    q_cams = [s.camid for s in dataset.query]
    g_cams = [s.camid for s in dataset.gallery]
    models = {s: run_transit(run, dataset, s, **estimator) for s in ("pseudo", "truth")}
    row = {"run": str(run), "label": label, "seed": cfg.train.seed, "cpu": cpu_model(),
           "capability": torch.backends.cpu.get_cpu_capability(),
           "st_rerank": RERANK_MODE, "overrides": cfg_overrides(cfg),
           "fusion": list(fusion or DEFAULT_FUSION), **estimator}  # fmt: skip
    for rerank in (False, True):
        tag = "rerank_" if rerank else ""
        base = re_ranking_features(qf, gf) if rerank else squared_euclidean(qf, gf)
        scores = {"appearance": score_distances(base, dataset)}
        for source, model in models.items():
            fused = st_distances(qf, gf, q_cams, q_times, g_cams, g_times, model, rerank=rerank,
                                 fusion=fusion)  # fmt: skip
            scores[source] = score_distances(fused, dataset)
        for name, m in scores.items():
            row[f"{tag}{name}_mAP"] = m["mAP"]
            row[f"{tag}{name}_rank1"] = m["rank1"]
        gain_true = row[f"{tag}truth_mAP"] - row[f"{tag}appearance_mAP"]
        gain = row[f"{tag}pseudo_mAP"] - row[f"{tag}appearance_mAP"]
        row[f"{tag}share_of_true_gain"] = gain / gain_true if gain_true > 0 else None
    distance = compare(models["pseudo"], models["truth"])
    row["transit_w1_s"] = distance["mean_w1_s"]
    row["transit_tv"] = distance["mean_tv"]
    row["transit_pairs"] = len(distance["pairs"])
    row["wall_s"] = round(time.monotonic() - start, 1)
    return row


def summarize(path: str) -> None:
    groups: dict[str, list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        mode = row.get("st_rerank", "fused (st-ReID, superseded)")
        name, params = row.get("fusion", ("logistic", {"gamma": 5.0, "lambda_time": 2.0}))
        rule = f"{row.get('kernel', 'time')} {row.get('rule', 'silverman')}"
        rule += " symmetric" if row.get("symmetric") else ""
        rule += f" {row.get('scale', 'peak')}"
        key = f"{row['label']} [re-ranking: {mode}] [{rule}; {name} {json.dumps(params)}]"
        groups.setdefault(key, []).append(row)
    keys = [f"{t}{n}_{m}" for t in ("", "rerank_") for n in ("appearance", "pseudo", "truth")
            for m in ("mAP", "rank1")]  # fmt: skip
    keys += ["share_of_true_gain", "rerank_share_of_true_gain", "transit_w1_s", "transit_tv"]
    for label, rows in groups.items():
        print(f"{label}: runs {', '.join(str(r['seed']) for r in rows)}")
        for key in keys:
            values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
            if not len(values):
                print(f"  {key:32s} (none)")
                continue
            sd = values.std(ddof=1) if len(values) > 1 else 0.0
            print(
                f"  {key:32s} {values.mean():.3f} ± {sd:.3f}  ({' '.join(f'{v:.3f}' for v in values)})"
            )
        gains = [r["pseudo_mAP"] - r["appearance_mAP"] for r in rows]
        print(f"  {'mAP gain per run':32s} {' '.join(f'{g:+.3f}' for g in gains)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--label", default="site")
    parser.add_argument("--out", default="benchmarks/results/st_table.jsonl")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--fusion", help="a fusion of cacl.temporal.fusion.FUSIONS (default: the "
                        "package's DEFAULT_FUSION)")  # fmt: skip
    parser.add_argument("--params", default="{}", help="its parameters, as JSON")
    parser.add_argument("--rule", help="the transit model's bandwidth rule (default: cacl's)")
    parser.add_argument("--kernel", help="the transit model's kernel (default: cacl's)")
    parser.add_argument("--symmetric", choices=("on", "off"), help="pool each camera pair's "
                        "samples with the reverse pair's (default: cacl's)")  # fmt: skip
    parser.add_argument("--scale", help="one of cacl.temporal.transit.SCALES: peak, posterior, "
                        "pair_posterior (default: cacl's)")  # fmt: skip
    args = parser.parse_args()
    fusion = (args.fusion, json.loads(args.params)) if args.fusion else None
    if args.summary:
        summarize(args.out)
        return
    for run in args.runs:
        given = {
            "rule": args.rule,
            "kernel": args.kernel,
            "symmetric": None if args.symmetric is None else args.symmetric == "on",
            "scale": args.scale,
        }
        estimator = {k: v for k, v in given.items() if v is not None}
        row = measure(run, args.label, fusion, estimator)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
