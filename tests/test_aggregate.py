"""`sparsescale aggregate`: metrics and step logs into the runs tables, with each train job's benchmark."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

from sparsescale import aggregate
from sparsescale.io import InputError

RUN_IDS = ["stdlib/s1/tpp4/dense/seed0", "stdlib/s2/tpp4/dense/seed0", "synthetic/s1/syn1M/dense/seed1"]


def _write_run(root, run_id, loss):
    corpus, scale, budget, schedule, seed = run_id.split("/")
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    metrics = {"run_id": run_id, "corpus": corpus, "scale": scale, "budget": budget, "schedule": schedule,
               "seed": int(seed.removeprefix("seed")), "method": "dense", "final_val_loss": loss, "n_final": 1e5,
               "n_avg": 1e5, "tokens": 4e5, "compute": 2.4e11, "wall_time_s": 9.0, "spec": {"nested": True}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame({"step": [0, 1], "val_loss": [5.0, loss]}).to_parquet(run_dir / "steps.parquet")
    return run_dir / "metrics.json"


def _write_benchmark(path, *records):
    """A benchmark file as Snakemake writes it: (wall s, cpu s, max RSS MB) per repeat, None = not sampled."""
    rows = []
    for wall, cpu, rss in records:
        record = BenchmarkRecord(running_time=wall, cpu_time=cpu, max_rss=rss)
        record.data_collected = rss is not None
        record.process_gone = rss is None
        rows.append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_benchmark_records(rows, str(path), extended_fmt=False)
    return path


@pytest.fixture()
def study(tmp_path):
    metrics = [_write_run(tmp_path, run_id, 3.0 + i) for i, run_id in enumerate(RUN_IDS)]
    bench = tmp_path / "benchmarks" / "train"
    benchmarks = [_write_benchmark(bench / f"{run_id}.tsv", (10.0 + i, 18.0 + i, 300.0 + i))
                  for i, run_id in enumerate(RUN_IDS)]
    return tmp_path, metrics, benchmarks


def test_read_benchmark_averages_repeats_and_takes_the_peak(tmp_path):
    path = _write_benchmark(tmp_path / "b.tsv", (10.0, 19.0, 300.0), (12.0, 21.0, 420.5))
    assert aggregate.read_benchmark(path) == {"job_wall_s": 11.0, "job_cpu_s": 20.0, "job_max_rss_mb": 420.5}


def test_read_benchmark_unsampled_job_is_nan(tmp_path):
    got = aggregate.read_benchmark(_write_benchmark(tmp_path / "b.tsv", (0.2, None, None)))
    assert got["job_wall_s"] == 0.2
    assert math.isnan(got["job_cpu_s"]) and math.isnan(got["job_max_rss_mb"])


def test_read_benchmark_rejects_other_files(tmp_path):
    (tmp_path / "b.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="not a Snakemake benchmark"):
        aggregate.read_benchmark(tmp_path / "b.tsv")
    with pytest.raises(InputError, match="not found"):
        aggregate.read_benchmark(tmp_path / "missing.tsv")


def test_benchmarks_join_each_run_whatever_their_order(study):
    root, metrics, benchmarks = study
    runs, steps = aggregate.collect(metrics[::-1], benchmarks[1:] + benchmarks[:1])
    by_run = runs.set_index("run_id")
    for i, run_id in enumerate(RUN_IDS):
        assert by_run.loc[run_id, ["job_wall_s", "job_cpu_s", "job_max_rss_mb"]].tolist() == [10.0 + i, 18.0 + i,
                                                                                             300.0 + i]
        assert by_run.loc[run_id, "final_val_loss"] == 3.0 + i
    assert "spec" not in runs.columns and len(steps) == 2 * len(RUN_IDS)


def test_without_benchmarks_the_table_has_no_cost_columns(study):
    _, metrics, _ = study
    runs, _ = aggregate.collect(metrics)
    assert not {"job_wall_s", "job_cpu_s", "job_max_rss_mb"} & set(runs.columns)


def test_a_missing_or_stray_benchmark_is_named(study):
    root, metrics, benchmarks = study
    with pytest.raises(InputError, match="no benchmark file for run.*synthetic/s1/syn1M/dense/seed1"):
        aggregate.collect(metrics, benchmarks[:2])
    stray = _write_benchmark(root / "benchmarks" / "train" / "stdlib" / "s9" / "x.tsv", (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="does not end with any run"):
        aggregate.collect(metrics, [*benchmarks, stray])
    # one run id ending another's must not be mistaken for it
    with pytest.raises(InputError, match="does not end with any run"):
        aggregate.collect(metrics, [*benchmarks[:2], root / f"x{RUN_IDS[2]}.tsv"])


def test_cli_writes_cost_columns(study):
    import argparse

    root, metrics, benchmarks = study
    parser = argparse.ArgumentParser()
    aggregate.add_commands(parser.add_subparsers(dest="command"))
    out = root / "aggregate"
    args = parser.parse_args(["aggregate", "--metrics", *map(str, metrics), "--benchmarks", *map(str, benchmarks),
                              "--out-dir", str(out)])
    assert args.func(args) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert runs["job_wall_s"].tolist() == [10.0, 11.0, 12.0]
    assert pd.read_parquet(out / "runs.parquet")["job_max_rss_mb"].tolist() == [300.0, 301.0, 302.0]
