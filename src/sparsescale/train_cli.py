"""CLI ``sparsescale train``: one training run from a spec (torch is imported in the handler)."""

from __future__ import annotations

import argparse
import sys


def _run(args: argparse.Namespace) -> int:
    from sparsescale.run_spec import load_spec
    from sparsescale.train import TrainingDiverged, run_training

    spec = load_spec(args.spec)
    try:
        run_training(spec, args.data, args.out_dir, init_from=args.init_from, threads=args.threads)
    except TrainingDiverged as err:
        print(f"sparsescale train: error: {err}", file=sys.stderr)
        return 1
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one run (dense or pruned) and write its step log and metrics",
        description=(
            "Train the spec's model on the token shards and write steps.parquet, metrics.json, "
            "config.json and model.pt into --out-dir. Resumes from --out-dir/checkpoint.pt if present. "
            "Under torchrun (WORLD_SIZE>1) runs data-parallel; rank 0 writes."
        ),
    )
    parser.add_argument("--spec", required=True, help="the run spec: JSON text or a JSON file (docs/ARCHITECTURE.md)")
    parser.add_argument("--data", required=True, help="results/data/{corpus}/tokens (manifest.json + shards)")
    parser.add_argument("--out-dir", required=True, help="the run directory")
    parser.add_argument("--init-from", default=None, help="model.pt of a trained dense run to prune and continue")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (overrides spec.training.threads)")
    parser.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    """``python -m sparsescale.train_cli ...``: the ``train`` subcommand on its own."""
    from sparsescale.io import InputError

    parser = argparse.ArgumentParser(prog="sparsescale")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except InputError as err:
        print(f"sparsescale train: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
