"""Collect every run's final metrics and step log into the study-wide tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparsescale.io import InputError, get_logger, read_json, write_csv, write_parquet

RUN_KEYS = ("run_id", "corpus", "scale", "budget", "schedule", "seed", "method")
REQUIRED_METRICS = RUN_KEYS + ("final_val_loss", "n_final", "n_avg", "tokens", "compute")
# Snakemake benchmark column -> runs-table column: the whole train job as Snakemake measured it
BENCHMARK_COLUMNS = {"s": "job_wall_s", "cpu_time": "job_cpu_s", "max_rss": "job_max_rss_mb"}

log = get_logger("sparsescale.aggregate")


def read_benchmark(path: str | Path) -> dict[str, float]:
    """A Snakemake benchmark file (TSV) as ``job_wall_s``, ``job_cpu_s``, ``job_max_rss_mb``.

    Snakemake samples CPU time and RSS (every 0.5 s for the first 15 s, then every 30 s) and
    writes NA when a job ended before its first sample: those become NaN. Repeats
    (``--benchmark-repeats``) are averaged, the peak RSS is their maximum.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: benchmark file not found (the run's train job writes it)")
    table = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
    missing = [column for column in BENCHMARK_COLUMNS if column not in table.columns]
    if missing or table.empty:
        raise InputError(f"{path}: not a Snakemake benchmark file (columns {missing} or rows missing)")
    values = table[list(BENCHMARK_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    return {
        "job_wall_s": float(values["s"].mean()),
        "job_cpu_s": float(values["cpu_time"].mean()),
        "job_max_rss_mb": float(values["max_rss"].max()),
    }


def benchmarks_by_run(benchmark_paths: list[str | Path], run_ids: list[str]) -> dict[str, Path]:
    """Each run's benchmark file: the one whose path ends with ``/{run_id}.tsv``."""
    found: dict[str, Path] = {}
    for path in map(Path, benchmark_paths):
        owners = [run_id for run_id in run_ids if path.as_posix().endswith(f"/{run_id}.tsv")
                  or path.as_posix() == f"{run_id}.tsv"]
        if not owners:
            raise InputError(f"--benchmarks {path}: its path does not end with any run's {{run_id}}.tsv")
        if owners[0] in found:
            raise InputError(f"--benchmarks: two files for run {owners[0]}: {found[owners[0]]} and {path}")
        found[owners[0]] = path
    missing = [run_id for run_id in run_ids if run_id not in found]
    if missing:
        raise InputError(f"--benchmarks: no benchmark file for run(s) {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''} (expected .../{{run_id}}.tsv)")
    return found


def collect(metrics_paths: list[str | Path], benchmark_paths: list[str | Path] | None = None):
    """Return (runs, steps) data frames: one row per run, and every run's step log.

    With ``benchmark_paths`` (Snakemake benchmarks of the train jobs, one per run, each named
    ``.../{run_id}.tsv``), each run's row gets its job's wall time, CPU time and peak RSS
    (see ``read_benchmark``).
    """
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
    if benchmark_paths is not None:
        files = benchmarks_by_run(benchmark_paths, runs["run_id"].tolist())
        costs = pd.DataFrame([read_benchmark(files[run_id]) for run_id in runs["run_id"]])
        runs = pd.concat([runs, costs], axis=1)
    steps = pd.concat(step_frames, ignore_index=True)
    return runs, steps


def _run(args: argparse.Namespace) -> int:
    runs, steps = collect(args.metrics, args.benchmarks)
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
    parser.add_argument("--benchmarks", nargs="+", default=None, metavar="TSV",
                        help="Snakemake benchmark of each run's train job, named .../{run_id}.tsv (the workflow's "
                             "results/benchmarks/train/{run_id}.tsv): adds job_wall_s, job_cpu_s, job_max_rss_mb")
    parser.add_argument("--out-dir", required=True, help="e.g. results/aggregate")
    parser.set_defaults(func=_run)
