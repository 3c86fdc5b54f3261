import os
import time
from pathlib import Path

import pytest
from workflow_utils import copy_workflow, snakemake

REPO_ROOT = Path(__file__).resolve().parents[1]


def _numpy_warnings_as_errors() -> None:
    """The pyproject's floating-point warning filters, for every subprocess the tests start
    (notebook kernels, Snakemake and its jobs): PYTHONWARNINGS takes literal message prefixes."""
    import tomllib

    filters = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["filterwarnings"]
    os.environ["PYTHONWARNINGS"] = ",".join(filters)


_numpy_warnings_as_errors()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A copy of the workflow in which the tiny profile has run end to end (once per session)."""
    workspace = copy_workflow(REPO_ROOT, tmp_path_factory.mktemp("tiny"))
    started = time.perf_counter()
    snakemake(workspace, "--cores", "2", "--profile", "profiles/tiny")
    print(f"tiny profile end to end: {time.perf_counter() - started:.0f} s")
    return workspace
