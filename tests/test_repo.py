"""Repository contracts: the README's commands, CI, and the pinned environments agree."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml


def readme_commands(repo_root: Path) -> list[str]:
    text = (repo_root / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick_start, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line and not line.startswith("#")]


def test_quick_start_has_two_commands_and_ci_runs_the_test_one(repo_root):
    install_and_run, install_and_test = readme_commands(repo_root)
    assert install_and_run.endswith("snakemake --cores all")
    assert install_and_test.endswith("pytest")
    ci_lines = (repo_root / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci_lines


def pyproject_pins(repo_root: Path) -> dict[str, str]:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        name, version = requirement.split("==")
        pins[name.lower()] = version
    return pins


ENV_FILES = sorted((Path(__file__).resolve().parents[1] / "envs").glob("*.yaml"))


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.stem)
def test_env_pins_match_pyproject_and_installed(env_file, repo_root):
    env = yaml.safe_load(env_file.read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in env["dependencies"]
    pins = pyproject_pins(repo_root)
    for requirement in pip_section:
        name, version = requirement.split("==")
        assert pins.get(name.lower()) == version, f"{env_file.name}: {requirement} vs pyproject"
        installed = metadata.version(name).split("+")[0]
        assert installed == version, f"{env_file.name}: {requirement} but {installed} installed"


def test_every_rule_names_a_conda_env_that_exists(repo_root):
    rule_files = sorted((repo_root / "workflow" / "rules").glob("*.smk"))
    rules = 0
    for path in rule_files:
        text = path.read_text()
        for match in re.finditer(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, flags=re.S | re.M):
            rules += 1
            body = match.group(2)
            env = re.search(r'conda:\n\s+"([^"]+)"', body)
            assert env, f"{path.name}: rule {match.group(1)} has no conda: directive"
            assert (path.parent / env.group(1)).resolve().is_file(), f"rule {match.group(1)}: {env.group(1)} missing"
    assert rules >= 9
