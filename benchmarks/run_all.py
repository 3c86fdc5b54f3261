"""Run every CPU benchmark with ``--quick`` and regenerate docs/benchmarks.md from what they print.

    python benchmarks/run_all.py

Runs ``train_speed.py`` first: its ``tokens_per_s_bare_2x64`` (a bare PyTorch loop) is the
reference speed recorded beside every figure of this session. Each benchmark prints ``name: value``
lines; the figures listed in ``FIGURES`` (with their targets) replace their rows of
``docs/benchmarks.json``; rows this script does not measure (the whole-study timings and the GPU
benchmark, which needs CUDA) are kept as recorded. Then ``sparsescale docs benchmarks`` rewrites
``docs/benchmarks.md`` and the README's timings. A benchmark that fails, or does not print a listed
figure, stops the script before anything is written. Takes a few minutes on 2 idle cores.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "tokens_per_s_bare_2x64"

# script -> {figure: (unit, target, what it measures)}; targets from the issues that set them
FIGURES = {
    "benchmarks/train_speed.py": {
        REFERENCE: ("tokens/s", "", "the reference: a bare PyTorch training loop, 2 layers x 64, 2 threads"),
        "train_vs_bare_ratio": ("", ">= 0.97", "the training loop's tokens/s over the bare loop's, same model"),
        "sparse50_step_overhead": ("", "<= 0.02", "step time at 50% global sparsity over dense, minus 1"),
        "sparse90_step_overhead": ("", "<= 0.02", "step time at 90% global sparsity over dense, minus 1"),
    },
    "benchmarks/study_throughput.py": {
        "tokens_per_s_s1": ("tokens/s", "", "training-loop speed of a one-thread job at the study's smallest rung"),
        "tokens_per_s_s4": ("tokens/s", "", "the same at its largest rung"),
        "job_overhead_s_s1": ("s", "", "a job's time outside its training loop (start-up, data check, final eval)"),
        "two_jobs_vs_two_threads_s1": ("", "> 1", "two one-thread jobs over one two-thread job (> 1: jobs in parallel)"),
        "two_jobs_vs_two_threads_s4": ("", "> 1", "the same at the largest rung"),
    },
    "benchmarks/tokenize_speed.py": {
        "pipeline_vs_raw_encode_batch_ratio": ("", ">= 0.8",
                                               "tokens per CPU second of the shard pipeline over raw `encode_batch`"),
        "peak_rss_mb": ("MB", "< 1000", "peak memory of the shard pipeline"),
    },
    "benchmarks/fit_speed.py": {
        "chinchilla_full_grid_seconds": ("s", "< 10", "Chinchilla fit from the 4,500-start grid, 250 points"),
        "fit_cli_default_chinchilla_240_seconds": ("s", "< 10", "the default `sparsescale fit` call, 240 runs"),
        "fit_cli_default_sparsity_48_seconds": ("s", "< 10", "the same for the sparsity law, 48 runs"),
    },
    "benchmarks/dry_run_speed.py": {
        "paper_dry_run_s": ("s", "< 10", "`snakemake -n` of the paper profile (every job listed)"),
        "default_dry_run_s": ("s", "< 10", "`snakemake -n` of the default study"),
    },
    "benchmarks/job_benchmark_overhead.py": {
        "benchmark_overhead_s": ("s", "< 1", "what Snakemake's `benchmark:` directive adds to a train job"),
    },
}


def parse_figures(output: str) -> dict[str, float]:
    """``name: value`` lines (anything after the number ignored); other lines skipped."""
    figures = {}
    for line in output.splitlines():
        found = re.match(r"^([A-Za-z0-9_]+): (-?[\d.]+(?:e[-+]?\d+)?)\b", line)
        if found:
            figures[found.group(1)] = float(found.group(2))
    return figures


def run_benchmark(script: str) -> dict[str, float]:
    print(f"running {script} --quick", flush=True)
    result = subprocess.run([sys.executable, script, "--quick"], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{script} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    figures = parse_figures(result.stdout)
    missing = sorted(set(FIGURES[script]) - set(figures))
    if missing:
        sys.exit(f"{script} printed no {', '.join(missing)}")
    return figures


def measured_rows(reference: float, measured: dict[str, dict[str, float]], measured_on: str) -> list[dict]:
    rows = []
    for script, figures in FIGURES.items():
        for name, (unit, target, meaning) in figures.items():
            rows.append({"section": "cpu", "figure": name, "value": measured[script][name], "unit": unit,
                         "target": target, "meaning": meaning, "command": f"python {script} --quick",
                         "reference_tokens_per_s": reference, "measured_on": measured_on})
    return rows


def main() -> int:
    os.chdir(REPO)
    load = os.getloadavg()[0]  # other work on the machine slows every figure; the reference shows by how much
    measured = {script: run_benchmark(script) for script in FIGURES}
    reference = measured["benchmarks/train_speed.py"][REFERENCE]
    measured_on = (f"{datetime.date.today().isoformat()}, {os.cpu_count()}-core {platform.machine()} CPU, "
                   f"load average {load:.1f} at the start")
    record_path = REPO / "docs" / "benchmarks.json"
    record = json.loads(record_path.read_text())
    commands = {f"python {script} --quick" for script in FIGURES}
    kept = [row for row in record["figures"] if row["command"] not in commands]
    record["figures"] = kept + measured_rows(reference, measured, measured_on)
    record_path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return subprocess.run([sys.executable, "-m", "sparsescale", "docs", "benchmarks"], cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
