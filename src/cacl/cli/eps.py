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
    parser.add_argument(
        "--labels",
        metavar="SPLIT",
        help="a split of cacl labels export made from an index of the run's training crops: "
        "score each eps by its pairwise precision / recall / F against the labelled identities "
        "and rank the eps values by F",
    )
    parser.add_argument(
        "--distance",
        choices=["jaccard", "ca_jaccard"],
        help="the distance to cluster on (default: the run's cluster.distance)",
    )
    parser.add_argument(
        "--camera-norm",
        choices=["none", "center"],
        help="camera centring before the distance (default: the run's cluster.camera_norm)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cacl.checkpoints.io import LAST, load_checkpoint
    from cacl.cli import CommandError
    from cacl.clustering import sweep_eps
    from cacl.clustering.camera import own_camera_share
    from cacl.clustering.jaccard import jaccard_from_encoding
    from cacl.clustering.pseudo_labels import encoding
    from cacl.clustering.stats import ClusterStats
    from cacl.config import config_from_dict
    from cacl.data.default import resolve_dataset

    bad = [e for e in args.eps if not 0 < e < 1]
    if bad:
        raise CommandError(
            f"--eps values must lie in (0, 1) (Jaccard distances), got {', '.join(map(str, bad))}"
        )
    state = load_checkpoint(args.run, prefer=LAST)
    if "memory" not in state:
        raise CommandError(f"{state['_path']} holds no memory bank (use a run's last.pt)")
    cfg = config_from_dict(state["config"])
    c = cfg.cluster
    dataset = resolve_dataset(**cfg.data.dataset_options())
    train = dataset.train
    pids = np.array([s.pid for s in train])
    cameras = np.array([s.camid for s in train])
    features = state["memory"]["features"]
    if len(pids) != features.shape[0]:
        raise CommandError("the run's dataset no longer matches its memory bank")
    true_pids = pids if np.all(pids >= 0) else None
    labelled = None
    if args.labels:
        from cacl.labels.agreement import labelled_rows, pair_agreement
        from cacl.labels.store import LabelError

        try:
            labelled = labelled_rows(args.labels, [s.path for s in train], dataset.root)
        except LabelError as exc:
            raise CommandError(str(exc)) from None
    distance = args.distance or c.distance
    camera_norm = args.camera_norm or c.camera_norm
    options = c.encoding_options() | {"distance": distance, "camera_norm": camera_norm}
    v = encoding(features, cameras=cameras, **options, **c.knn_options())
    dist = jaccard_from_encoding(v)
    sizes = (
        f"k1 intra/inter = {c.k1_intra}/{c.k1_inter}, k2 intra/inter = {c.k2_intra}/{c.k2_inter}"
        if distance == "ca_jaccard"
        else f"k1 = {c.k1}, k2 = {c.k2}"
    )
    print(
        f"{state['_path']} (epoch {state['epoch']}), N = {features.shape[0]}, distance "
        f"{distance}, camera_norm {camera_norm}, {sizes}, refine = {not args.no_refine}"
    )
    header = f"{'eps':>6} {'clusters':>9} {'outliers':>9} {'median':>7} {'max':>5} {'2+cam':>6}"
    header += f" {'NMI':>6} {'ARI':>6}" if true_pids is not None else ""
    print(header + (f" {'lab-P':>6} {'lab-R':>6} {'lab-F':>6}" if labelled is not None else ""))
    scores = []
    clustering = c.clustering_options() | {"refine": not args.no_refine}
    clustering.pop("eps")
    sweep = sweep_eps(dist, args.eps, **clustering)
    for eps, (labels, _) in zip(args.eps, sweep, strict=True):
        s = ClusterStats.of(labels, true_pids=true_pids, cameras=cameras).as_dict()
        line = (
            f"{eps:6.3f} {s['clusters']:9d} {s['outliers']:9d} {s['size_median']:7.0f} "
            f"{s['size_max']:5d} {s['multi_camera_clusters']:6.2f}"
        )
        if true_pids is not None:
            line += f" {s['nmi']:6.3f} {s['ari']:6.3f}"
        if labelled is not None:
            a = pair_agreement(labels[labelled[0]], labelled[1])
            scores.append((a["f"], eps))
            line += f" {a['precision']:6.3f} {a['recall']:6.3f} {a['f']:6.3f}"
        print(line)
    if scores:
        ranked = sorted(scores, key=lambda x: -x[0])
        print(
            f"labelled: {len(labelled[0])} images of {len(set(labelled[1].tolist()))} identities; "
            "eps by F: " + ", ".join(f"{e:g} ({f:.3f})" for f, e in ranked)
        )
    share, chance = own_camera_share(features, cameras)
    print(
        f"2+cam: share of clusters spanning 2+ cameras; own-camera share of the memory's 10 "
        f"nearest neighbours {share:.2f} (chance {chance:.2f})"
    )
    return 0
