"""Law-fitting speed; prints ``name: value`` lines.

    .venv/bin/python benchmarks/fit_speed.py [--quick] [--points 250] [--seed 0]

1. The Chinchilla approach-3 fit with the full published initialisation grid (4500 starts)
   on ``--points`` synthetic points. How the full grid is made fast: the Huber objective is
   evaluated at all 4500 starts in one vectorised numpy pass; L-BFGS then runs from the
   best-screened starts in batches of 32 until two batches bring no better loss (at most
   256). Without ``--quick`` the script also runs L-BFGS from every one of the 4500 starts
   (the exhaustive reference, ~20 s) and prints the ratio of the two fit losses.
   ``single_start_*`` lines show why the grid matters: L-BFGS from single random grid
   starts often stops in a local minimum.
2. The whole default ``sparsescale fit`` command, as a user runs it (process start, fit,
   100 bootstrap refits, the leave-one-scale-out and 5-fold fits, JSON; the held-out fits'
   own refits are off by default, and 100 of each would triple the time): on 240 Chinchilla
   points and on a 48-run sparsity-law table, with its default workers (every CPU) and with
   ``--workers 1``. Target: under 10 s on 2 cores. Where the time went before (240 points,
   2 cores, one process): the full fit 1.4 s, 100 warm bootstrap refits 1.9 s, the six
   held-out full fits 8 s (each refined 256 starts; now about 96), imports 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def time_fit_cli(law: str, table: pd.DataFrame, *options: str) -> float:
    """Wall seconds of ``sparsescale fit --law LAW`` with its defaults on ``table``."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "runs.csv"
        table.to_csv(data, index=False)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sparsescale", "fit", "--law", law, "--data", str(data),
                        "--out", str(Path(tmp) / "fit.json"), *options], check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the exhaustive 4500-start reference")
    ap.add_argument("--points", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from sparsescale.laws.chinchilla import PUBLISHED, ChinchillaLaw, hoffmann_grid
    from sparsescale.laws.synthetic import chinchilla_points, runs_table

    data = chinchilla_points(args.points, args.seed)
    t0 = time.perf_counter()
    law = ChinchillaLaw().fit(data)
    elapsed = time.perf_counter() - t0
    print(f"cpu_count: {os.cpu_count()}")
    print(f"n_points: {args.points}")
    print(f"n_starts: {law.n_starts}")
    print(f"n_refined: {law.winning_start['refined_starts']}")
    print(f"chinchilla_full_grid_seconds: {elapsed:.3f}")
    print(f"fit_loss: {law.fit_loss:.9g}")
    print(f"winning_start_index: {law.winning_start['index']}")
    for k, v in law.params.items():
        print(f"param_{k}: {v:.6g} (true {PUBLISHED[k]:g})")

    grid = hoffmann_grid()
    rng = np.random.default_rng(args.seed + 1)
    picks = rng.choice(len(grid), 20 if args.quick else 60, replace=False)
    t0 = time.perf_counter()
    single = np.array([law.fit_from(data, grid[i]).fit_loss for i in picks])
    per_start = (time.perf_counter() - t0) / len(picks)
    ratio = single / law.fit_loss
    print(f"single_start_seconds_mean: {per_start:.4f}")
    print(f"grid_vs_single_start_loss_ratio: {np.median(law.fit_loss / single):.4g} "
          f"(median over {len(picks)} random single grid starts)")
    print(f"single_start_stuck_fraction: {np.mean(ratio > 1.01):.3f} (loss > 1.01 x grid loss)")

    points = chinchilla_points(240, args.seed)
    chinchilla_table = pd.DataFrame({"n_final": points["N"], "tokens": points["D"], "final_val_loss": points["L"],
                                     "scale": pd.qcut(points["N"], 6, labels=False)})
    sparsity_table = runs_table("sparsity", seed=args.seed, n_prunable=(2e6, 6e6, 2e7, 6e7))
    print(f"fit_cli_default_chinchilla_240_seconds: {time_fit_cli('chinchilla', chinchilla_table):.2f}")
    print(f"fit_cli_default_sparsity_{len(sparsity_table)}_seconds: {time_fit_cli('sparsity', sparsity_table):.2f}")
    if not args.quick:
        print(f"fit_cli_one_worker_chinchilla_240_seconds: "
              f"{time_fit_cli('chinchilla', chinchilla_table, '--workers', '1'):.2f}")
        print(f"fit_cli_one_worker_sparsity_{len(sparsity_table)}_seconds: "
              f"{time_fit_cli('sparsity', sparsity_table, '--workers', '1'):.2f}")
        t0 = time.perf_counter()
        full = ChinchillaLaw(n_refine=None).fit(data)
        print(f"exhaustive_lbfgs_all_starts_seconds: {time.perf_counter() - t0:.3f}")
        print(f"screened_vs_exhaustive_loss_ratio: {law.fit_loss / full.fit_loss:.9f}")


if __name__ == "__main__":
    main()
