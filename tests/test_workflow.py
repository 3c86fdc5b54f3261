"""The Snakemake workflow: lint, config errors, dry-run job lists, and the tiny profile end to end.

Each test works in a copy of the workflow under a temporary folder, so it never touches the
checkout's own results/.
"""

from __future__ import annotations

import collections
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from workflow_utils import copy_workflow, dry_run_jobs, edit_yaml, snakemake, start_snakemake

from sparsescale import claims
from sparsescale.report import TITLES


@pytest.fixture()
def workspace(tmp_path, repo_root):
    return copy_workflow(repo_root, tmp_path)


def test_lint_is_clean(repo_root):
    result = snakemake(repo_root, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakefmt_is_clean(repo_root):
    snakefmt = Path(sys.executable).parent / "snakefmt"
    result = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "workflow/"], cwd=repo_root, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c.update(learning_rate=0.1), "learning_rate"),
        (lambda c: c["training"].update(batch_size="sixteen"), "batch_size"),
        (lambda c: c["schedules"]["global"].update(final_sparsity=[-0.5, 0.8]), "final_sparsity"),
    ],
    ids=["unknown-key", "wrong-type", "negative-sparsity"],
)
def test_bad_config_fails_before_any_job(workspace, change, expected):
    edit_yaml(workspace / "config" / "config.yaml", change)
    result = snakemake(workspace, "-n", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert expected in output
    assert "Job stats" not in output


def test_paper_profile_lists_every_job(workspace):
    # the SLURM executor is not needed to list jobs; the profile's config is what matters
    jobs = dry_run_jobs(workspace, "--configfile", "config/paper.yaml")
    # 3 scales x 2 budgets x (dense + 40 when-to-prune + 3 uniform + 2 n:m + 2 dense-start)
    assert jobs["train"] == 3 * 2 * (1 + 40 + 3 + 2 + 2)
    assert jobs["fit_laws"] == 5 and jobs["report"] == 1  # dense-only, average-params, final-params, recovery, sparsity


def test_default_study_dry_run(workspace):
    jobs = dry_run_jobs(workspace)
    assert jobs["train"] >= 3 * 2 * 2  # >= 3 scales x 2 budgets x dense + sparse
    assert {"corpus", "tokenizer", "shards", "aggregate", "fit_laws", "notebook", "report"} <= set(jobs)


def readme_module_snakefile(repo_root: Path) -> str:
    section = (repo_root / "README.md").read_text().split("## Use from another workflow", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_usable_as_a_module(tmp_path, repo_root):
    """The README's consuming Snakefile, in another folder, lists the tiny profile's jobs and runs them."""
    consumer = tmp_path / "analysis"
    (consumer / "sparsescale").mkdir(parents=True)
    copy_workflow(repo_root, consumer / "sparsescale")
    (consumer / "Snakefile").write_text(readme_module_snakefile(repo_root))
    tiny = ("--configfile", "sparsescale/config/tiny.yaml")
    jobs = dry_run_jobs(consumer, *tiny)
    assert jobs and all(rule.startswith("sparsescale_") for rule in jobs)
    expected = dry_run_jobs(consumer / "sparsescale", "--profile", "profiles/tiny")
    assert {rule.removeprefix("sparsescale_"): n for rule, n in jobs.items()} == dict(expected)
    # the module's code runs from the consumer's folder: one corpus's data stage for real
    snakemake(consumer, "results/data/synthetic/tokens/manifest.json", "--cores", "2", *tiny)
    manifest = json.loads((consumer / "results" / "data" / "synthetic" / "tokens" / "manifest.json").read_text())
    assert manifest["tokens"]["train"] > 0
    assert not (consumer / "sparsescale" / "results").exists()


@pytest.mark.e2e
class TestTinyProfileEndToEnd:
    """Runs the tiny profile once, then checks outputs, idempotence and targeted reruns."""

    @pytest.fixture()
    def done(self, tiny_study):
        return tiny_study

    def test_outputs(self, done):
        results = done / "results"
        assert (results / "report.html").stat().st_size > 10_000
        assert list(results.glob("notebooks/*/figures/*.png"))
        assert list(results.glob("notebooks/*/tables/*.csv"))
        fit = json.loads((results / "fits" / "average-params.json").read_text())
        assert set(fit["params"]) == {"E", "A", "B", "alpha", "beta"}
        manifest = json.loads((results / "MANIFEST.json").read_text())
        rules = {entry["rule"] for entry in manifest["files"]}
        assert {"corpus", "tokenizer", "shards", "train", "aggregate", "fit_laws", "notebook", "report"} <= rules
        assert "unknown" not in rules, [e["path"] for e in manifest["files"] if e["rule"] == "unknown"][:5]
        assert all(not entry["path"].startswith("/") for entry in manifest["files"])

    def test_no_job_log_carries_a_warning(self, done):
        """A warning in a log is a bug (numpy's are errors already); this one was the notebook
        kernel's plain-text TCP sockets, which notebook.py encrypts where pyzmq can."""
        import zmq

        logs = sorted((done / "results" / "logs").rglob("*.log"))
        assert len(logs) > 60
        warned = {
            str(log.relative_to(done)): line
            for log in logs
            for line in log.read_text().splitlines()
            if re.search(r"\bWARNING\b|\w*Warning: ", line) and (zmq.has("curve") or "without encryption" not in line)
        }
        assert not warned, warned

    def test_every_train_fit_and_notebook_job_left_a_benchmark(self, done):
        results = done / "results"
        runs = pd.read_csv(results / "aggregate" / "runs.csv")
        for stage, names in (("train", runs["run_id"]), ("fit", [p.stem for p in (results / "fits").glob("*.json")]),
                             ("notebook", [p.name for p in (results / "notebooks").iterdir()])):
            assert len(names) > 0
            for name in names:
                assert (results / "benchmarks" / stage / f"{name}.tsv").is_file(), f"{stage} {name}: no benchmark"
        costs = runs[["job_wall_s", "job_cpu_s", "job_max_rss_mb"]]
        assert costs.notna().all().all() and (costs > 0).all().all()
        # the job includes its training loop, and the loop's own clock agrees with Snakemake's to within start-up
        assert (runs["job_wall_s"] > runs["wall_time_s"]).all()
        assert (runs["job_wall_s"] - runs["wall_time_s"]).max() < 60

    def test_snakemake_report_lists_every_figure_of_report_html(self, done, tmp_path):
        archive = tmp_path / "report.zip"
        snakemake(done, "--profile", "profiles/tiny", "--report", str(archive))
        with zipfile.ZipFile(archive) as bundle:
            page = bundle.read("report/report.html").decode()
            entries, categories = (script_json(page, name) for name in ("results", "categories"))
            for path, entry in entries.items():
                assert bundle.read(f"report/{entry['data_uri']}") == (done / path).read_bytes()

        ours = (done / "results" / "report.html").read_text()
        in_report_html = {tuple(fig_id.split("-", 1)) for fig_id in re.findall(r"<figure id='([^']+)'", ours)}
        listed = {}
        for path, entry in entries.items():
            notebook, kind, file = Path(path).relative_to("results/notebooks").parts
            listed[(notebook, kind, Path(file).stem)] = entry
        figures = {(nb, name) for nb, kind, name in listed if kind == "figures"}
        assert len(figures) >= 20 and figures == in_report_html

        for (notebook, kind, name), entry in listed.items():
            index = json.loads((done / "results" / "notebooks" / notebook / f"{kind}.json").read_text())
            caption = next(item["caption"] for item in index if item["name"] == name)
            assert entry["labels"] == {"name": name, "caption": caption}
            assert "Shows" in entry["caption"] and "Driven by" in entry["caption"], (notebook, name)
            assert f"notebooks/{notebook}.ipynb" in entry["caption"]
            if kind == "figures":
                assert html.escape(caption, quote=True).split(";")[0] in ours
        tables = {(nb, name) for nb, kind, name in listed if kind == "tables"}
        assert tables == {(folder.name, item["name"]) for folder in (done / "results" / "notebooks").iterdir()
                          for item in json.loads((folder / "tables.json").read_text())}
        assert set(categories) == {TITLES[nb] for nb, _ in figures}
        assert "stdlib / k80" in categories[TITLES["when_to_prune"]]

    def test_second_run_has_nothing_to_do(self, done):
        assert dry_run_jobs(done, "--profile", "profiles/tiny") == collections.Counter()

    def test_fit_change_reruns_only_fits_notebooks_report(self, done, tmp_path):
        changed = copy_workflow_with_results(done, tmp_path)

        def dense_only_with_more_refits(config):
            assert config["fits"][0]["role"] == "dense_only"
            config["fits"][0].update(bootstrap=11)

        edit_yaml(changed / "config" / "tiny.yaml", dense_only_with_more_refits)
        jobs = dry_run_jobs(changed, "--profile", "profiles/tiny")
        assert jobs["fit_laws"] == 1
        assert set(jobs) <= {"fit_laws", "notebook", "report", "manifest", "all"}
        # only the notebooks that read the dense-only fit redraw (their metadata's fit_roles)
        assert jobs["notebook"] == len({"average_params_law", "against_papers", "planner"})

    def test_schedule_change_reruns_only_its_runs(self, done, tmp_path):
        changed = copy_workflow_with_results(done, tmp_path)
        edit_yaml(changed / "config" / "tiny.yaml", lambda c: c["schedules"]["uniform-tiny"].update(every=3))
        jobs = dry_run_jobs(changed, "--profile", "profiles/tiny")
        # that family's 2 sparsities x 3 scales x 2 budgets retrain; nothing upstream does
        assert jobs["train"] == 2 * 3 * 2
        assert not {"corpus", "tokenizer", "shards"} & set(jobs)

    def test_tokenizer_change_reruns_everything_downstream(self, done, tmp_path):
        changed = copy_workflow_with_results(done, tmp_path)
        edit_yaml(
            changed / "config" / "tiny.yaml",
            lambda c: c["corpora"]["stdlib"]["tokenizer"].update(vocab_size=384),
        )
        jobs = dry_run_jobs(changed, "--profile", "profiles/tiny")
        assert "corpus" not in jobs
        assert jobs["tokenizer"] == 1 and jobs["shards"] == 1
        stdlib_runs = len(list((done / "results" / "runs" / "stdlib").glob("*/*/*/seed*")))
        assert jobs["train"] == stdlib_runs  # every run on that corpus, none on the synthetic one


    def test_more_seeds_trains_the_runs_its_checkpoint_adds_and_aggregates_them(self, done, tmp_path):
        """more_seeds on the tiny when-to-prune group of two seeds, whose seed-1 25%->75% run is
        made 0.3 nats worse, far beyond any seed's own gap (a few hundredths here): its scatter
        then needs more seeds than the one candidate, so the
        checkpoint adds seed 2 of each of the group's 4 schedules; those are trained and
        aggregated, and no other run is."""
        changed = copy_workflow_with_results(done, tmp_path)
        edit_yaml(changed / "config" / "tiny.yaml",
                  lambda c: next(e for e in c["experiments"] if e["name"] == "tiny-second-seed").update(more_seeds=[2]))
        worse = changed / "results" / "runs" / "stdlib" / "t1" / "k40" / "global-tiny-s50-25to75" / "seed1" / "metrics.json"
        metrics = json.loads(worse.read_text())
        worse.write_text(json.dumps({**metrics, "final_val_loss": metrics["final_val_loss"] + 0.3}))
        jobs = dry_run_jobs(changed, "--profile", "profiles/tiny")
        assert jobs["more_seeds"] == 1 and jobs["train"] == 0  # the added runs are not known yet

        snakemake(changed, "--cores", "2", "--profile", "profiles/tiny", "results/aggregate/runs.csv")
        design = json.loads((changed / "results" / "design" / "more-seeds.json").read_text())
        [group] = design["groups"]
        assert (group["scale"], group["budget"], group["seeds"]) == ("t1", "k40", 2)
        assert group["seeds_needed"] > 3 and group["seeds_added"] == [2] and group["short_of_target"]
        added = {f"{r['corpus']}/{r['scale']}/{r['budget']}/{r['schedule']}/seed{r['seed']}" for r in design["runs"]}
        assert len(added) == 4 and all(run.endswith("/seed2") for run in added)
        runs = pd.read_csv(changed / "results" / "aggregate" / "runs.csv")
        assert set(runs["run_id"]) == set(pd.read_csv(done / "results" / "aggregate" / "runs.csv")["run_id"]) | added
        assert dry_run_jobs(changed, "--profile", "profiles/tiny", "results/aggregate/runs.csv") == collections.Counter()

    def test_verdicts_are_computed_from_the_aggregated_results(self, done, tmp_path):
        """Change the runs table, the fits and the data manifest: every analysis they feed follows."""
        results = done / "results"
        before = pd.read_csv(results / "notebooks" / "against_papers" / "tables" / "verdicts.csv")
        assert set(before["verdict"]) <= set(claims.VERDICTS), before  # never a bare "inconclusive"
        # the tiny synthetic fit refits 5 times: its E cannot contradict the default study's
        assert before["verdict"].iloc[3] == claims.UNDERPOWERED, before
        assert "bootstrap refits; a 95% percentile interval needs at least 40" in before["our result"].iloc[3]

        # paper A, when to prune: noiseless schedule groups (each run at its group's mean, seeds
        # offset alike) where every 25%-75% run is one nat worse; the tiny study's own seed scatter
        # differs between machines and may exceed the margin. Pruned groups of one seed have no
        # error estimate (underpowered): only those with several seeds stay.
        runs = pd.read_csv(results / "aggregate" / "runs.csv").fillna({"target_sparsity": 0.0})
        group = ["corpus", "budget", "scale", "target_sparsity"]
        several_seeds = runs.groupby(group)["seed"].transform("nunique") > 1
        runs = runs[several_seeds | (runs["target_sparsity"] == 0)].copy()
        runs["final_val_loss"] = runs.groupby(group)["final_val_loss"].transform("mean") + 0.01 * runs["seed"]
        runs.loc[runs["schedule"].str.endswith("-25to75"), "final_val_loss"] += 1.0
        runs.to_csv(tmp_path / "runs.csv", index=False)

        # paper A, unification: held-out predictions where the N-bar law is exact and the final-N law 0.5 off
        roles = {"dense-only": "dense_only", "average-params": "average_params", "final-params": "final_params",
                 "sparsity": "sparsity", "synthetic": "synthetic"}
        fits = {role: str(results / "fits" / f"{name}.json") for name, role in roles.items()}
        for role, error in (("average_params", 0.0), ("final_params", 0.5)):
            fit = json.loads(Path(fits[role]).read_text())
            fit["status"] = {"usable": True, "reasons": [], "at_bounds": []}
            for kind in ("leave_one_scale_out", "kfold"):
                for p in fit["heldout"][kind]["predictions"]:
                    p["predicted"] = p["observed"] + error
                held = fit["heldout"][kind]  # and 40 refits that agree (the tiny profile has 5)
                held["refits"]["predicted"] = [[p["predicted"] for p in held["predictions"]]] * 40
            fits[role] = str(tmp_path / f"{role}.json")
            Path(fits[role]).write_text(json.dumps(fit))

        # paper B: T5-like coefficients (sparsity pays more with more data), with tight refits
        fit = json.loads(Path(fits["sparsity"]).read_text())
        fit["params"] = {"a_S": 0.5, "b_S": 0.722, "c_S": 45.02, "b_N": 0.245, "a_D": 2e6, "b_D": 0.203, "c": 0.651}
        fit["bootstrap"]["samples"] = [fit["params"]] * 40  # enough refits for a 95% interval
        fit["status"] = {"usable": True, "reasons": [], "at_bounds": []}
        fits["sparsity"] = str(tmp_path / "sparsity.json")
        Path(fits["sparsity"]).write_text(json.dumps(fit))

        # the synthetic corpus: an entropy rate far from the fitted E
        fit = json.loads(Path(fits["synthetic"]).read_text())
        fit["status"] = {"usable": True, "reasons": [], "at_bounds": []}
        fit["bootstrap"] = {"n_boot": 40, "n_failed": 0}  # the tiny profile refits 5 times: too few to decide
        fits["synthetic"] = str(tmp_path / "synthetic.json")
        Path(fits["synthetic"]).write_text(json.dumps(fit))
        manifests = {c: results / "data" / c / "tokens" / "manifest.json" for c in ("stdlib", "synthetic")}
        synthetic = json.loads(manifests["synthetic"].read_text())
        synthetic["entropy_rate_nats"] = 10 * fit["params"]["E"]
        manifests["synthetic"] = tmp_path / "manifest.json"
        manifests["synthetic"].write_text(json.dumps(synthetic))

        out = tmp_path / "against_papers"
        subprocess.run(
            [sys.executable, "-m", "sparsescale", "notebook", "--template", str(done / "notebooks" / "against_papers.ipynb"),
             "--out-dir", str(out), "--no-html",
             "-p", "runs_csv", str(tmp_path / "runs.csv"),
             "-p", "steps_parquet", str(results / "aggregate" / "steps.parquet"),
             "-p", "fits", json.dumps(fits), "-p", "data_manifests", json.dumps({c: str(p) for c, p in manifests.items()})],
            check=True, capture_output=True, cwd=done,
        )
        decisions = pd.read_csv(out / "tables" / "analyses.csv").set_index("analysis")["decision"]
        assert decisions["seed-paired gap"] == "not reproduced" == decisions["seed bootstrap (best re-picked)"]
        assert decisions["leave one scale out"] == "reproduced" == decisions["k-fold"]
        assert decisions["fitted law"] == "reproduced" == decisions["bootstrap interval"]
        assert decisions["fitted E against H"] == "not reproduced"
        after = pd.read_csv(out / "tables" / "verdicts.csv").set_index("claim")["verdict"]
        assert after.iloc[0] == "not reproduced" and after.iloc[2] == "reproduced" and after.iloc[3] == "not reproduced"

    def test_results_move_to_another_place_without_retraining(self, done, tmp_path):
        """Repo + results copied elsewhere (mtimes kept, no .snakemake): only the report is redone."""
        moved = tmp_path / "elsewhere"
        shutil.copytree(done, moved, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
        text_outputs = [
            path
            for path in (moved / "results").rglob("*")
            if path.suffix in {".json", ".csv", ".md", ".html", ".ipynb", ".tex"} and "logs" not in path.parts
        ]
        assert text_outputs
        assert [p for p in text_outputs if str(done) in p.read_text(errors="replace")] == []
        (moved / "results" / "report.html").unlink()
        jobs = dry_run_jobs(moved, "--profile", "profiles/tiny")
        assert set(jobs) == {"report", "manifest", "all"}


def script_json(page: str, name: str):
    """The JSON Snakemake's report embeds as `<script id="NAME"> var NAME = {...};`."""
    start = page.index(f'<script id="{name}">')
    start = page.index(f"var {name} = ", start) + len(f"var {name} = ")
    return json.JSONDecoder().raw_decode(page, start)[0]


def copy_workflow_with_results(done: Path, dest: Path) -> Path:
    """A copy of a finished workspace (results and Snakemake's records), to edit freely."""
    shutil.copytree(done, dest / "ws", symlinks=True)
    return dest / "ws"


@pytest.mark.e2e
def test_hard_kill_unlock_and_rerun_resumes_bit_identically(tiny_study, repo_root, tmp_path):
    """The README's path after a hard kill: SIGKILL the whole workflow with its jobs while a
    run has a checkpoint, `snakemake --unlock`, the same command with --rerun-incomplete.
    The runs (the tiny study's longest, a subset to stay fast) equal the uninterrupted ones."""
    (tmp_path / "ws").mkdir()
    workspace = copy_workflow(repo_root, tmp_path / "ws")
    runs = sorted(p.relative_to(tiny_study) for p in (tiny_study / "results" / "runs" / "stdlib" / "t3" / "k80").glob("*/seed*"))
    assert len(runs) >= 4
    command = ("--cores", "2", "--profile", "profiles/tiny", *(str(run / "metrics.json") for run in runs))
    log = tmp_path / "killed.log"
    proc = start_snakemake(workspace, *command, log=log)
    deadline = time.monotonic() + 300
    while True:  # some runs done and one part-way, holding a checkpoint
        done = [run for run in runs if (workspace / run / "metrics.json").exists()]
        with_checkpoint = [run for run in runs if (workspace / run / "checkpoint.pt").exists()]
        if done and with_checkpoint:
            break
        assert proc.poll() is None, f"the workflow ended before the kill:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint within 300 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = [run for run in with_checkpoint if not (workspace / run / "metrics.json").exists()]
    assert interrupted, "every run holding a checkpoint finished before the kill landed"

    again = snakemake(workspace, *command, check=False)
    assert again.returncode != 0 and "--unlock" in again.stdout + again.stderr  # Snakemake's stale lock
    snakemake(workspace, "--unlock")
    snakemake(workspace, *command, "--rerun-incomplete")

    for run in runs:
        got = json.loads((workspace / run / "metrics.json").read_text())
        ref = json.loads((tiny_study / run / "metrics.json").read_text())
        assert (got["final_val_loss"], got["final_train_loss"]) == (ref["final_val_loss"], ref["final_train_loss"]), run
        pd.testing.assert_frame_equal(
            pd.read_parquet(workspace / run / "steps.parquet"), pd.read_parquet(tiny_study / run / "steps.parquet"), check_exact=True
        )
        assert not (workspace / run / "checkpoint.pt").exists()
    for run in interrupted:
        resumed = json.loads((workspace / run / "metrics.json").read_text())["provenance"]["resumed_from_step"]
        assert resumed is not None and resumed > 0, run
