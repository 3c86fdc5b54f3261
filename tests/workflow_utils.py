"""Helpers for tests that drive the Snakemake workflow in a temporary copy of it."""

from __future__ import annotations

import atexit
import collections
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "profiles", "notebooks", "envs", "src")


def copy_workflow(repo_root: Path, dest: Path) -> Path:
    for part in WORKFLOW_PARTS:
        source = repo_root / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / part)
    return dest


@functools.cache
def _cache_home() -> str:
    """One cache folder for the test session's Snakemake calls, removed at exit."""
    folder = tempfile.mkdtemp(prefix="sparsescale-test-cache-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _snakemake_env() -> dict:
    env = dict(os.environ)
    # rules call `python -m sparsescale`: the python of this venv, as after activating it
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Snakemake writes its source cache under $XDG_CACHE_HOME (default ~/.cache), even in a
    # dry run: a HOME that is not writable must not fail the tests
    env["XDG_CACHE_HOME"] = _cache_home()
    # a user's default profile (HPC accounts often set one) must not send test jobs elsewhere
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=_snakemake_env(),
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def start_snakemake(cwd: Path, *args: str, log: Path) -> subprocess.Popen:
    """Snakemake in the background, in its own process group (to kill it with all its jobs)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=cwd,
            env=_snakemake_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def dry_run_jobs(cwd: Path, *args: str) -> collections.Counter:
    """Jobs a dry run would execute, by rule (parsed from Snakemake's 'Job stats' table)."""
    result = snakemake(cwd, "-n", *args)
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return collections.Counter()
    table = output.split("Job stats:", 1)[1]
    jobs = collections.Counter()
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            jobs[match.group(1)] = int(match.group(2))
    return jobs


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
