"""Command-line entry point: ``cacl <command> ...``.

Each command lives in its own module of this package and exposes ``register(subparsers)``, which
adds an ``argparse`` sub-parser whose ``func`` default runs the command and returns an exit code.
Heavy imports (torch, the generator, ...) happen inside the command functions so that
``cacl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from cacl import __version__
from cacl.errors import CaclError

# Command modules, in the order ``cacl --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "synth",
    "crops",
    "train",
    "evaluate",
    "eps",
    "baseline",
    "datasets",
    "export",
    "index",
    "serve",
    "labels",
    "visrank",
    "report",
)


class CommandError(CaclError):
    """An error whose message is meant for the user (no traceback is shown)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cacl",
        description=(
            "Unsupervised person re-identification with Cluster-guided Asymmetric "
            "Contrastive Learning (CACL)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"cacl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages as well")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"cacl.cli.{name}")
        module.register(subparsers)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    debug = os.environ.get("CACL_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        print(f"cacl: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
    except (CaclError, FileNotFoundError) as exc:
        if debug:
            traceback.print_exc()
        print(f"cacl: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else: one line too, the traceback on request
        if debug:
            traceback.print_exc()
        text = str(exc).strip().splitlines()
        print(
            f"cacl: error: {type(exc).__name__}: {text[0] if text else ''} "
            "(set CACL_DEBUG=1 to see the traceback)",
            file=sys.stderr,
        )
        return 1
