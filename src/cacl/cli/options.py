"""Options shared by several commands."""

from __future__ import annotations

import argparse


def add_model_run_options(parser: argparse.ArgumentParser, *, progress: bool = True) -> None:
    """The options of the commands that run a trained model over a dataset (eval, visrank,
    report): ``--data``, ``--root``, ``--device``, ``--batch-size``, ``--workers``
    (and ``--no-progress``)."""
    parser.add_argument("--data", default=None, help="dataset name (default: the training one)")
    parser.add_argument("--root", default=None, help="dataset folder (default: the training one)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if any), cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_model_run_options(args: argparse.Namespace) -> None:
    """One clear error for a batch size below 1 or negative workers."""
    from cacl.cli import CommandError

    if args.batch_size < 1 or args.workers < 0:
        raise CommandError("--batch-size must be at least 1 and --workers at least 0")


def load_model_and_data(args: argparse.Namespace):
    """``(network, config, checkpoint metadata, dataset, device)`` for ``args.checkpoint`` and
    the dataset of ``--data`` / ``--root`` (default: the one it was trained on)."""
    from cacl.checkpoints.network import load_network
    from cacl.data.default import resolve_dataset
    from cacl.distributed import resolve_device

    check_model_run_options(args)
    device = resolve_device(args.device, "--device")
    net, cfg, meta = load_network(args.checkpoint, device)
    return net, cfg, meta, resolve_dataset(**cfg.data.dataset_options(args.data, args.root)), device
