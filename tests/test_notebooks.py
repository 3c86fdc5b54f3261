"""The notebook templates execute on the fixture aggregate, and the runner is all or nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zmq

import notebook_fixtures as nf

EXPECTED_FIGURES = {
    "schedules": ["density_vs_compute", "density_vs_steps", "mean_density"],
    "training_curves": ["val_loss_vs_tokens_stdlib", "val_loss_vs_compute_stdlib", "val_loss_vs_tokens_synthetic",
                        "val_loss_vs_compute_synthetic"],
    "when_to_prune": ["heatmap_stdlib_tpp20", "gap_25_75"],
    "average_params_law": ["predicted_vs_observed", "residuals", "loss_vs_nbar", "heldout_error",
                           "dense_law_on_sparse_runs"],
    "sparsity_law": ["predicted_vs_observed", "loss_vs_sparsity", "optimal_sparsity_contours",
                     "optimal_sparsity_vs_data", "nm_vs_unstructured"],
    "against_papers": ["claims_overview"],
    "cost": ["cost_vs_flops", "cost_vs_n_and_d", "peak_memory"],
    "planner": ["tokens_per_param", "schedule_loss_vs_compute", "optimal_sparsity_vs_compute"],
}
# table -> (required columns, expected row count or None)
EXPECTED_TABLES = {
    "schedules": {"planned_vs_achieved": (["schedule", "planned_sparsity", "achieved_mean", "mean_density"], 20)},
    "training_curves": {"final_loss": (["corpus", "scale", "budget", "family", "loss", "delta_vs_dense"], None)},
    "when_to_prune": {"ranking": (["scale", "target_sparsity", "rank", "start", "duration", "loss", "gap_to_best"], 32),
                      "claim_25_75": (["scale", "target_sparsity", "best_schedule", "gap", "gap_se", "rank",
                                       "margin_abs", "within_margin", "boot_low", "boot_high", "bootstrap_within"], 4)},
    "average_params_law": {"heldout_errors": (["law", "loso_mae", "loso_rmse", "kfold_mae", "mae_on_shared_runs"], 3),
                           "coefficients": (["law", "parameter", "value", "ci_low", "ci_high"], 20),
                           "claim_analyses": (["analysis", "decision", "numbers", "value", "interval_low",
                                               "interval_high"], 3)},
    "sparsity_law": {"coefficients": (["parameter", "value", "ci_low", "ci_high", "paper B T5/C4"], 7),
                     "optimal_sparsity_trend": (["n_nonzero", "compute", "s_opt"], None),
                     "nm_vs_unstructured": (["scale", "nm_loss", "unstructured_loss", "nm_minus_unstructured"], 2)},
    "against_papers": {"verdicts": (["claim", "our result", "papers' result", "margin", "verdict"], 5),
                       "analyses": (["claim", "analysis", "decision", "numbers"], 10),
                       "scale": (["study", "models / data"], 3),
                       "coefficients_vs_published": (["parameter", "ours", "published"], 12)},
    "cost": {"cost_law": (["law", "parameter", "value", "se", "ci_low", "ci_high", "r2", "heldout_rel_error"], 7),
             "cost_extrapolation": (["times_largest", "job_law_s", "job_law_low_s", "job_law_high_s",
                                     "overhead_plus_loop_s"], 4),
             "cost_per_run": (["run_id", "train_flops", "job_wall_s", "job_cpu_s", "job_max_rss_mb", "overhead_s"],
                              None)},
    # 3 fits x 3 rungs x 2 budgets; 3 x 2 x 4 final sparsities; 3 non-zero sizes x 6 budgets; 3 + 1 + 1 answers
    "planner": {"dense_allocation": (["fit", "scale", "budget", "n_opt", "tokens_per_param", "extrapolation"], 18),
                "schedule_ranking": (["scale", "budget", "final_sparsity", "best_window", "window_rank",
                                      "gap_to_best", "window_p_best"], 24),
                "optimal_sparsity": (["n_nonzero", "compute_flops", "s_opt", "gain_vs_dense", "multiplier",
                                      "extrapolation"], 18),
                "advice": (["question", "papers' advice", "law", "recommendation at the papers' scales",
                            "extrapolated"], 5)},
}


@pytest.fixture(scope="module")
def executed():
    return nf.executed_notebooks()


@pytest.mark.parametrize("name", nf.NOTEBOOKS)
def test_notebook_outputs(executed, name):
    out = executed["out"][name]
    assert (out / f"{name}.ipynb").is_file() and (out / f"{name}.html").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    captions = {f["name"]: f["caption"] for f in json.loads((out / "figures.json").read_text())}
    for fig in EXPECTED_FIGURES[name]:
        assert captions.get(fig), f"{name}: figure {fig} missing from figures.json"
        _assert_real_png(out / "figures" / f"{fig}.png")
        assert (out / "figures" / f"{fig}.pdf").read_bytes()[:4] == b"%PDF"
    for table, (columns, rows) in EXPECTED_TABLES[name].items():
        frame = pd.read_csv(out / "tables" / f"{table}.csv")
        assert set(columns) <= set(frame.columns), f"{name}/{table}: columns {list(frame.columns)}"
        if rows is not None:
            assert len(frame) == rows, f"{name}/{table}: {len(frame)} rows"
        assert (out / "tables" / f"{table}.md").read_text().startswith("| ")
        assert r"\begin{tabular}" in (out / "tables" / f"{table}.tex").read_text()


def _assert_real_png(path: Path):
    from PIL import Image

    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 200, f"{path}: {img.size}"
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colours = np.unique(pixels[:: max(1, len(pixels) // 50000)], axis=0)
    assert len(colours) > 20, f"{path}: blank or near-blank ({len(colours)} colours)"


def test_verdicts_on_fixture(executed):
    """The papers' four claims are reproduced on the fixture; the schedule-advice check is not
    tested, since the fixture's fits hold no leave-one-window-out predictions."""
    verdicts = pd.read_csv(executed["out"]["against_papers"] / "tables" / "verdicts.csv")
    assert list(verdicts["verdict"]) == ["reproduced"] * 4 + ["not tested"]
    analyses = pd.read_csv(executed["out"]["against_papers"] / "tables" / "analyses.csv")
    assert sorted(analyses.groupby("claim").size()) == [1, 2, 2, 2, 3]  # entropy; prune, sparsity, advice; N-bar
    papers = analyses[~analyses["claim"].str.contains("picks a near-optimal schedule")]
    assert set(papers["decision"]) == {"reproduced"}
    summary = (executed["out"]["against_papers"] / "tables" / "SUMMARY.md").read_text()
    assert summary.count("**reproduced**") == 4 and summary.count("**not tested**") == 1


def test_parameters_cell_honoured(executed):
    """Same template, a different runs table: the 25%->75% verdict is recomputed and flips."""
    base = pd.read_csv(executed["out"]["against_papers"] / "tables" / "verdicts.csv")
    variant = pd.read_csv(executed["out"]["against_papers_variant"] / "tables" / "verdicts.csv")
    assert base.loc[0, "verdict"] == "reproduced"
    assert variant.loc[0, "verdict"] == "not reproduced"
    assert variant.loc[0, "headline number"] > 0.2
    assert list(base.loc[1:, "verdict"]) == list(variant.loc[1:, "verdict"])
    executed_nb = json.loads((executed["out"]["against_papers_variant"] / "against_papers.ipynb").read_text())
    injected = [c for c in executed_nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and executed["variant_params"]["runs_csv"] in "".join(injected[0]["source"])


def test_missing_inputs_give_notes_not_broken_figures(executed):
    out = executed["out"]
    index = out["sparsity_law_bare"] / "figures.json"
    names = [f["name"] for f in json.loads(index.read_text())] if index.exists() else []
    assert names == ["nm_vs_unstructured"]  # the n:m runs are still there; no law figure without a fit
    html = (out["sparsity_law_bare"] / "sparsity_law.html").read_text()
    assert "No `sparsity` fit was given" in html or "No <code>sparsity</code> fit was given" in html
    assert not list((out["sparsity_law_bare"] / "figures").glob("optimal_sparsity*.png"))
    verdicts = pd.read_csv(out["against_papers_bare"] / "tables" / "verdicts.csv")
    assert verdicts.loc[0, "verdict"] == "reproduced"  # from runs only
    assert list(verdicts.loc[1:, "verdict"]) == ["not tested"] * 4
    _assert_real_png(out["against_papers_bare"] / "figures" / "claims_overview.png")
    assert not list((out["training_curves_bare"] / "figures").glob("*.png"))
    # the planner without our fits: the published coefficient sets still answer the dense question
    names = [f["name"] for f in json.loads((out["planner_bare"] / "figures.json").read_text())]
    assert names == ["tokens_per_param"]
    advice = pd.read_csv(out["planner_bare"] / "tables" / "advice.csv")
    assert list(advice["law"]) == ["published:besiroglu2024", "published:hoffmann2022"]
    planner = (out["planner_bare"] / "planner.html").read_text()
    assert "No <code>average_params</code> or <code>recovery</code> fit was given" in planner
    assert "No validation losses" in (out["training_curves_bare"] / "training_curves.html").read_text()


def test_cost_notebook_recovers_the_fixture_cost_law(executed):
    law = pd.read_csv(executed["out"]["cost"] / "tables" / "cost_law.csv").set_index(["law", "parameter"])
    for key in (("job time ∝ C^b", "exponent of train_flops"), ("job time ∝ N^a · D^b", "exponent of n_prunable"),
                ("job time ∝ N^a · D^b", "exponent of tokens")):
        assert law.loc[key, "ci_low"] < nf.COST["exponent"] < law.loc[key, "ci_high"], key
    assert law["heldout_rel_error"].max() < 0.1  # the fixture's 5% noise, not a misfit
    per_run = pd.read_csv(executed["out"]["cost"] / "tables" / "cost_per_run.csv")
    runs = pd.read_csv(executed["params"]["runs_csv"])
    assert len(per_run) == len(runs)
    assert np.allclose(per_run["overhead_s"], nf.COST["overhead_s"])
    extrapolated = pd.read_csv(executed["out"]["cost"] / "tables" / "cost_extrapolation.csv")
    growth = extrapolated["job_law_s"].iloc[-1] / extrapolated["job_law_s"].iloc[0]
    assert growth == pytest.approx(1000 ** law.loc[("job time ∝ C^b", "exponent of train_flops"), "value"])
    # at the largest runs' FLOPs both estimates are those runs' measured time, to within the noise
    flops = runs["model_flops_per_token"] * runs["tokens"]
    largest = runs.loc[np.isclose(flops, flops.max()), "job_wall_s"].median()
    assert extrapolated.loc[0, ["job_law_s", "overhead_plus_loop_s"]].tolist() == pytest.approx([largest] * 2, rel=0.1)


def test_cost_notebook_without_benchmarks_says_so(executed):
    out = executed["out"]["cost_bare"]
    assert not list((out / "figures").glob("*.png"))
    assert "has no job_wall_s" in (out / "cost.html").read_text()


def _notebook_cli(argv):
    from sparsescale import report

    parser = argparse.ArgumentParser()
    report.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _template(path: Path, *cells: str) -> Path:
    """A papermill-ready template at ``path``: a parameters cell, then ``cells``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell("runs_csv = ''\nfigures_dir = 'figures'\ntables_dir = 'tables'")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, *map(new_code_cell, cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)
    return path


def test_failing_cell_leaves_nothing_and_reports_traceback(tmp_path, capsys):
    template = _template(tmp_path / "broken.ipynb", "x = 1",
                         "def inner():\n    raise ValueError('boom-marker-42')\ninner()")
    results = tmp_path / "results"
    rc = _notebook_cli(["notebook", "--template", str(template), "--out-dir", str(results / "broken"),
                        "-p", "runs_csv", "x.csv"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "boom-marker-42" in err and "ValueError" in err and "inner()" in err
    assert "\x1b[" not in err
    assert not (results / "broken").exists()
    assert list(results.iterdir()) == []


def _kernel_folder_takes_ipc() -> bool:
    """Whether a kernel folder in this machine's temporary folder gets unix sockets."""
    import os
    import tempfile

    from sparsescale.notebook import _ipc_prefix_fits

    return _ipc_prefix_fits(os.path.join(tempfile.gettempdir(), "sparsescale-kernel-xxxxxxxx", "kernel"))


@pytest.mark.skipif(not zmq.has("ipc"), reason="this platform's zmq has no ipc transport (Windows)")
@pytest.mark.skipif(not _kernel_folder_takes_ipc(), reason="the temporary folder's path is too long for a unix socket")
def test_kernel_talks_over_owner_only_unix_sockets_without_tcp_ports(tmp_path, monkeypatch):
    """The CI failure this prevents: jupyter_client chose free TCP ports in this process and
    released them; another process took one before the kernel bound it ("Address already in
    use", then "Kernel didn't respond in 60 seconds"). Any TCP port chosen here now fails."""
    import types

    import jupyter_client.connect
    import nbformat

    from sparsescale.notebook import run_notebook

    def no_tcp(*args, **kwargs):
        raise OSError("test: a TCP port was chosen for the kernel")

    monkeypatch.setattr(jupyter_client.connect, "socket", types.SimpleNamespace(socket=no_tcp))
    probe = _template(tmp_path / "probe.ipynb", (
        "import os, stat\nfrom ipykernel.kernelapp import IPKernelApp\napp = IPKernelApp.instance()\n"
        "folder = os.path.dirname(app.ip)\n"
        "ports = (app.shell_port, app.iopub_port, app.stdin_port, app.control_port, app.hb_port)\n"
        "in_folder = all(stat.S_ISSOCK(os.stat(f'{app.ip}-{port}').st_mode) for port in ports)\n"
        "in_folder &= os.path.dirname(app.abs_connection_file) == folder\n"
        "print(app.transport, folder, oct(os.stat(folder).st_mode & 0o777), in_folder)"))
    out = run_notebook(probe, tmp_path / "results" / "probe", html=False)
    transport, folder, mode, in_folder = nbformat.read(out / "probe.ipynb", as_version=4).cells[-1].outputs[0].text.split()
    assert (transport, mode, in_folder) == ("ipc", "0o700", "True")
    assert not Path(folder).exists()  # removed once the notebook has run


def test_the_python3_kernel_is_this_interpreter_whatever_kernelspec_the_user_has(tmp_path, monkeypatch):
    """A ``python3`` kernelspec of the user's, here first on JUPYTER_PATH, names another Python
    (one that exits at once); the notebook still runs in this interpreter, and the user's
    JUPYTER_PATH is left as it was."""
    import os
    import sys

    import nbformat

    from sparsescale.notebook import run_notebook

    decoy = tmp_path / "user-jupyter" / "kernels" / "python3"
    decoy.mkdir(parents=True)
    (decoy / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-c", "raise SystemExit(3)", "-f", "{connection_file}"],
        "display_name": "another Python", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "user-jupyter"))
    probe = _template(tmp_path / "probe.ipynb", "import sys\nprint(sys.executable)")
    out = run_notebook(probe, tmp_path / "results" / "probe", html=False, timeout=120)
    ran_with = nbformat.read(out / "probe.ipynb", as_version=4).cells[-1].outputs[0].text.strip()
    assert os.path.samefile(ran_with, sys.executable)
    assert os.environ["JUPYTER_PATH"] == str(tmp_path / "user-jupyter")


def test_kernel_falls_back_to_encrypted_tcp_where_a_socket_path_would_be_too_long(tmp_path, monkeypatch):
    import tempfile

    from sparsescale.notebook import _kernel_config

    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with _kernel_config() as config:
        settings = dict(config.KernelManager)
    assert "transport" not in settings and "ip" not in settings
    assert settings.get("transport_encryption") == ("auto" if zmq.has("curve") else None)
    assert list(deep.iterdir()) == []


def test_a_template_is_given_only_the_fits_its_metadata_names(tmp_path):
    from sparsescale.io import InputError
    from sparsescale.notebook import fits_read

    fits = {"dense_only": "d.json", "sparsity": "s.json", "synthetic": "e.json"}

    def template(metadata):
        path = tmp_path / "t.ipynb"
        path.write_text(json.dumps({"cells": [], "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}))
        return path

    assert fits_read(template({"sparsescale": {"fit_roles": ["sparsity", "average_params"]}}), fits) == {
        "sparsity": "s.json"}
    assert fits_read(template({"sparsescale": {"fit_roles": []}}), fits) == {}
    assert fits_read(template({}), fits) == fits  # a template that names none reads every fit
    with pytest.raises(InputError, match=r"t\.ipynb: metadata\.sparsescale\.fit_roles must be a list"):
        fits_read(template({"sparsescale": {"fit_roles": "sparsity"}}), fits)
    (tmp_path / "broken.ipynb").write_text("{")
    with pytest.raises(InputError, match=r"broken\.ipynb: not a readable notebook"):
        fits_read(tmp_path / "broken.ipynb", fits)


def test_templates_name_the_fits_they_read():
    """A template that names no fit role never touches ``fits``; one that names roles loads them."""
    import re

    known = {"dense_only", "average_params", "final_params", "recovery", "sparsity", "synthetic"}
    for name in nf.NOTEBOOKS:
        nb = json.loads((nf.REPO / "notebooks" / f"{name}.ipynb").read_text())
        roles = nb["metadata"]["sparsescale"]["fit_roles"]
        assert set(roles) <= known, name
        code = "\n".join("".join(c["source"]) for c in nb["cells"]
                         if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", []))
        assert bool(re.search(r"\bfits\b", code)) == bool(roles), name


def test_parse_parameters_yaml():
    from sparsescale.notebook import parse_parameters

    got = parse_parameters([["fits", "{sparsity: results/fits/s.json}"], ["prune_margin", "0.01"],
                            ["runs_csv", "results/aggregate/runs.csv"], ["config_path", ""], ["flag", "yes"]])
    assert got == {"fits": {"sparsity": "results/fits/s.json"}, "prune_margin": 0.01,
                   "runs_csv": "results/aggregate/runs.csv", "config_path": "", "flag": True}


def test_templates_are_papermill_ready():
    for name in nf.NOTEBOOKS:
        nb = json.loads((nf.REPO / "notebooks" / f"{name}.ipynb").read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        assert nb["metadata"]["language_info"]["name"] == "python"
        tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(tagged) == 1
        src = "".join(tagged[0]["source"])
        for key in ("runs_csv", "steps_parquet", "fits", "data_manifests", "config_path", "figures_dir", "tables_dir"):
            assert f"{key} =" in src, f"{name}: parameter {key} missing"
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{name}: stored outputs"


def test_planner_answers_come_from_the_fits(executed):
    """The planner's tables are the planning library's answers on the given fits, with intervals."""
    from sparsescale import plan

    out = executed["out"]["planner"] / "tables"
    fit = plan.load_fit(executed["params"]["fits"]["dense_only"])
    table = pd.read_csv(out / "dense_allocation.csv")
    ours = table[table["fit"] == fit.name]
    expected = plan.dense_allocation(fit, ours["compute_flops"], plan.make_cost("H100"))
    np.testing.assert_allclose(ours["n_opt"], expected["n_opt"], rtol=1e-9)
    assert ours["tokens_per_param"].str.contains(r"\[").all()  # bootstrap intervals from the refits
    assert not table[table["fit"].str.startswith("published:")]["tokens_per_param"].astype(str).str.contains(r"\[").any()
    ranking = pd.read_csv(out / "schedule_ranking.csv")
    assert set(ranking["scale"]) == {"58M", "162M", "468M"} and (ranking["schedules"] == 10).all()
    assert ranking["window_rank"].between(1, 10).all() and (ranking["gap_to_best"] >= 0).all()
