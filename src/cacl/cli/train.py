"""``cacl train``: train CACL (the synthetic default when run without arguments)."""

from __future__ import annotations

import argparse
import json


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, with the one line to print."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train CACL (no arguments: the embedded synthetic default)",
        description=(
            "Train CACL. Without arguments it trains the 'synthetic' config on the small synthetic "
            "set (generated on first use) on whatever device there is. Settings are "
            "SECTION.KEY=VALUE overrides, e.g. train.epochs=10 model.backbone=resnet18."
        ),
    )
    parser.add_argument(
        "--config",
        default=None,
        help="a YAML file or a shipped config name (market1501, dukemtmcreid, msmt17, synthetic, "
        "smoke); default: synthetic",
    )
    parser.add_argument("--output", default=None, help="run folder (default: a new one in runs/)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue this run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cacl.checkpoints.run_dir import check_new_output, new_run_dir
    from cacl.cli import CommandError
    from cacl.config import load_config
    from cacl.engine import budget
    from cacl.engine.trainer import Trainer

    # train.budget counts the whole command, the imports of Python and torch included
    started = budget.clock() - budget.process_age()
    if args.resume:
        if args.config or args.output:
            raise CommandError("--resume continues a run with its own config and folder")
        trainer = Trainer.resume(
            args.resume, args.overrides, progress=not args.no_progress, started=started
        )
    else:
        if args.output:
            check_new_output(args.output)
        config = args.config or "synthetic"
        cfg = load_config(config, args.overrides)
        name = str(config).rsplit("/", 1)[-1].removesuffix(".yaml")
        output = args.output or new_run_dir("runs", name)
        trainer = Trainer(cfg, output, progress=not args.no_progress, started=started)
    try:
        results = trainer.fit()
    except KeyboardInterrupt:
        done = trainer.epoch
        raise Interrupted(
            f"interrupted in epoch {done + 1} of {trainer.output}; last finished epoch: "
            f"{done if done else 'none'}"
            + (f"; continue with `cacl train --resume {trainer.output}`" if done else "")
        ) from None
    if not trainer.is_main:  # under torchrun, rank 0 reports for every process
        return 0
    summary = {
        k: results[k] for k in ("initial_mAP", "mAP", "rank1", "rank5", "rank10", "best_epoch")
    }
    print(json.dumps(summary, indent=2))
    print(f"run folder: {trainer.output}")
    from cacl.report import write_report_quietly  # logs a warning instead of failing
    from cacl.report.visrank import Ranking

    ranking = None
    if trainer.best_distances is not None:  # the best epoch's evaluation: no second pass
        data = trainer.dataset
        ranking = Ranking.from_distmat(data.query, data.gallery, trainer.best_distances)
    write_report_quietly(
        trainer.output, dataset=trainer.dataset, ranking=ranking, progress=not args.no_progress
    )
    return 0
