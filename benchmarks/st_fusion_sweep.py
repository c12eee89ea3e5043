"""Choose the fusion of appearance and time on held-out site runs, never on the reported ones.

For every run folder given (``cacl train --config site`` on a synthetic site whose ``eval/``
has ``times.csv``): the best model's features are extracted once (cached beside the run as
``st_features.npz``), the transit model of the run's last pseudo labels is fitted, and mAP is
scored for a grid of fusions (:data:`cacl.temporal.fusion.FUSIONS` with their parameters), by
cosine similarity and by re-ranked similarity. One JSON line per run, fusion and parameters goes
to ``--out``; ``--summary`` prints the mean gain over appearance alone per fusion, best first.

The reported table (``benchmarks/st_table.py``) is measured on seeds 1-3; the fusion and its
constants are chosen here on other seeds (4-6), so the table does not tune to its test.

    python benchmarks/st_fusion_sweep.py runs/site-4 runs/site-5 runs/site-6
    python benchmarks/st_fusion_sweep.py --summary
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_run import cpu_model  # noqa: E402

from cacl.temporal.transit import SCALES  # noqa: E402

#: Parameters tried per fusion.
GRID = {
    "logistic": {"gamma": [5.0, 10.0, 20.0], "lambda_time": [2.0, 10.0, 50.0]},
    "log_linear": {"weight": [0.05, 0.1, 0.2, 0.4], "floor": [0.001, 0.01, 0.05, 0.2]},
}
#: Transit-model estimators tried: (kernel, bandwidth rule) of ``fit_transit``.
ESTIMATORS = [("time", "silverman"), ("time", "robust"), ("time", "pooled"),
              ("log", "silverman"), ("log", "pooled")]  # fmt: skip
#: ``--symmetric``: the same with each pair's samples pooled with the reverse pair's.
SYMMETRIC = [("time", "silverman"), ("time", "pooled"), ("log", "silverman")]


def features(run: Path):
    """``(similarity, reranked similarity, dataset, cfg)`` of a run, cached."""
    import torch

    from cacl.checkpoints.network import load_network
    from cacl.data.default import resolve_dataset
    from cacl.evaluation import re_ranking_features
    from cacl.evaluation.network import network_features
    from cacl.temporal.run import cosine

    net, cfg, _ = load_network(run, "cpu")
    dataset = resolve_dataset(**cfg.data.dataset_options())
    cache = run / "st_features.npz"
    if cache.exists():
        data = np.load(cache)
        return data["cos"], data["rr"], dataset, cfg
    d = cfg.data
    with torch.no_grad():
        qf, gf = network_features(net, dataset, height=d.height, width=d.width, device="cpu",
                                  progress=False)  # fmt: skip
    cos, rr = cosine(qf, gf), 1.0 - re_ranking_features(qf, gf)
    np.savez(cache, cos=cos, rr=rr)
    return cos, rr, dataset, cfg


def sweep(run: Path, estimators=ESTIMATORS, symmetric: bool = False,
          scale: str = "peak") -> list[dict]:  # fmt: skip
    import torch

    from cacl.data.times import require_times
    from cacl.evaluation.network import score_distances
    from cacl.temporal.fusion import fusion
    from cacl.temporal.run import run_transit

    cos, rr, dataset, cfg = features(run)
    qc = np.array([s.camid for s in dataset.query])[:, None]
    gc = np.array([s.camid for s in dataset.gallery])[None, :]
    qt = require_times(dataset, "query")[:, None]
    gt = require_times(dataset, "gallery")[None, :]
    base = {"run": str(run), "seed": cfg.train.seed, "cpu": cpu_model(),
            "capability": torch.backends.cpu.get_cpu_capability()}  # fmt: skip
    rows = []
    for source, (kernel, rule) in itertools.product(("pseudo", "truth"), estimators):
        model = run_transit(run, dataset, source, rule=rule, kernel=kernel, symmetric=symmetric,
                            scale=scale)  # fmt: skip
        p = model.probability(qc, qt, gc, gt)
        same = (
            np.array([s.pid for s in dataset.query])[:, None]
            == np.array([s.pid for s in dataset.gallery])[None, :]
        )
        other_cam = qc != gc
        match, other = p[same & other_cam], p[~same & other_cam]
        print(f"{run} {source} {kernel} {rule} {scale}: p of true matches mean {match.mean():.3f}, share > 0.1 "
              f"{(match > 0.1).mean():.3f}; of others mean {other.mean():.3f}, share > 0.1 "
              f"{(other > 0.1).mean():.3f}", flush=True)  # fmt: skip
        for rerank, sim in ((False, cos), (True, rr)):
            appearance = score_distances(1.0 - sim, dataset)["mAP"]
            for name, grid in GRID.items():
                for values in itertools.product(*grid.values()):
                    params = dict(zip(grid, values))
                    fused = score_distances(-fusion(name, sim, p, **params), dataset)["mAP"]
                    rows.append({**base, "source": source, "kernel": kernel, "rule": rule,
                                 "symmetric": symmetric, "scale": scale,
                                 "rerank": rerank,
                                 "fusion": name,
                                 "params": params, "appearance_mAP": appearance,
                                 "mAP": fused})  # fmt: skip
    return rows


def best(path: str, source: str = "pseudo", rerank: bool = False) -> tuple:
    """The kernel, bandwidth rule, symmetry, scale, fusion and parameters of the largest mean
    gain in ``path`` (pseudo labels' model, without re-ranking: the default ranking)."""
    groups: dict[str, list[float]] = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        if row["source"] == source and row["rerank"] == rerank:
            key = json.dumps([row.get("kernel", "time"), row.get("rule", "silverman"),
                              row.get("symmetric", False), row.get("scale", "peak"),
                              row["fusion"], row["params"]])  # fmt: skip
            groups.setdefault(key, []).append(row["mAP"] - row["appearance_mAP"])
    return tuple(json.loads(max(groups, key=lambda k: np.mean(groups[k]))))


def summarize(path: str) -> None:
    groups: dict[tuple, list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        rule = row.get("rule", "silverman") + (" symmetric" if row.get("symmetric") else "")
        rule += f" {row.get('scale', 'peak')}"
        key = (row["source"], row["rerank"], row.get("kernel", "time"), rule, row["fusion"],
               json.dumps(row["params"]))  # fmt: skip
        groups.setdefault(key, []).append(row)
    lines = []
    for (source, rerank, kernel, rule, name, params), rows in groups.items():
        gains = np.array([r["mAP"] - r["appearance_mAP"] for r in rows])
        seeds = " ".join(str(r["seed"]) for r in rows)
        label = f"{kernel} {rule} {name} {params}"
        lines.append((source, rerank, -gains.mean(), label, gains, seeds))
    for source, rerank, neg, label, gains, seeds in sorted(lines):
        print(f"{source:6s} rerank={rerank!s:5s} gain {-neg:+.3f} (min {gains.min():+.3f}; "
              f"seeds {seeds})  {label}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--out", default="benchmarks/results/st_fusion_sweep.jsonl")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--symmetric", action="store_true", help="the SYMMETRIC estimators: "
                        "each camera pair's samples pooled with the reverse pair's")  # fmt: skip
    parser.add_argument(
        "--scale",
        default="peak",
        choices=SCALES,
        help="how counts become probabilities (cacl.temporal.transit.SCALES)",
    )
    parser.add_argument("--best", action="store_true", help="print the best fusion as st_table's "
                        "--fusion NAME --params JSON and stop")  # fmt: skip
    args = parser.parse_args()
    if args.best:
        kernel, rule, symmetric, scale, name, params = best(args.out)
        flag = " --symmetric on" if symmetric else " --symmetric off"
        print(f"--kernel {kernel} --rule {rule}{flag} --scale {scale} --fusion {name} --params "
              f"'{json.dumps(params)}'")  # fmt: skip
        return
    if args.summary:
        summarize(args.out)
        return
    for run in args.runs:
        if args.symmetric:
            rows = sweep(run, SYMMETRIC, True, args.scale)
        else:
            rows = sweep(run, scale=args.scale)
        with open(args.out, "a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"{run}: {len(rows)} rows", flush=True)


if __name__ == "__main__":
    main()
