"""The documentation cannot drift: generated parts match their sources, commands parse, the README stays short."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from sparsescale import docs
from sparsescale.cli import build_parser
from workflow_utils import copy_workflow, snakemake

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "config" / "README.md"]
GENERATED_PAGES = {REPO / "docs" / "results.md", REPO / "docs" / "benchmarks.md", REPO / "config" / "README.md"}


def read(relative: str | Path) -> str:
    return (REPO / relative).read_text()


# --- generated files are up to date with their sources ------------------------------------------


def test_config_reference_is_generated_from_the_schema():
    schema = docs.load_schema(REPO / docs.SCHEMA)
    assert read(docs.CONFIG_REFERENCE) == docs.config_reference(schema) + "\n", "run `sparsescale docs config`"


def test_every_schema_key_has_a_description():
    assert docs.undescribed_keys(docs.load_schema(REPO / docs.SCHEMA)) == []


def test_config_reference_lists_keys_with_type_default_and_meaning():
    keys = {k["key"]: k for k in docs.config_keys(docs.load_schema(REPO / docs.SCHEMA))}
    assert keys["training.lr"]["default"] == "`0.003`" and "learning rate" in keys["training.lr"]["description"]
    assert keys["corpora.<name>.source"]["default"] == "required"
    assert "`geometric`" in keys["schedules.<name>.shape"]["type"]
    assert keys["resources.train.gpus"]["type"] == "integer >= 0"
    assert "experiments[].seeds" in keys and "fits[].bootstrap" in keys


def test_readme_results_table_is_generated_from_docs_results():
    readme = read(docs.README)
    figure_exists = (REPO / docs.README_FIGURE).is_file()
    assert readme == docs.readme_with_results(readme, read(docs.RESULTS), figure_exists), "run `sparsescale docs results`"


def test_a_changed_verdict_makes_the_readme_results_table_stale():
    readme, summary = read(docs.README), read(docs.RESULTS)
    changed = summary.replace("| **reproduced** |", "| **unstable** |", 1)
    assert changed != summary
    assert docs.readme_with_results(readme, changed, (REPO / docs.README_FIGURE).is_file()) != readme


def test_the_readme_shows_the_figure_once_a_run_has_provided_it():
    assert docs.figure_block(False) == ""
    block = docs.figure_block(True)
    assert f"]({docs.README_FIGURE.as_posix()})" in block and "notebooks/when_to_prune.ipynb" in block


def test_every_claim_of_the_results_has_a_headline():
    """A claim whose wording no headline pattern reads would fall back to its first clause: say so here."""
    rows = docs.summary_rows(read(docs.RESULTS))
    assert rows
    assert {row["verdict"] for row in rows} <= set(docs.VERDICTS)
    for row in rows:
        assert any(pattern.search(row["ours"]) for pattern, _, _ in docs.HEADLINES), row["claim"]


def test_benchmarks_page_and_readme_timings_are_generated_from_the_record():
    record = json.loads(read(docs.BENCHMARKS_RECORD))
    assert read(docs.BENCHMARKS_PAGE) == docs.benchmarks_page(record) + "\n", "run `sparsescale docs benchmarks`"
    readme = read(docs.README)
    assert readme == docs.readme_with_timings(readme, record), "run `sparsescale docs benchmarks`"


def test_a_changed_benchmark_figure_makes_the_page_stale():
    record = json.loads(read(docs.BENCHMARKS_RECORD))
    record["figures"][0]["value"] *= 2
    assert docs.benchmarks_page(record) + "\n" != read(docs.BENCHMARKS_PAGE)


def test_every_benchmark_figure_states_command_reference_and_machine():
    record = json.loads(read(docs.BENCHMARKS_RECORD))
    sections = {f["section"] for f in record["figures"]}
    assert {"study", "cpu", "gpu"} <= sections
    for figure in record["figures"]:
        assert figure["command"] and figure["measured_on"], figure["figure"]
        assert (figure["reference_tokens_per_s"] or 0) > 0 or figure["section"] == "gpu", figure["figure"]


def load_run_all():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_reads_benchmark_output_into_rows_the_page_shows():
    run_all = load_run_all()
    output = "device: cpu\ntokens_per_s_bare_2x64: 34430\ntrain_vs_bare_ratio: 1.004\nparam_E: 1.69 (true 1.69)\n"
    assert run_all.parse_figures(output) == {"tokens_per_s_bare_2x64": 34430.0, "train_vs_bare_ratio": 1.004,
                                             "param_E": 1.69}
    measured = {script: {name: 0.5 for name in names} for script, names in run_all.FIGURES.items()}
    rows = run_all.measured_rows(30000.0, measured, "a 2-core CPU")
    assert len(rows) == sum(len(names) for names in run_all.FIGURES.values())
    page = docs.benchmarks_page({"figures": rows})
    for script, names in run_all.FIGURES.items():
        assert f"`python {script} --quick`" in page
        assert all(f"`{name}`" in page for name in names)
    assert "| 30,000 | a 2-core CPU |" in page
    assert "| < 10 | yes |" in page and "| >= 0.97 | **no** |" in page  # every figure is 0.5 here


@pytest.mark.parametrize("value, target, met", [(0.97, ">= 0.95", "yes"), (0.9, ">= 0.95", "**no**"),
                                                (5.0, "< 10 s", "yes"), (12.0, "< 10 s", "**no**"), (3.0, "", "")])
def test_meets_target(value, target, met):
    assert docs.meets_target(value, target) == met


def test_replace_block_needs_its_markers():
    with pytest.raises(docs.InputError, match="no generated block"):
        docs.replace_block("no markers here", "results", "cmd", "body")


# --- the README is short and says no history -----------------------------------------------------


def prose_lines(text: str) -> list[str]:
    """Lines outside fenced code blocks, tables and generated blocks."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"<!-- (\w+): generated by .*?<!-- end of \1 -->", "", text, flags=re.S)
    return [line for line in text.splitlines() if not line.lstrip().startswith("|")]


def test_readme_is_at_most_250_lines_and_prose_lines_at_most_120_characters():
    readme = read("README.md")
    assert len(readme.splitlines()) <= 250
    assert [line for line in prose_lines(readme) if len(line) > 120] == []


COMMIT_HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


@pytest.mark.parametrize("path", [p for p in DOC_FILES if p not in GENERATED_PAGES], ids=lambda p: p.name)
def test_no_commit_hash_or_date_of_a_past_run_outside_generated_tables(path):
    prose = "\n".join(prose_lines(path.read_text()))
    assert COMMIT_HASH.findall(prose) == [] and DATE.findall(prose) == []


def test_history_checks_can_fail():
    assert COMMIT_HASH.findall("the run at commit 85acb18 took") == ["85acb18"]
    assert DATE.findall("measured on 2026-11-26") == ["2026-11-26"]
    assert prose_lines("a\n| 2026-11-26 |\n```\n85acb18\n```\nb") == ["a", "", "b"]


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files_that_exist(path):
    """Links into results/ point at a run's outputs (git-ignored); every other relative link must resolve."""
    prose = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    missing = []
    for target in LINK.findall(prose):
        target = target.split("#", 1)[0]
        if not target or re.match(r"[a-z]+:", target):
            continue
        resolved = (path.parent / target).resolve()
        if REPO / "results" in resolved.parents:
            continue
        if not resolved.exists():
            missing.append(target)
    assert missing == []


# --- every command in the docs' code blocks parses ----------------------------------------------

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", flags=re.S | re.M)
TOOLS = ("sparsescale", "snakemake")


def code_block_commands(text: str) -> list[list[str]]:
    """The `sparsescale ...` and `snakemake ...` commands of a Markdown text's fenced code blocks."""
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:
                    continue
                if words and words[0] in TOOLS:
                    commands.append(words)
    return commands


def documented_commands() -> list[tuple[str, str]]:
    return [(path.relative_to(REPO).as_posix(), shlex.join(words))
            for path in DOC_FILES for words in code_block_commands(path.read_text())]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return copy_workflow(REPO, tmp_path_factory.mktemp("docs-commands"))


def command_error(command: str, workspace: Path) -> str | None:
    """Why ``command`` would not run as written (None when it parses): argparse for ``sparsescale``,
    a dry run in a copy of the workflow for ``snakemake``."""
    words = shlex.split(command)
    if words[0] == "sparsescale":
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as exit_:
            return None if exit_.code == 0 else f"sparsescale's parser refused it (exit {exit_.code})"
        return None
    args = words[1:]
    for i, word in enumerate(args):  # config fragments a previous command writes: an empty one stands in
        if word == "--configfile":
            for name in args[i + 1:]:
                if name.startswith("-"):
                    break
                if not (workspace / name).exists():
                    (workspace / name).write_text("{}\n")
    result = snakemake(workspace, *([] if "-n" in args or "--dry-run" in args else ["-n"]), *args, check=False)
    return None if result.returncode == 0 else (result.stdout + result.stderr)[-2000:]


def test_the_docs_have_commands_of_both_tools():
    tools = {command.split()[0] for _, command in documented_commands()}
    assert tools == set(TOOLS)


@pytest.mark.parametrize("where, command", documented_commands(), ids=lambda value: value[:60])
def test_documented_command_parses(where, command, workspace):
    error = command_error(command, workspace)
    assert error is None, f"{where}: {command}\n{error}"


@pytest.mark.parametrize("command", [
    "sparsescale fit --law chinchilla --data runs.csv --out fit.json --n-coll params",
    "sparsescale plan dense --fit published:hoffmann2022 --computee 1e20",
    "snakemake --cores all --forcerunn fit_laws",
])
def test_a_misspelt_option_is_caught(command, workspace):
    assert command_error(command, workspace) is not None
    fixed = command.replace("--n-coll", "--n-col").replace("--computee", "--compute").replace("--forcerunn",
                                                                                                "--forcerun")
    assert command_error(fixed, workspace) is None


def test_commands_are_read_from_code_blocks_only():
    text = "snakemake --cores 1 in prose\n```bash\nsnakemake --cores all results/x  # a target\n" \
           "sparsescale plan dense \\\n  --fit f.json\npython3 -m venv .venv && snakemake --cores all\n```\n"
    assert code_block_commands(text) == [["snakemake", "--cores", "all", "results/x"],
                                         ["sparsescale", "plan", "dense", "--fit", "f.json"],
                                         ["snakemake", "--cores", "all"]]


def test_yaml_blocks_of_the_readme_are_valid_config_fragments():
    schema = docs.load_schema(REPO / docs.SCHEMA)
    blocks = re.findall(r"^```yaml\n(.*?)^```", read("README.md"), flags=re.S | re.M)
    assert blocks
    import jsonschema

    for block in blocks:
        fragment = yaml.safe_load(block)
        for key, value in fragment.items():
            jsonschema.validate(value, {"$defs": schema["$defs"], **schema["properties"][key]})
