"""The ``sparsescale`` command: one subcommand per pipeline step.

Each stage module exposes ``add_commands(subparsers)``; handlers import their heavy
dependencies (torch, scipy, papermill) lazily so that ``sparsescale --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from sparsescale import __version__
from sparsescale.io import InputError

STAGE_MODULES = (
    "sparsescale.data.cli",
    "sparsescale.train_cli",
    "sparsescale.more_seeds",
    "sparsescale.aggregate",
    "sparsescale.laws.cli",
    "sparsescale.plan_cli",
    "sparsescale.report",
    "sparsescale.provenance",
    "sparsescale.docs",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsescale",
        description="Sparse pre-training scaling-law pipeline: every step of the Snakemake workflow, by hand.",
    )
    parser.add_argument("--version", action="version", version=f"sparsescale {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import importlib

    for name in STAGE_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except InputError as err:
        print(f"sparsescale {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)
