"""Collect every run's final metrics and step log into the study-wide tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparsescale.io import InputError, get_logger, read_json, write_csv, write_parquet

RUN_KEYS = ("run_id", "corpus", "scale", "budget", "schedule", "seed", "method")
REQUIRED_METRICS = RUN_KEYS + ("final_val_loss", "n_final", "n_avg", "tokens", "compute")

log = get_logger("sparsescale.aggregate")


def collect(metrics_paths: list[str | Path]):
    """Return (runs, steps) data frames: one row per run, and every run's step log."""
    import pandas as pd

    if not metrics_paths:
        raise InputError("aggregate: no metrics.json files given")
    rows, step_frames = [], []
    for path in map(Path, metrics_paths):
        metrics = read_json(path)
        missing = [key for key in REQUIRED_METRICS if key not in metrics]
        if missing:
            raise InputError(f"{path}: missing key(s) {missing}")
        rows.append({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
        steps_path = path.with_name("steps.parquet")
        if not steps_path.is_file():
            raise InputError(f"{steps_path}: step log missing beside {path.name}")
        steps = pd.read_parquet(steps_path)
        for position, key in enumerate(RUN_KEYS):
            steps.insert(position, key, metrics[key])
        step_frames.append(steps)
    runs = pd.DataFrame(rows).sort_values("run_id", kind="stable").reset_index(drop=True)
    duplicated = runs["run_id"][runs["run_id"].duplicated()].tolist()
    if duplicated:
        raise InputError(f"aggregate: run id(s) given twice: {duplicated}")
    steps = pd.concat(step_frames, ignore_index=True)
    return runs, steps


def _run(args: argparse.Namespace) -> int:
    runs, steps = collect(args.metrics)
    out = Path(args.out_dir)
    write_parquet(out / "runs.parquet", runs)
    write_csv(out / "runs.csv", runs)
    write_parquet(out / "steps.parquet", steps)
    log.info("aggregated %d runs, %d step rows into %s", len(runs), len(steps), out)
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "aggregate",
        help="collect runs' metrics.json and steps.parquet into results/aggregate",
        description="One row per run (runs.parquet, runs.csv) and all step logs (steps.parquet).",
    )
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json of each run")
    parser.add_argument("--out-dir", required=True, help="e.g. results/aggregate")
    parser.set_defaults(func=_run)
