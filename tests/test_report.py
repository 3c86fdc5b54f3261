"""The HTML report embeds every figure of every executed notebook, with captions and provenance."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

import notebook_fixtures as nf
from sparsescale.io import InputError
from sparsescale.report import (NOTEBOOK_CLAIMS, NOTEBOOK_ORDER, TITLES, add_commands, build_html, item_caption,
                                report_group, write_report)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    executed = nf.executed_notebooks()
    dirs = [executed["out"][name] for name in nf.NOTEBOOKS]
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report(dirs, executed["params"]["config_path"], out)
    return executed, dirs, out


def test_report_embeds_every_figure(report):
    executed, dirs, out = report
    text = out.read_text(encoding="utf-8")
    n = 0
    for folder in dirs:
        for fig in json.loads((folder / "figures.json").read_text()):
            data = base64.b64encode((folder / "figures" / fig["png"]).read_bytes()).decode("ascii")
            assert f"data:image/png;base64,{data}" in text, f"{folder.name}/{fig['png']} not embedded"
            assert fig["caption"].split(";")[0].replace("'", "&#x27;") in text.replace("&amp;", "&")
            n += 1
    assert n >= 19
    assert text.count("<figure") == n
    srcs = re.findall(r"""src=['"]([^'"]{0,30})""", text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs), "external image reference"
    assert text.count("rule <code>notebook</code>") >= n
    assert "notebooks/when_to_prune.ipynb" in text


def test_report_has_tables_summary_and_config(report):
    executed, dirs, out = report
    text = out.read_text(encoding="utf-8")
    assert "Table: verdicts" in text and "Table: ranking" in text and "Table: heldout_errors" in text
    assert "<section class='summary'>" in text and "<strong>reproduced</strong>" in text
    assert "fixture study config" in text  # the config file's text
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask, "report not made like any new file (0666 less the umask)"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def test_report_cli_and_bad_input(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--notebooks", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")])
    with pytest.raises(InputError, match="not a folder"):
        args.func(args)
    assert not (tmp_path / "r.html").exists()
    assert "notebook" in parser._subparsers._group_actions[0].choices  # both subcommands registered


def test_report_on_an_empty_notebook_folder(tmp_path):
    folder = tmp_path / "custom"
    (folder / "figures").mkdir(parents=True)
    (folder / "custom.ipynb").write_text("{}")
    html = build_html([folder], None)
    assert "produced no figure or table" in html and "No configuration file given" in html


def test_report_config_json_and_summary(report, tmp_path):
    executed, dirs, _ = report
    out, summary = tmp_path / "r.html", tmp_path / "SUMMARY.md"
    write_report(dirs, None, out, config_json='{"scales": {"s1": {"d_model": 48}}, "seed_marker": 7}', summary_out=summary)
    assert "seed_marker: 7" in out.read_text()
    assert summary.read_text() == (executed["out"]["against_papers"] / "tables" / "SUMMARY.md").read_text()


def test_item_caption_is_the_notebooks_caption(report):
    executed, dirs, _ = report
    folder = executed["out"]["when_to_prune"]
    for kind in ("figure", "table"):
        for entry in json.loads((folder / f"{kind}s.json").read_text()):
            assert item_caption(folder, kind, entry["name"]) == entry["caption"] != ""
    assert item_caption(folder, "figure", "no_such_figure") == ""
    with pytest.raises(InputError, match="kind 'plot'"):
        item_caption(folder, "plot", "gap_25_75")


def test_report_group_is_the_scale_or_else_the_claim():
    corpora, budgets = ["stdlib", "std", "synthetic"], ["k80", "tpp20"]
    assert report_group("when_to_prune", "heatmap_stdlib_tpp20", corpora, budgets) == "stdlib / tpp20"
    assert report_group("when_to_prune", "heatmap_std_k80", corpora, budgets) == "std / k80"
    assert report_group("training_curves", "val_loss_vs_tokens_synthetic", corpora, budgets) == "synthetic"
    assert report_group("when_to_prune", "gap_25_75", corpora, budgets) == NOTEBOOK_CLAIMS["when_to_prune"]
    assert report_group("mine", "figure", corpora, budgets) == "mine"
    assert set(NOTEBOOK_ORDER) == set(TITLES) == set(NOTEBOOK_CLAIMS)


def describe(notebook: str, kind: str, name: str) -> str:
    """workflow/report/notebook.rst as `snakemake --report` renders it for one result: Jinja, then
    reStructuredText to HTML, with any docutils warning raised as an error."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    template = (nf.REPO / "workflow" / "report" / "notebook.rst").read_text()
    wildcards = SimpleNamespace(notebook=notebook, **{kind: name})
    text = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(
        snakemake=SimpleNamespace(wildcards=wildcards, rule="notebook"))
    return publish_parts(text, writer="html", settings_overrides={"halt_level": 2})["body"]


def test_every_figure_and_table_has_its_own_description(report):
    executed, dirs, _ = report
    generic = "the <em>caption</em> label"
    described = 0
    for folder in dirs:
        for kind in ("figure", "table"):
            for entry in json.loads((folder / f"{kind}s.json").read_text()):
                text = describe(folder.name, kind, entry["name"])
                assert "<strong>Shows</strong>" in text and "<strong>Driven by</strong>" in text, (folder.name, entry)
                assert generic not in text, f"{folder.name}/{entry['name']}: add it to workflow/report/notebook.rst"
                described += 1
    assert described >= 35
    assert generic in describe("schedules", "figure", "a_new_figure")
    assert "stdlib_tpp20" in describe("when_to_prune", "figure", "heatmap_stdlib_tpp20")
