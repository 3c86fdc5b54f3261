"""A slice of the tiny study through a real one-node SLURM cluster gives the same runs as a
local run of the whole tiny study.

tests/slurm/cluster.sh installs Debian's slurm-wlm and munge and starts the daemons; this
needs root and apt with package access (CI has both), and a machine without SLURM or munge
of its own. Elsewhere the test is skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pandas as pd
import pytest
import yaml
from workflow_utils import copy_workflow, snakemake

pytestmark = pytest.mark.slurm

# Every rule up to the aggregate, both corpora, each schedule family of the tiny study once.
# Each SLURM job starts a Snakemake of its own (several seconds), so the whole tiny study's
# 60 jobs took 5 minutes here; this slice has 15.
SLICE = {
    "experiments": [
        {"name": "slurm-slice", "corpus": "stdlib", "scales": ["t1"], "budgets": ["k40"],
         "schedules": ["dense", "global-tiny", "uniform-tiny"]},
        {"name": "slurm-slice-synthetic", "corpus": "synthetic", "scales": ["t1"], "budgets": ["k40"],
         "schedules": ["dense"]},
    ]
}


@pytest.fixture(scope="module")
def slurm_cluster(repo_root, tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("a local SLURM cluster needs root and apt-get (see tests/slurm/cluster.sh)")
    state = tmp_path_factory.mktemp("slurm")
    script = repo_root / "tests" / "slurm" / "cluster.sh"
    env = {**os.environ, "SLURM_TEST_STATE": str(state)}
    started = subprocess.run(["bash", str(script), "start"], timeout=600, env=env, capture_output=True, text=True)
    if started.returncode == 3:  # the script's "this machine cannot host it", having touched nothing
        pytest.skip(f"no local SLURM cluster here: {started.stderr.strip().splitlines()[-1]}")
    assert started.returncode == 0, f"cluster.sh start failed ({started.returncode}):\n{started.stderr[-4000:]}"
    yield
    subprocess.run(["bash", str(script), "stop"], check=False, timeout=60, env=env)


def test_tiny_study_slice_through_slurm_matches_local_run(slurm_cluster, tiny_study, repo_root, tmp_path):
    workspace = copy_workflow(repo_root, tmp_path)
    (workspace / "config" / "slurm-slice.yaml").write_text(yaml.safe_dump(SLICE))
    target = "results/aggregate/runs.csv"
    result = snakemake(
        workspace, target, "--profile", "profiles/slurm",
        "--configfile", "config/tiny.yaml", "config/slurm-slice.yaml",
    )
    output = result.stdout + result.stderr
    on_slurm = pd.read_csv(workspace / target).set_index("run_id")
    local = pd.read_csv(tiny_study / target).set_index("run_id")
    assert len(on_slurm) == 8 and set(on_slurm["corpus"]) == {"stdlib", "synthetic"}
    assert set(on_slurm["method"]) == {"dense", "global", "uniform"}
    assert set(on_slurm.index) <= set(local.index)
    # same seeds, same data, one thread each: training is bit-for-bit deterministic on CPU
    pd.testing.assert_series_equal(
        on_slurm["final_val_loss"].sort_index(), local.loc[on_slurm.index, "final_val_loss"].sort_index()
    )
    # every job went through the scheduler: corpus, tokenizer and shards per corpus, each run, aggregate
    submitted = output.count("has been submitted with SLURM jobid")
    assert submitted == 3 * 2 + len(on_slurm) + 1
