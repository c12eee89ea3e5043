"""How well ``cluster.split=on`` cuts a site's tracklets at identity switches, on the colour
memory of finished runs (their last.pt) and on the untrained backbone's features of the same
crops (the first epoch's condition): for several ``--ratios``, the share of tracklets holding
2+ people before and after the cut, and the share of clean tracklets cut (a needless cut).

    python benchmarks/split_check.py RUN [RUN ...] [--ratios 0.3 0.5 0.7] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def features_of(run: Path):
    """(memory of last.pt, untrained backbone's features, config, train samples)."""
    import torch

    from cacl.checkpoints.io import LAST, load_checkpoint
    from cacl.config import config_from_dict
    from cacl.data.default import resolve_dataset
    from cacl.engine.parts import branch_features, build_network

    state = load_checkpoint(run, prefer=LAST)
    cfg = config_from_dict(state["config"])
    dataset = resolve_dataset(**cfg.data.dataset_options())
    torch.manual_seed(cfg.train.seed)
    model = build_network(cfg, torch.device("cpu"))
    untrained = branch_features(model, 1, dataset, cfg, torch.device("cpu"), progress=False)
    return state["memory"]["features"], untrained, cfg, dataset


def check(features, tracklets, cameras, pids, ratio: float, min_side: int) -> dict:
    from cacl.clustering.splitting import mixed_share, split_tracklets

    ids = tracklets.ids
    new, info = split_tracklets(features, ids, cameras, tracklets.times, ratio, min_side)
    known = pids >= 0
    clean = np.ones(int(ids.max()) + 1, dtype=bool)
    people = np.unique(np.stack([ids[known], pids[known]], 1), axis=0)
    clean[np.flatnonzero(np.bincount(people[:, 0], minlength=clean.size) > 1)] = False
    pieces = np.unique(np.stack([ids, new], 1), axis=0)
    cut = np.bincount(pieces[:, 0], minlength=clean.size) > 1
    return {
        "ratio": ratio,
        "threshold": info["split_threshold"],
        "mixed_before": mixed_share(ids[known], pids[known]),
        "mixed_after": mixed_share(new[known], pids[known]),
        "clean_cut": float(cut[clean].mean()),
        "mixed_cut": float(cut[~clean].mean()) if (~clean).any() else 0.0,
        "pieces": info["split_pieces"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--min-side", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from cacl.engine.parts import tracklet_constraints

    for run in args.runs:
        memory, untrained, cfg, dataset = features_of(run)
        cameras = np.array([s.camid for s in dataset.train])
        pids = np.array([s.pid for s in dataset.train])
        tracklets = tracklet_constraints(dataset, cameras)
        for name, feats in (("trained", memory), ("untrained", untrained)):
            for ratio in args.ratios:
                row = {"run": str(run), "features": name}
                row.update(check(feats, tracklets, cameras, pids, ratio, args.min_side))
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as handle:
                        handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
