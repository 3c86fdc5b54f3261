"""What Snakemake's `benchmark:` directive costs a train job.

Runs the same tiny training job (`sparsescale train`, the tiny config's largest synthetic
run) repeatedly, alternating a bare wait on the process with Snakemake's own
`snakemake.benchmark.benchmarked(pid)` around it (what the shell of a rule with `benchmark:`
does), and prints one `name: value` line per figure:

- `train_job_s`: median wall time of the bare job;
- `benchmark_overhead_s`, `benchmark_overhead_ratio`: median of the paired wall-time
  differences (with minus without), and the ratio of the medians;
- `sampler_cpu_ms_per_job`: CPU time the sampling thread adds to the Snakemake process per
  job (its RSS/CPU samples: every 0.5 s for 15 s, then every 30 s).

    python benchmarks/job_benchmark_overhead.py [--quick]   # --quick: 3 pairs, under a minute
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from workflow_utils import copy_workflow, snakemake  # noqa: E402

RUN_ID = "synthetic/t3/k80/dense/seed0"


def train_command(workspace: Path, out_dir: Path) -> list[str]:
    import sparsescale.config as study

    config = study.resolve(study.load_config(workspace / "config/config.yaml", workspace / "config/tiny.yaml"))
    run = next(r for r in study.runs(config) if r.run_id == RUN_ID)
    return [sys.executable, "-m", "sparsescale", "train", "--spec", study.to_json(study.run_spec(config, run)),
            "--data", str(workspace / "results/data/synthetic/tokens"), "--out-dir", str(out_dir), "--threads", "1"]


def timed_job(command: list[str], workspace: Path, benchmark: bool) -> tuple[float, float]:
    """(wall s, CPU s of this process) for one job, with or without Snakemake's benchmark."""
    from snakemake.benchmark import BenchmarkRecord, benchmarked

    env = {**os.environ, "PYTHONPATH": str(workspace / "src")}
    cpu, started = time.process_time(), time.perf_counter()
    proc = subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if benchmark:
        record = BenchmarkRecord()
        with benchmarked(proc.pid, record):
            returncode = proc.wait()
        if record.max_rss is None:
            raise RuntimeError("Snakemake's benchmark sampled nothing")
    else:
        returncode = proc.wait()
    if returncode != 0:
        raise RuntimeError(f"train job failed ({returncode}): {' '.join(command[:4])} ...")
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 pairs of jobs instead of 8 (under a minute)")
    args = parser.parse_args()
    pairs = 3 if args.quick else 8
    workspace = copy_workflow(REPO, Path(tempfile.mkdtemp(prefix="sparsescale-benchmark-overhead-")))
    try:
        snakemake(workspace, "results/data/synthetic/tokens/manifest.json", "--cores", "1", "--profile", "profiles/tiny")
        walls: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        for pair in range(pairs):
            for benchmark in (pair % 2 == 0, pair % 2 == 1):  # alternate which goes first
                out_dir = workspace / "runs" / f"{pair}-{benchmark}"
                wall, cpu = timed_job(train_command(workspace, out_dir), workspace, benchmark)
                walls[benchmark].append(wall)
                cpus[benchmark].append(cpu)
                shutil.rmtree(out_dir)
            print(f"pair {pair + 1}/{pairs}: bare {walls[False][-1]:.2f} s, benchmarked {walls[True][-1]:.2f} s",
                  file=sys.stderr)
        bare, benchmarked_median = statistics.median(walls[False]), statistics.median(walls[True])
        differences = [with_ - without for with_, without in zip(walls[True], walls[False])]
        print(f"train_job_s: {bare:.2f}")
        print(f"benchmark_overhead_s: {statistics.median(differences):.3f}")
        print(f"benchmark_overhead_ratio: {benchmarked_median / bare:.3f}")
        sampler = statistics.median(cpus[True]) - statistics.median(cpus[False])
        print(f"sampler_cpu_ms_per_job: {1000 * sampler:.1f}")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
