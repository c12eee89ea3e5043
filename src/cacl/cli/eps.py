"""``cacl eps RUN_DIR``: what several DBSCAN eps values would give on a run's colour memory."""

from __future__ import annotations

import argparse

DEFAULT_EPS = (0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eps",
        help="report clusters / outliers (and NMI / ARI) for several eps on a run's memory",
        description=(
            "Cluster the colour memory bank saved in a run's last.pt with several eps values and "
            "print clusters, outliers, cluster sizes and, when the training images carry "
            "identities, NMI and ARI against them. Helps choose cluster.eps."
        ),
    )
    parser.add_argument("run", help="a run folder (or its last.pt)")
    parser.add_argument("--eps", type=float, nargs="+", default=list(DEFAULT_EPS))
    parser.add_argument("--no-refine", action="store_true", help="skip the cluster refinement")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cacl.cli import CommandError
    from cacl.clustering import jaccard_distance, labels_from_distance
    from cacl.config import config_from_dict
    from cacl.data.default import resolve_dataset
    from cacl.engine.checkpoint import LAST, load_checkpoint
    from cacl.engine.labels import cluster_stats

    state = load_checkpoint(args.run, prefer=LAST)
    if "memory" not in state:
        raise CommandError(f"{state['_path']} holds no memory bank (use a run's last.pt)")
    cfg = config_from_dict(state["config"])
    c = cfg.cluster
    pids = np.array([s.pid for s in resolve_dataset(cfg.data).train])
    features = state["memory"]["features"]
    if len(pids) != features.shape[0]:
        raise CommandError("the run's dataset no longer matches its memory bank")
    true_pids = pids if np.all(pids >= 0) else None
    dist = jaccard_distance(features, k1=c.k1, k2=c.k2)
    print(
        f"{state['_path']} (epoch {state['epoch']}), N = {features.shape[0]}, k1 = {c.k1}, "
        f"k2 = {c.k2}, refine = {not args.no_refine}"
    )
    header = f"{'eps':>6} {'clusters':>9} {'outliers':>9} {'median':>7} {'max':>5}"
    print(header + (f" {'NMI':>6} {'ARI':>6}" if true_pids is not None else ""))
    for eps in args.eps:
        labels, _ = labels_from_distance(
            dist,
            eps=eps,
            eps_gap=c.eps_gap,
            min_samples=c.min_samples,
            refine=not args.no_refine,
            ratio=c.ratio,
            log=False,
        )
        s = cluster_stats(labels, true_pids)
        line = (
            f"{eps:6.3f} {s['clusters']:9d} {s['outliers']:9d} {s['size_median']:7.0f} "
            f"{s['size_max']:5d}"
        )
        if true_pids is not None:
            line += f" {s['nmi']:6.3f} {s['ari']:6.3f}"
        print(line)
    return 0
