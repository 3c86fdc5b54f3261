"""``sparsescale plan``: each answer against values computed by hand from known coefficients,
the exact accounting of schedules, intervals, cost, bad input, and (e2e) emitted runs trained
through Snakemake on the tiny study's fits.

Every planning call runs with numpy floating-point warnings as errors (``strict``), so an
overflow or an invalid operation anywhere in the planner fails the test."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sparsescale import plan, results
from sparsescale.config import load_config, run_spec, runs
from sparsescale.io import InputError
from sparsescale.model import ModelConfig, count_params

REPO = Path(__file__).resolve().parents[1]
CHIN = {"E": 1.5, "A": 300.0, "B": 500.0, "alpha": 0.3, "beta": 0.35}
SPARSE = {"a_S": 2.0, "b_S": 0.8, "c_S": 1.5, "b_N": 0.3, "a_D": 4e6, "b_D": 0.45, "c": 1.6}
COST = plan.Cost("H100", 989e12, 0.5, "given")


@pytest.fixture(autouse=True)
def strict(request):
    """numpy floating-point problems raise, and any warning fails the test (a test that also
    trains, marked ``trains``, wraps only its planning calls)."""
    if request.node.get_closest_marker("trains"):
        yield
        return
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def write_fit(tmp_path: Path, law: str, params: dict, samples: list[dict] | None = None,
              data_range: dict | None = None, n_col: str | None = None, name: str = "fit.json") -> str:
    doc = {"law": law, "params": params, "columns": {"N": n_col} if n_col else {},
           "bootstrap": {"samples": samples, "level": 0.9} if samples else None}
    if data_range:
        doc["data_range"] = data_range
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def chin_loss(p, n, d):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def sparse_loss(p, s, n, d):
    """Paper B's law written out (N in millions, as the fit JSON's units say)."""
    return (p["a_S"] * (1 - s) ** p["b_S"] + p["c_S"]) * (1e6 / n) ** p["b_N"] + (p["a_D"] / d) ** p["b_D"] + p["c"]


# ----------------------------------------------------------------------------- dense allocation


def test_dense_allocation_is_the_closed_form_and_the_brute_force_optimum(tmp_path):
    fit = plan.load_fit(write_fit(tmp_path, "chinchilla", CHIN))
    compute = np.array([1e15, 3e17, 1e20])
    rows = plan.dense_allocation(fit, compute, COST)
    a, b = CHIN["alpha"], CHIN["beta"]
    g = (a * CHIN["A"] / (b * CHIN["B"])) ** (1 / (a + b))
    n_hand = g * (compute / 6) ** (b / (a + b))
    np.testing.assert_allclose(rows["n_opt"], n_hand, rtol=1e-12)
    np.testing.assert_allclose(rows["d_opt"], compute / (6 * n_hand), rtol=1e-12)
    np.testing.assert_allclose(rows["tokens_per_param"], compute / (6 * n_hand ** 2), rtol=1e-12)
    np.testing.assert_allclose(rows["loss"], chin_loss(CHIN, n_hand, compute / (6 * n_hand)), rtol=1e-12)
    for c, n_opt, loss in zip(compute, rows["n_opt"], rows["loss"]):  # nothing on C = 6 N D does better
        grid = np.geomspace(n_opt / 30, n_opt * 30, 200001)
        brute = chin_loss(CHIN, grid, c / (6 * grid))
        assert brute.min() >= loss - 1e-12
        assert abs(math.log(grid[np.argmin(brute)] / n_opt)) < 1e-4
    np.testing.assert_allclose(rows["device_hours"], compute / (989e12 * 0.5) / 3600)


def test_tokens_for_a_target_loss(tmp_path):
    fit = plan.load_fit(write_fit(tmp_path, "chinchilla", CHIN))
    rows = plan.tokens_for_loss(fit, [1e6, 1e8], [6.6, 7.2], COST)
    assert len(rows) == 4
    np.testing.assert_allclose(chin_loss(CHIN, rows["n"], rows["tokens"]), rows["target_loss"], rtol=1e-12)
    np.testing.assert_allclose(rows["compute_flops"], 6 * rows["n"] * rows["tokens"])
    with pytest.raises(InputError, match=r"--target-loss 1.6 is not reachable at --n 1e\+06"):
        plan.tokens_for_loss(fit, [1e6], [1.6], COST)


# ----------------------------------------------------------------------------- optimal sparsity


def test_optimal_sparsity_against_brute_force(tmp_path):
    fit = plan.load_fit(write_fit(tmp_path, "sparsity", SPARSE))
    n_values, compute = [2e5, 3e6], [1e13, 1e15, 1e17]
    rows = plan.sparsity_plan(fit, n_values, compute, COST, s_max=0.99)
    assert len(rows) == 6
    s_fine = np.linspace(0, 0.99, 99001)
    step = 0.99 / 990  # the planner's search resolution
    for r in rows.itertuples():
        d = r.compute_flops * (1 - s_fine) / (6 * r.n_nonzero)  # C = 6 (N / (1 - S)) D
        brute = sparse_loss(SPARSE, s_fine, r.n_nonzero, d)
        s_best = s_fine[np.argmin(brute)]
        assert abs(r.s_opt - s_best) <= step
        assert brute.min() <= r.loss <= brute.min() + 1e-4
        assert r.tokens == pytest.approx(r.compute_flops * (1 - r.s_opt) / (6 * r.n_nonzero), rel=1e-12)
        dense = sparse_loss(SPARSE, 0.0, r.n_nonzero, r.compute_flops / (6 * r.n_nonzero))
        assert r.dense_loss == pytest.approx(dense, rel=1e-12)
        assert r.gain_vs_dense == pytest.approx(dense - r.loss, rel=1e-9, abs=1e-12)
        ratio = (SPARSE["a_S"] * (1 - r.s_opt) ** SPARSE["b_S"] + SPARSE["c_S"]) / (SPARSE["a_S"] + SPARSE["c_S"])
        assert r.multiplier == pytest.approx(ratio ** (-1 / SPARSE["b_N"]), rel=1e-12)
    assert rows["s_opt"].nunique() > 1  # the grid is not degenerate: S_opt moves with N and C


# ----------------------------------------------------------------------------- schedules


def study_with(schedules: dict, model: dict, budget: dict, training: dict | None = None) -> dict:
    frag = plan.fragment({"m": model}, {"b": budget}, schedules,
                         [{"name": "plan", "corpus": "stdlib", "scales": ["m"], "budgets": ["b"],
                           "schedules": list(schedules)}])
    if training:
        frag["training"] = training
    return load_config(REPO / "config" / "config.yaml", frag)


def test_nbar_of_a_geometric_schedule_is_the_continuous_formula():
    """Steps basis, an event every step over 20%-80% of training to density d: N-bar / N is
    0.2 + 0.6 (1 - d) / ln(1/d) + 0.2 d (the continuous geometric mean density on the window)."""
    final_density = 0.25
    study = study_with({"geo": {"method": "global", "shape": "geometric", "basis": "steps", "final_sparsity": 0.75,
                                "start": 0.2, "end": 0.8, "every": 1}},
                       {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 96}, {"tokens": 4000 * 16 * 128})
    row = plan.account_study(study, {"stdlib": 512}).iloc[0]
    assert row["steps"] == 4000 and row["events"] == 2401  # steps 800, 801, ..., 3200
    window = (1 - final_density) / math.log(1 / final_density)
    expected = 0.2 + 0.6 * window + 0.2 * final_density
    assert row["n_avg"] / row["n_prunable"] == pytest.approx(expected, rel=2e-3)
    assert row["n_final"] == row["n_prunable"] - round(0.75 * row["n_prunable"])
    assert row["compute_flops"] == pytest.approx(6 * row["n_avg"] * row["tokens"], rel=1e-12)


def test_schedule_ranking_uses_the_nbar_law_and_dense_alternatives(tmp_path):
    samples = [{**CHIN, "A": CHIN["A"] * f} for f in (0.8, 0.9, 1.0, 1.1, 1.2)]  # loss rises with A
    fit = plan.load_fit(write_fit(tmp_path, "average-params", CHIN, samples=samples,
                                  data_range={"N": [1e4, 1e5], "D": [1e5, 1e7]}))
    study = study_with({"dense": {"method": "dense"},
                        "g": {"method": "global", "final_sparsity": 0.5, "start": [0.0, 0.5], "end": 1.0, "every": 2}},
                       {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 96}, {"tokens_per_param": 4})
    accounted = plan.account_study(study, {"stdlib": 512})
    ranked = plan.schedule_plan(fit, accounted, COST)
    assert list(ranked["rank"]) == [1, 2, 3]
    assert list(ranked["schedule"]) == ["dense", "g-s50-50to100", "g-s50-0to100"]  # larger N-bar, lower loss
    np.testing.assert_allclose(ranked["loss"], chin_loss(CHIN, ranked["n_avg"], ranked["tokens"]), rtol=1e-12)
    size = chin_loss(CHIN, ranked["n_final"], ranked["tokens"])
    np.testing.assert_allclose(ranked["gain_vs_equal_size"], size - ranked["loss"], rtol=1e-9, atol=1e-12)
    opt = plan.dense_allocation(fit, ranked["compute_flops"], COST)
    np.testing.assert_allclose(ranked["dense_equal_compute_loss"], opt["loss"], rtol=1e-12)
    assert ((ranked["loss_lo"] <= ranked["loss"]) & (ranked["loss"] <= ranked["loss_hi"])).all()
    assert ranked["p_best"].tolist() == [1.0, 0.0, 0.0] and ranked["extrapolation"].eq("").all()
    chinchilla_final = plan.load_fit(write_fit(tmp_path, "chinchilla", CHIN, n_col="n_final", name="final.json"))
    with pytest.raises(InputError, match="needs a law in N-bar"):
        plan.schedule_plan(chinchilla_final, accounted, COST)


@pytest.mark.trains
def test_account_run_is_what_the_trainer_does(tmp_path):
    """Tiny runs trained for real: planned N-bar, final N, tokens and compute are the logged ones."""
    from test_train import write_shards

    from sparsescale.train import run_training

    data = write_shards(tmp_path / "tokens")
    study = study_with({"g": {"method": "global", "final_sparsity": 0.6, "start": 0.25, "end": 0.75, "every": 3},
                        "u": {"method": "uniform", "shape": "cubic", "basis": "steps", "final_sparsity": 0.5,
                              "start": 0.2, "end": 0.9, "every": 2, "embedding_sparsity": "sqrt"}},
                       {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 48}, {"tokens": 30 * 4 * 16},
                       training={"seq_len": 16, "batch_size": 4, "eval_every": 100, "eval_windows": 2})
    for run in runs(study):
        spec = run_spec(study, run)
        with np.errstate(all="raise"):
            planned = plan.account_run(spec, 64)
        metrics = run_training(spec, data, tmp_path / run.schedule)
        assert planned["steps"] == 30 and planned["events"] > 3
        for key in ("n_final", "tokens", "n_prunable"):
            assert planned[key] == metrics[key], key
        assert planned["n_avg"] == pytest.approx(metrics["n_avg"], rel=1e-12)
        assert planned["compute_flops"] == pytest.approx(metrics["compute"], rel=1e-12)


# ----------------------------------------------------------------------------- uncertainty, range, cost


def test_intervals_and_refits_that_overflow(tmp_path):
    samples = [dict(CHIN, A=CHIN["A"] * f) for f in np.linspace(0.8, 1.2, 9)]
    samples.append(dict(CHIN, alpha=1e-3, beta=1e-3, A=1e250))  # N_opt leaves the float range
    samples.append(dict(CHIN, A=None))  # a failed refit stored as null
    fit = plan.load_fit(write_fit(tmp_path, "chinchilla", CHIN, samples=samples))
    assert len(fit.samples) == 10 and fit.invalid_samples == 1
    rows = plan.dense_allocation(fit, [1e18], COST)
    assert fit.failed["compute-optimal allocation"] == 1
    n_draws = [plan.dense_allocation(plan.load_fit(write_fit(tmp_path, "chinchilla", s, name="one.json")), [1e18], COST)
               ["n_opt"].iloc[0] for s in samples[:9]]
    lo, hi = np.quantile(n_draws, [0.05, 0.95])
    assert rows["n_opt_lo"].iloc[0] == pytest.approx(lo) and rows["n_opt_hi"].iloc[0] == pytest.approx(hi)
    assert lo < rows["n_opt"].iloc[0] < hi


def test_range_flags(tmp_path):
    fit = plan.load_fit(write_fit(tmp_path, "sparsity", SPARSE, data_range={"N": [1e5, 1e6], "D": [1e6, 1e7],
                                                                              "S": [0.0, 0.75]}))
    flags = plan.range_flags(fit, N=[5e5, 2e7, 5e4], D=[2e6, 2e6, 2e8], S=[0.5, 0.9, 0.1])
    assert flags[0] == "" and flags[1] == "N 20x above; S 0.90 above fitted [0.00, 0.75]"
    assert flags[2] == "N 2x below; D 20x above"
    bare = plan.load_fit(write_fit(tmp_path, "sparsity", SPARSE, name="bare.json"))
    assert set(plan.range_flags(bare, N=[1.0, 2.0])) == {"fitted range unknown"}


def test_cost_from_the_hardware_table_and_measured_runs():
    runs_table = pd.DataFrame({"device": ["cuda:NVIDIA H100 80GB HBM3", "cuda:NVIDIA H100 80GB HBM3",
                                          "cuda:NVIDIA A100-SXM4-80GB", "cpu"], "mfu": [0.3, 0.5, 0.9, None]})
    cost = plan.make_cost("h100", runs=runs_table)
    assert (cost.peak_flops, cost.mfu) == (989e12, 0.4) and "2 measured runs" in cost.mfu_source
    assert plan.make_cost("A100", mfu=0.25).hours(312e12 * 0.25 * 3600) == pytest.approx(1.0)
    assert plan.make_cost("L4").mfu == plan.DEFAULT_MFU
    assert plan.make_cost("my-chip", peak_flops=1e15).peak_flops == 1e15
    with pytest.raises(InputError, match="--device 'TPU': not in the hardware table"):
        plan.make_cost("TPU")
    with pytest.raises(InputError, match="--mfu"):
        plan.make_cost("H100", mfu=1.5)


# ----------------------------------------------------------------------------- published sets


@pytest.mark.parametrize("name", ["hoffmann2022", "besiroglu2024"])
def test_published_sets_state_source_units_and_range(name):
    doc = json.loads((plan.PUBLISHED_DIR / f"{name}.json").read_text())
    assert doc["source"] and doc["units"]["N"].startswith("parameters") and doc["units"]["D"].startswith("training tokens")
    fit = plan.load_fit(f"published:{name}")
    assert fit.law == "chinchilla" and fit.data_range["N"] == [7.0e7, 1.6e10]


def test_published_units_give_the_known_allocations():
    """Raw parameters and tokens: at Chinchilla's budget (70B params x 1.4T tokens) the re-fit
    recommends about 20 tokens per parameter (as Chinchilla was trained); the printed rounded
    approach-3 values give about 90 (the discrepancy Besiroglu et al. report)."""
    budget = 6 * 70e9 * 1.4e12
    refit = plan.dense_allocation(plan.load_fit("published:besiroglu2024"), [budget], COST).iloc[0]
    printed = plan.dense_allocation(plan.load_fit("published:hoffmann2022"), [budget], COST).iloc[0]
    assert 15 < refit["tokens_per_param"] < 25 and 5e10 < refit["n_opt"] < 1e11
    assert 80 < printed["tokens_per_param"] < 110
    assert "N" in refit["extrapolation"]  # 70B is beyond the 16B largest run


def test_frantar2023_s_opt_matches_a_brute_force_grid_in_the_papers_units():
    """published:frantar2023 is paper B's T5/C4 law: its optimal sparsity at one (N, C) equals
    a brute-force search over S of the published formula in the published units (N raw
    non-zero parameters, D in steps), and it rises with compute as paper B reports."""
    doc = json.loads((plan.PUBLISHED_DIR / "frantar2023.json").read_text())
    pub, tokens_per_step = doc["published_params"], doc["tokens_per_step"]
    n, compute = 1e8, 1e21

    def published_loss(s, steps):
        return ((pub["a_S"] * (1 - s) ** pub["b_S"] + pub["c_S"]) * (1 / n) ** pub["b_N"]
                + (pub["a_D"] / steps) ** pub["b_D"] + pub["c"])

    grid = np.linspace(0.0, 0.99, 99001)
    steps = compute * (1 - grid) / (6 * n) / tokens_per_step  # training charged as the dense shape
    losses = published_loss(grid, steps)
    best = int(np.argmin(losses))
    row = plan.sparsity_plan(plan.load_fit("published:frantar2023"), [n], [compute], COST).iloc[0]
    assert row["s_opt"] == pytest.approx(grid[best], abs=0.002)
    assert row["loss"] == pytest.approx(losses[best], rel=1e-6)
    rising = plan.sparsity_plan(plan.load_fit("published:frantar2023"), [n], [1e19, 1e20, 1e22], COST)["s_opt"]
    assert rising.is_monotonic_increasing and rising.iloc[-1] - rising.iloc[0] > 0.3


# ----------------------------------------------------------------------------- bad input


def test_bad_fits_name_the_argument(tmp_path):
    sparse = write_fit(tmp_path, "sparsity", SPARSE)
    with pytest.raises(InputError, match=r"--fit .*fit.json: a sparsity law fit; the dense allocation needs"):
        plan.dense_allocation(plan.load_fit(sparse), [1e18], COST)
    chin = write_fit(tmp_path, "chinchilla", CHIN, name="chin.json")
    with pytest.raises(InputError, match="the optimal sparsity needs a sparsity law fit"):
        plan.sparsity_plan(plan.load_fit(chin), [1e6], [1e15], COST)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="--fit .*bad.json: not valid JSON"):
        plan.load_fit(str(tmp_path / "bad.json"))
    (tmp_path / "other.json").write_text(json.dumps({"law": "kaplan", "params": {}}))
    with pytest.raises(InputError, match="'law' is 'kaplan'"):
        plan.load_fit(str(tmp_path / "other.json"))
    (tmp_path / "short.json").write_text(json.dumps({"law": "chinchilla", "params": {"E": 1.0}}))
    with pytest.raises(InputError, match="missing A, B, alpha, beta"):
        plan.load_fit(str(tmp_path / "short.json"))
    with pytest.raises(InputError, match="no published coefficient set 'nope'"):
        plan.load_fit("published:nope")
    with pytest.raises(InputError, match="--compute: every value must be a positive number"):
        plan.dense_allocation(plan.load_fit(chin), [0.0], COST)


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparsescale", "plan", *args], cwd=cwd, capture_output=True, text=True)


TINY = ["--config", "config/config.yaml", "config/tiny.yaml", "--vocab-size", "512", "--results", "/nonexistent"]


@pytest.mark.parametrize("args,expected", [
    (["--tokens", "100", "--schedule", "g={method: global, start: 0.25, end: 0.75}"],
     "--tokens 100: 100 tokens is below one optimizer step of 512 tokens"),
    (["--tokens-per-param", "0.001", "--schedule", "g={method: global, start: 0.25, end: 0.75}"],
     "--tokens-per-param 0.001: "),
    (["--tokens", "20480", "--schedule", "g={method: global, start: [0.25"], "--schedule 'g={method: global, start: [0.25': does not parse"),
    (["--tokens", "20480", "--schedule", "g={method: global, start: 0.9, end: 0.5}"], "--schedule 'g={method: global, start: 0.9, end: 0.5}': schedules/g: start (0.9) must be before end"),
    (["--tokens", "20480", "--schedule", "g={method: global, start: 0.25, end: 0.75, shape: linear}"], "config key 'schedules/g/shape'"),
    (["--tokens", "20480", "--schedule", "g={method: global, end: 0.5}"], "needs 'start'"),
    (["--tokens", "20480", "--schedule", "nosuchfamily"], "--schedule 'nosuchfamily': not a schedule family"),
    (["--tokens", "20480", "--schedule", "global-tiny={method: global, start: 0.1, end: 0.2}"], "already has a different family"),
])
def test_schedule_cli_bad_input(tmp_path, args, expected):
    fit = write_fit(tmp_path, "average-params", CHIN)
    result = cli("schedule", "--fit", fit, "--scale", "t1", "--final-sparsity", "0.5", *TINY, *args)
    assert result.returncode == 2 and expected in result.stderr, result.stderr


def test_cli_json_and_wrong_law(tmp_path):
    fit = write_fit(tmp_path, "sparsity", SPARSE)
    result = cli("dense", "--fit", fit, "--compute", "1e18")
    assert result.returncode == 2 and f"--fit {fit}: a sparsity law fit" in result.stderr
    result = cli("sparsity", "--fit", fit, "--n", "1e6", "--compute", "1e15", "1e16", "--json", "--mfu", "0.5")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["question"] == "sparsity" and len(doc["rows"]) == 2 and doc["cost"]["mfu"] == 0.5
    assert {"s_opt", "tokens", "loss", "gain_vs_dense", "multiplier", "device_hours", "extrapolation"} <= set(doc["rows"][0])


def test_emitted_fragment_is_the_planned_study(tmp_path):
    """The fragment merges over the base configs into a valid study whose runs are the planned ones."""
    fit = write_fit(tmp_path, "average-params", CHIN)
    out = tmp_path / "plan.yaml"
    result = cli("schedule", "--fit", fit, "--model", "d_model=24,n_layers=1,n_heads=2,d_ff=64", "--tokens", "20480",
                 "--final-sparsity", "0.5", "--schedule", "late={method: global, start: 0.5, end: 1.0, every: 2}",
                 *TINY, "--emit-config", str(out), "--json", str(tmp_path / "plan.json"))
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "plan.json").read_text())
    study = load_config(REPO / "config/config.yaml", REPO / "config/tiny.yaml", out)
    planned = {r.run_id for r in runs(study)}
    assert planned == {r["run_id"] for r in doc["rows"]} == {r["run_id"] for r in doc["emitted"]["runs"]}
    assert planned == {"stdlib/t2/plan-20480tok/dense/seed0", "stdlib/t2/plan-20480tok/late-s50-50to100/seed0"}
    assert "--omit-from aggregate" in doc["emitted"]["train_command"]
    assert yaml.safe_load(out.read_text())["experiments"][0]["schedules"] == ["dense", "late"]


def test_final_sparsity_selects_within_a_family_that_lists_several(tmp_path):
    """The default config's `global` family lists 50% and 80%: --final-sparsity 0.8 plans only
    its 80% windows (their config ids, so the runs are the study's own), and a sparsity it does
    not list is refused by name."""
    fit = write_fit(tmp_path, "average-params", CHIN)
    out = tmp_path / "plan.yaml"
    base = ["schedule", "--fit", fit, "--config", "config/config.yaml", "--vocab-size", "300", "--results",
            "/nonexistent", "--scale", "s2", "--budget", "tpp20", "--schedule", "global", "--no-dense"]
    result = cli(*base, "--final-sparsity", "0.8", "--emit-config", str(out), "--json", str(tmp_path / "plan.json"))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "plan.json").read_text())["rows"]
    assert len(rows) == 10 and {r["target_sparsity"] for r in rows} == {0.8}
    windows = [(0, 25), (0, 50), (0, 75), (0, 100), (25, 50), (25, 75), (25, 100), (50, 75), (50, 100), (75, 100)]
    assert {r["schedule"] for r in rows} == {f"global-s80-{a}to{b}" for a, b in windows}
    assert sorted(yaml.safe_load(out.read_text())["experiments"][0]["schedules"]) == sorted(r["schedule"] for r in rows)
    assert {r.run_id for r in runs(load_config(REPO / "config/config.yaml", out)) if r.scale == "s2"
            and r.schedule.startswith("global-s80")} >= {r["run_id"] for r in rows}
    result = cli(*base, "--final-sparsity", "0.7")
    assert result.returncode == 2 and "--final-sparsity 0.7: schedule 'global' lists final sparsities 0.5, 0.8" in result.stderr


def test_emit_dense_and_sparsity_choose_config_rungs(tmp_path):
    chin = write_fit(tmp_path, "chinchilla", CHIN, name="chin.json")
    out = tmp_path / "dense.yaml"
    result = cli("dense", "--fit", chin, "--compute", "3e11", *TINY, "--emit-config", str(out), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (run,) = doc["emitted"]["runs"]
    n_opt = doc["rows"][0]["n_opt"]
    study = load_config(REPO / "config/config.yaml", REPO / "config/tiny.yaml", out)
    assert [r.run_id for r in runs(study)] == [run["run_id"]]
    assert run["tokens"] == pytest.approx(3e11 / (6 * run["n_prunable"]), rel=0.05)  # C = 6 N D, whole steps
    sizes = [count_params(ModelConfig(vocab_size=512, **shape))["n_prunable"] for shape in study["models"].values()]
    assert min(abs(math.log(c / n_opt)) for c in sizes) == pytest.approx(abs(math.log(run["n_prunable"] / n_opt)))
    sparse = write_fit(tmp_path, "sparsity", SPARSE)
    out = tmp_path / "sparse.yaml"
    result = cli("sparsity", "--fit", sparse, "--n", "1e4", "--compute", "5e10", *TINY, "--emit-config", str(out), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    s_opt = doc["rows"][0]["s_opt"]
    emitted = {r["schedule"]: r for r in doc["emitted"]["runs"]}
    assert "dense" in emitted and (s_opt == 0 or any(k.startswith("plan-sparse") for k in emitted))
    for r in emitted.values():
        if r["schedule"] != "dense":
            assert r["target_sparsity"] == pytest.approx(round(s_opt, 2))


# ----------------------------------------------------------------------------- end to end


@pytest.mark.e2e
@pytest.mark.trains
def test_emitted_runs_train_through_snakemake(tiny_study, tmp_path, record_property):
    """`plan schedule --emit-config` on the tiny study's fits; the printed command trains the
    emitted runs through Snakemake; `plan check` compares prediction and outcome. Asserts the
    pipeline and the exact accounting, not the quality of the prediction (reported instead)."""
    import shlex
    import shutil

    from workflow_utils import snakemake

    ws = tmp_path / "ws"
    shutil.copytree(tiny_study, ws, symlinks=True)
    untouched = ws / "results" / "aggregate" / "runs.csv"
    before = untouched.stat().st_mtime_ns
    result = cli("schedule", "--fit", "results/fits/average-params.json", "--config", "config/config.yaml",
                 "config/tiny.yaml", "--scale", "t1", "--tokens", "20480", "--final-sparsity", "0.5",
                 "--schedule", "late={method: global, start: 0.5, end: 1.0, every: 2}",
                 "--emit-config", "plan.yaml", "--json", "plan.json", cwd=ws)
    assert result.returncode == 0, result.stderr
    emitted = json.loads((ws / "plan.json").read_text())["emitted"]
    train = shlex.split(emitted["train_command"])
    assert train[:3] == ["snakemake", "--cores", "all"]
    snakemake(ws, "--cores", "2", *train[3:])
    check = shlex.split(emitted["check_command"])
    assert check[:3] == ["sparsescale", "plan", "check"]
    result = cli(*check[2:], "--json", "check.json", cwd=ws)
    assert result.returncode == 0, result.stderr
    rows = pd.DataFrame(json.loads((ws / "check.json").read_text())["rows"])
    assert sorted(rows["run_id"]) == ["stdlib/t1/plan-20480tok/dense/seed0", "stdlib/t1/plan-20480tok/late-s50-50to100/seed0"]
    np.testing.assert_allclose(rows["n_avg"], rows["observed_n_avg"], rtol=1e-12)  # planned N-bar is the trained one
    assert (rows["tokens"] == rows["observed_tokens"]).all()
    assert np.isfinite(rows[["loss", "observed_loss", "error"]].to_numpy(float)).all()
    assert untouched.stat().st_mtime_ns == before  # the study's own aggregate is not redone
    report = rows[["run_id", "loss", "loss_lo", "loss_hi", "observed_loss", "error"]].to_string(index=False)
    record_property("plan_predicted_vs_observed", report)
    print(f"\npredicted vs observed final loss (tiny study's average-params fit):\n{report}")


# ----------------------------------------------------------------------------- schedule advice, checked


def _trained_grid(tmp_path: Path, trained: dict, predicted: dict) -> tuple[str, str]:
    """A runs table of the tiny config's global-tiny grid at t1/k40 (4 seeds, losses ``trained``
    by window plus a per-seed offset) and an average-params fit whose leave-one-window-out
    predictions are ``predicted`` by window."""
    study = load_config(REPO / "config" / "config.yaml", REPO / "config" / "tiny.yaml")
    accounted = plan.account_study(study, {"stdlib": 512}, experiments=["tiny"])
    grid = accounted[(accounted["scale"] == "t1") & (accounted["budget"] == "k40")
                     & accounted["schedule"].str.startswith("global-tiny")]
    rows = []
    for seed in range(4):
        for r in grid.itertuples():
            window = (r.start, r.end)
            rows.append({"run_id": r.run_id.replace("seed0", f"seed{seed}"), "corpus": "stdlib", "scale": "t1",
                         "budget": "k40", "schedule": r.schedule, "seed": seed, "method": "global", "shape": "geometric",
                         "start": r.start, "end": r.end, "target_sparsity": 0.5, "steps": r.steps,
                         "end_step": r.end_step, "tokens": r.tokens, "n_prunable": r.n_prunable,
                         "final_val_loss": trained[window] + 0.01 * seed})
    runs = pd.DataFrame(rows)
    runs_path = tmp_path / "runs.csv"
    runs.to_csv(runs_path, index=False)
    lowo = [{"run_id": r.run_id, "observed": r.final_val_loss, "predicted": predicted[(r.start, r.end)]}
            for r in runs[runs["seed"] == 0].itertuples()]
    fit = {"law": "average-params", "params": CHIN, "columns": {"N": "n_avg"},
           "heldout": {"leave_one_window_out": {"predictions": lowo}}}
    fit_path = tmp_path / "fit.json"
    fit_path.write_text(json.dumps(fit))
    return str(runs_path), str(fit_path)


TRAINED = {(0.25, 0.5): 3.00, (0.25, 0.75): 3.10, (0.5, 0.75): 3.05, (0.5, 1.0): 3.30}


def test_a_law_whose_held_out_picks_hold_ranks_without_a_warning(tmp_path):
    runs, fit = _trained_grid(tmp_path, TRAINED, TRAINED)
    check = plan.ranking_check([plan.load_fit(fit)], results.load_runs(runs), 0.005)[fit]
    assert check["checked"] and check["decision"] == "reproduced" and check["worst_regret"] == 0
    result = cli("schedule", "--fit", fit, "--scale", "t1", "--budget", "k40", "--schedule", "global-tiny",
                 "--no-dense", "--runs", runs, *TINY)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stdout and f"ranking law: {fit}" in result.stdout
    assert "passed: held-out pick within the margin in 1/1 groups" in result.stdout


def test_a_check_at_one_scale_is_not_advice_at_another(tmp_path):
    """The law passed at t1; asked at t2, the planner says its ranking is unchecked there."""
    runs, fit = _trained_grid(tmp_path, TRAINED, TRAINED)
    result = cli("schedule", "--fit", fit, "--scale", "t2", "--budget", "k40", "--schedule", "global-tiny",
                 "--no-dense", "--runs", runs, "--json", *TINY)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert "WARNING: the held-out check of the ranking law covers t1 k40, not t2 k40" in doc["title"]
    rows = pd.DataFrame(doc["rows"])
    assert rows["advice"].str.startswith("unchecked at t2 k40: its held-out check covers t1 k40 only (passed there)").all()
    assert any("train the top candidates at t2" in note for note in doc["notes"])


def test_a_law_whose_held_out_picks_fail_is_never_shown_as_advice(tmp_path):
    """The law prefers the window ending at 100% (as the N-bar law does); trained, it is the
    worst: the planner says so and ranks the trained schedules by their trained loss."""
    wrong = {(0.25, 0.5): 3.3, (0.25, 0.75): 3.2, (0.5, 0.75): 3.1, (0.5, 1.0): 3.0}
    runs, fit = _trained_grid(tmp_path, TRAINED, wrong)
    check = plan.ranking_check([plan.load_fit(fit)], results.load_runs(runs), 0.005)[fit]
    assert check["decision"] == "not reproduced" and check["worst_regret"] == pytest.approx(0.30)
    result = cli("schedule", "--fit", fit, "--scale", "t1", "--budget", "k40", "--schedule", "global-tiny",
                 "--no-dense", "--runs", runs, "--json", *TINY)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert "WARNING: no fit's schedule ranking passed the held-out check" in doc["title"]
    rows = pd.DataFrame(doc["rows"])
    assert list(rows["ranked_by"].unique()) == ["trained loss"]
    assert list(zip(rows["start"], rows["end"])) == sorted(TRAINED, key=TRAINED.get)
    assert rows["advice"].str.startswith("failed: held-out pick within the margin in 0/1 groups").all()
    assert (rows["recovery_share"] < 1).all() and rows.loc[rows["end"] == 1.0, "recovery_share"].iloc[0] < 0.05


def test_an_order_trained_at_another_scale_ranks_with_a_warning(tmp_path):
    """No law passed at t2; the same windows at the same tokens per prunable parameter were
    trained at t1: the planner ranks by that order, names it, and warns it is unchecked at t2."""
    wrong = {(0.25, 0.5): 3.3, (0.25, 0.75): 3.2, (0.5, 0.75): 3.1, (0.5, 1.0): 3.0}
    runs, fit = _trained_grid(tmp_path, TRAINED, wrong)
    t1 = results.load_runs(runs)
    per_param = float((t1["tokens"] / t1["n_prunable"]).iloc[0])
    result = cli("schedule", "--fit", fit, "--scale", "t2", "--tokens-per-param", str(per_param), "--schedule",
                 "global-tiny", "--no-dense", "--runs", runs, "--json", *TINY)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert "schedules trained at t1 k40 are ranked by their trained loss there" in doc["title"]
    assert "unchecked at t2" in doc["title"]
    rows = pd.DataFrame(doc["rows"])
    assert rows["ranked_by"].str.startswith("trained loss at t1 k40 (transferred: unchecked at t2").all()
    assert list(zip(rows["start"], rows["end"])) == sorted(TRAINED, key=TRAINED.get)  # not the law's order
    np.testing.assert_allclose(rows["reference_loss"], [TRAINED[(a, b)] + 0.015 for a, b in zip(rows["start"], rows["end"])])
    assert rows["trained_loss"].isna().all()


def _runs_at(scale: str, n: int, tokens: int, losses: dict, budget: str = "b") -> list[dict]:
    return [{"run_id": f"c/{scale}/{budget}/{name}/seed{seed}", "corpus": "c", "scale": scale, "budget": budget,
             "schedule": name, "seed": seed, "n_prunable": n, "tokens": tokens, "final_val_loss": loss + 0.01 * seed}
            for name, loss in losses.items() for seed in range(2)]


def test_the_reference_grid_trained_the_most_planned_schedules_at_the_same_tokens_per_parameter():
    planned = pd.DataFrame({"corpus": "c", "scale": "s2", "budget": "b", "schedule": ["w1", "w2", "w3"],
                            "n_prunable": 100, "tokens": 2000})
    runs = pd.DataFrame(_runs_at("s1", 50, 1000, {"w1": 3.0, "w2": 2.9, "w3": 3.1})
                        + _runs_at("s3", 150, 3000, {"w1": 2.0, "w2": 1.9, "w3": 2.1})
                        + _runs_at("s2", 100, 2000, {"w1": 2.5})
                        + _runs_at("s1", 50, 5000, {"w1": 9.0, "w2": 9.0, "w3": 9.0, "w4": 9.0}, budget="long"))
    label, losses = plan.trained_reference(planned, runs)
    assert label == "s3 b"  # s1 and s3 trained all three; s3 is nearer in size; 'long' has 100 tokens per parameter
    np.testing.assert_allclose(losses, [2.005, 1.905, 2.105])
    own = pd.DataFrame(_runs_at("s2", 100, 2000, {"w2": 2.4, "w3": 2.6}))
    assert plan.trained_reference(planned, pd.concat([runs, own]))[0] == "s2 b"  # the planned scale wins a tie
    assert plan.trained_reference(planned, pd.concat([runs, own]), exclude=("s2", "b"))[0] == "s3 b"
    label, losses = plan.trained_reference(planned.assign(corpus="other"), runs)
    assert label is None and losses.isna().all()


def test_plan_check_judges_the_order_trained_at_another_scale():
    trained = {(0.0, 0.75): 2.80, (0.25, 0.75): 2.84, (0.5, 0.75): 2.86, (0.5, 1.0): 3.23}
    at_s1 = {(0.0, 0.75): 3.29, (0.25, 0.75): 3.30, (0.5, 0.75): 3.31, (0.5, 1.0): 3.44}
    checked = pd.DataFrame([
        {"fit": "f.json", "run_id": f"c/s2/b/w{a}-{b}/seed{seed}", "corpus": "c", "scale": "s2", "budget": "b",
         "schedule": f"w{a}-{b}", "seed": seed, "method": "global", "shape": "geometric", "target_sparsity": 0.8,
         "start": a, "end": b, "n_prunable": 200, "tokens": 4000, "loss": 2.0,
         "observed_loss": loss + 0.02 * seed + 0.001 * (seed % 2)} for (a, b), loss in trained.items() for seed in range(1, 7)])
    runs = pd.DataFrame(_runs_at("s1", 100, 2000, {f"w{a}-{b}": v for (a, b), v in at_s1.items()}))
    orders = plan.transferred_orders(checked, runs)
    assert set(orders["fit"]) == {"trained order at s1 b"} and len(orders) == len(checked)
    row = plan.check_ranking(orders, 0.005).iloc[0]
    assert (row["pick"], row["best"], row["pick_rank"], row["regret"]) == ("0%→75%", "0%→75%", 1, 0.0)
    assert row["spearman"] == pytest.approx(1.0)
    assert plan.transferred_orders(checked, runs.assign(tokens=8000)).empty  # another tokens-per-parameter budget


def test_an_unchecked_law_says_so(tmp_path):
    fit = write_fit(tmp_path, "average-params", CHIN)
    result = cli("schedule", "--fit", fit, "--scale", "t1", "--budget", "k40", "--schedule", "global-tiny",
                 "--runs", str(tmp_path / "none.csv"), *TINY)
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stdout and "unchecked: no trained runs table" in result.stdout


def test_the_recovery_laws_dense_allocation_is_the_nbar_laws(tmp_path):
    """For dense runs the recovery law is the N-bar law, so its compute-optimal allocation is too."""
    nbar = plan.load_fit(write_fit(tmp_path, "average-params", CHIN, name="nbar.json"))
    recovery = plan.load_fit(write_fit(tmp_path, "recovery", {**CHIN, "C": 0.1, "rho": 0.05}, name="recovery.json"))
    budgets = [1e12, 1e14]
    expected = plan.dense_allocation(nbar, budgets, COST).drop(columns="fit")
    pd.testing.assert_frame_equal(plan.dense_allocation(recovery, budgets, COST).drop(columns="fit"), expected)


def test_plan_check_judges_the_trained_ranking_of_what_it_recommended():
    """The emitted grid, trained: the fit's pick against the best trained window, per group."""
    predicted = {(0.0, 0.75): 2.70, (0.25, 0.75): 2.65, (0.5, 0.75): 2.80, (0.5, 1.0): 2.90}
    trained = {(0.0, 0.75): 2.80, (0.25, 0.75): 2.84, (0.5, 0.75): 2.86, (0.5, 1.0): 3.23}
    rows = [{"fit": "f.json", "run_id": f"c/s2/b/w{a}-{b}/seed{seed}", "corpus": "c", "scale": "s2", "budget": "b",
             "schedule": f"w{a}-{b}", "seed": seed, "method": "global", "shape": "geometric", "target_sparsity": 0.8,
             "start": a, "end": b, "loss": predicted[(a, b)], "observed_loss": loss + 0.02 * seed + 0.001 * (seed % 2)}
            for (a, b), loss in trained.items() for seed in range(1, 7)]
    ranking = plan.check_ranking(pd.DataFrame(rows), 0.005)
    row = ranking.iloc[0]
    assert (row["fit"], row["pick"], row["best"], row["pick_rank"]) == ("f.json", "25%→75%", "0%→75%", 2)
    assert row["regret"] == pytest.approx(0.04, abs=1e-9) and row["paired"] == "not reproduced"
    line = plan.ranking_line(row)
    assert line.startswith("s2 b at 80% sparsity: pick 25%→75% (trained rank 2/4, best 0%→75%), regret 0.0400")
    assert "over the 6 seeds both ran" in line and "the 6 seeds every window ran" in line
    assert "not reproduced" in line


def test_emitted_seeds_are_listed_as_ranges():
    from sparsescale.plan_cli import seed_list

    assert seed_list([3]) == "seed 3"
    assert seed_list([0, 7, 8, 9, 12, 10, 11]) == "seeds 0, 7-12"
