"""How fast Snakemake plans the study: dry runs of the default, tiny and paper configs.

Prints one `name: value` line per figure. Targets (issue 3): the paper profile lists every
job in under 10 s; a no-op dry run of the tiny profile after a full run takes under 5 s.
`--quick` (under a minute) skips the full tiny run and times only the dry runs from scratch.

    python benchmarks/dry_run_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from workflow_utils import copy_workflow, snakemake  # noqa: E402


def timed_dry_run(workspace: Path, *args: str) -> float:
    started = time.perf_counter()
    snakemake(workspace, "-n", "--quiet", "all", *args)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the full tiny run (under a minute)")
    args = parser.parse_args()
    workspace = copy_workflow(REPO, Path(tempfile.mkdtemp(prefix="sparsescale-dryrun-")))
    try:
        paper = timed_dry_run(workspace, "--configfile", "config/paper.yaml")
        print(f"paper_dry_run_s: {paper:.2f}")
        print(f"paper_dry_run_vs_10s_target_ratio: {paper / 10:.2f}")
        print(f"default_dry_run_s: {timed_dry_run(workspace):.2f}")
        tiny = timed_dry_run(workspace, "--profile", "profiles/tiny")
        print(f"tiny_dry_run_from_scratch_s: {tiny:.2f}")
        if not args.quick:
            started = time.perf_counter()
            snakemake(workspace, "--cores", "2", "--profile", "profiles/tiny")
            print(f"tiny_profile_end_to_end_s: {time.perf_counter() - started:.0f}")
            noop = timed_dry_run(workspace, "--profile", "profiles/tiny")
            print(f"tiny_noop_dry_run_s: {noop:.2f}")
            print(f"tiny_noop_dry_run_vs_5s_target_ratio: {noop / 5:.2f}")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
