"""The N-bar law with recovery (sparsescale.laws.recovery) and the schedule-advice analysis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparsescale import claims as C
from sparsescale.io import InputError
from sparsescale.laws import uncertainty
from sparsescale.laws.chinchilla import AverageParamsLaw
from sparsescale.laws.cli import fit_table
from sparsescale.laws.recovery import RecoveryLaw, _objective_grad, pruning_share, recovery_share, unrecovered

TRUTH = {"E": 1.8, "A": 60.0, "B": 300.0, "alpha": 0.35, "beta": 0.3, "C": 0.2, "rho": 0.08}
WINDOWS = [(0.0, 0.25), (0.0, 0.5), (0.25, 0.75), (0.5, 1.0), (0.75, 1.0)]


def synthetic_runs(params: dict = TRUTH, noise: float = 0.002, seed: int = 0) -> pd.DataFrame:
    """A ladder of dense runs and geometric schedules at two sparsities, their losses drawn
    from the recovery law with ``params`` and a log-normal scatter of ``noise``."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (3e4, 7e4, 1.6e5, 2.7e5):
        for tpp in (20, 80):
            steps = int(n * tpp / 2048)
            rows.append({"n_avg": n, "n_final": n, "n_prunable": n, "tokens": n * tpp, "steps": steps, "start_step": np.nan,
                         "end_step": np.nan, "start": np.nan, "end": np.nan, "scale": f"{n:g}"})
            for sparsity in (0.5, 0.8):
                for start, end in WINDOWS:
                    mean_density = 1 - sparsity * (1 - end) - sparsity * (end - start) * 0.6
                    rows.append({"n_avg": n * mean_density, "n_final": n * (1 - sparsity), "n_prunable": n,
                                 "tokens": n * tpp,
                                 "steps": steps, "start_step": round(start * steps), "end_step": round(end * steps),
                                 "start": start, "end": end,
                                 "scale": f"{n:g}"})
    frame = pd.DataFrame(rows)
    frame["recovery_share"] = recovery_share(frame)
    frame["pruning_share"] = pruning_share(frame)
    truth = RecoveryLaw().set_params(**params)
    frame["final_val_loss"] = truth.predict(frame) * np.exp(rng.normal(0, noise, len(frame)))
    frame["run_id"] = [f"run{i}" for i in range(len(frame))]
    return frame


def test_recovers_known_coefficients_from_synthetic_runs():
    fit = RecoveryLaw().fit(synthetic_runs())
    assert fit.status["usable"]
    assert fit.params["rho"] == pytest.approx(TRUTH["rho"], rel=0.2)
    assert fit.params["C"] == pytest.approx(TRUTH["C"], rel=0.2)
    assert fit.params["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.03)
    assert fit.params["beta"] == pytest.approx(TRUTH["beta"], abs=0.03)
    assert fit.params["E"] == pytest.approx(TRUTH["E"], rel=0.05)


def test_equals_the_nbar_law_when_nothing_is_left_unrecovered():
    """Dense runs (N_final = N-bar) and schedules with a recovery share far beyond rho are
    predicted exactly as by the N-bar law with the same five coefficients."""
    nbar = {k: TRUTH[k] for k in AverageParamsLaw.param_names}
    law = RecoveryLaw().set_params(**{**TRUTH, "rho": 0.005})
    runs = {"N": np.array([3e4, 2e4, 1e4]), "D": np.array([6e5, 6e5, 6e5]), "N0": np.full(3, 3e4),
            "F": np.array([3e4, 6e3, 6e3]), "R": np.array([1.0, 0.75, 0.5]), "P": np.array([0.0, 0.25, 0.5])}
    expected = AverageParamsLaw().set_params(**nbar).predict(N=runs["N"], D=runs["D"])
    np.testing.assert_array_equal(law.predict(**runs), expected)
    # a one-shot prune on the last step keeps its whole damage: C times the rise of N_0 / N
    last = law.predict(**{**runs, "R": np.zeros(3), "P": np.zeros(3)})
    np.testing.assert_allclose(last - expected, TRUTH["C"] * (runs["N0"] / runs["F"] - 1), rtol=1e-12)


def test_on_dense_runs_the_fit_is_the_nbar_fit():
    dense = synthetic_runs(noise=0.004)
    dense = dense[dense["start"].isna()]
    recovery, nbar = RecoveryLaw().fit(dense), AverageParamsLaw().fit(dense)
    np.testing.assert_allclose(recovery.predict(dense), nbar.predict(dense), rtol=1e-5)
    assert recovery.fit_loss == pytest.approx(nbar.fit_loss, rel=1e-4, abs=1e-10)


def test_analytic_gradient_matches_finite_differences():
    runs = synthetic_runs()
    law = RecoveryLaw().set_params(**TRUTH)
    x = law.extract(runs)
    theta = law.theta_ + 0.05
    args = (np.log(x["N"]), np.log(x["D"]), np.log(x["N0"] / x["F"]), x["R"], x["P"], np.log(x["L"]), 1e-3)
    _, grad = _objective_grad(theta, *args)
    step = 1e-6
    numeric = [(_objective_grad(theta + h, *args)[0] - _objective_grad(theta - h, *args)[0]) / (2 * step)
               for h in np.eye(len(theta)) * step]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5)


def test_the_damage_sums_each_prunes_rise_in_compression_discounted_by_the_training_after_it():
    """U is, over evenly spaced events that each remove the same fraction (a geometric
    schedule), the sum of the rises of N_0 / N_t, each times exp(-training left / rho)."""
    rho, share, span, lam = 0.1, 0.2, 0.3, np.log(5.0)
    steps = 30000
    position = (np.arange(steps) + 0.5) / steps  # 0 at the first event, 1 at the last
    left = share + (1 - position) * span
    compression = np.exp(lam * position)  # N_0 / N_t along the window
    expected = (lam * compression * np.exp(-left / rho)).mean()  # d(N_0/N_t) = lam (N_0/N_t) d position
    u, du = unrecovered(np.array([lam, lam, 0.0]), np.array([share, share, 1.0]), np.array([span, 0.0, 0.0]),
                        np.log(rho))
    assert u[0] == pytest.approx(expected, rel=1e-6)
    assert u[1] == pytest.approx(np.exp(-share / rho) * (5.0 - 1.0), rel=1e-12)  # one event
    assert u[2] == 0 and du[2] == 0  # dense
    step = 1e-6
    numeric = (unrecovered(lam, share, span, np.log(rho) + step)[0]
               - unrecovered(lam, share, span, np.log(rho) - step)[0]) / (2 * step)
    assert du[0] == pytest.approx(numeric, rel=1e-6)
    tiny = unrecovered(lam, share, 1e-9, np.log(rho))[0]  # a tiny span is continuous with one event
    assert tiny == pytest.approx(u[1], rel=1e-7)


def test_a_prune_spread_over_a_longer_window_leaves_less_unrecovered():
    law = RecoveryLaw().set_params(**TRUTH)
    runs = {"N": np.full(3, 2e4), "D": np.full(3, 6e5), "N0": np.full(3, 3e4), "F": np.full(3, 6e3),
            "R": np.zeros(3), "P": np.array([0.0, 0.25, 1.0])}
    loss = law.predict(**runs)
    assert loss[0] > loss[1] > loss[2]


def test_bad_recovery_share_names_the_column():
    runs = synthetic_runs()
    runs.loc[3, "recovery_share"] = 1.5
    with pytest.raises(InputError, match=r"column 'recovery_share': row 3 \(run_id='run3'\) is 1.5; the share of training after"):
        RecoveryLaw().fit(runs)


def test_the_share_is_derived_from_the_trainers_steps():
    frame = pd.DataFrame({"steps": [100, 100, 100], "start_step": [np.nan, 25, 0], "end_step": [np.nan, 75, 100]})
    assert recovery_share(frame).tolist() == [1.0, 0.25, 0.0]
    assert pruning_share(frame).tolist() == [0.0, 0.5, 1.0]


def test_fit_json_holds_leave_one_window_out_predictions():
    runs = synthetic_runs().drop(columns=["recovery_share", "pruning_share"])  # derived from the steps
    doc = fit_table(runs, "recovery", bootstrap=0, kfold=0, scale_col="scale")
    assert set(doc["params"]) == {"E", "A", "B", "alpha", "beta", "C", "rho"}
    assert doc["columns"]["R"] == "recovery_share" and doc["columns"]["F"] == "n_final"
    assert doc["columns"]["N0"] == "n_prunable" and doc["columns"]["P"] == "pruning_share"
    lowo = doc["heldout"]["leave_one_window_out"]
    assert len(lowo["windows"]) == len(WINDOWS) and len(lowo["predictions"]) == 4 * 2 * 2 * len(WINDOWS)
    # the runs follow the recovery law: the windows it did not see are predicted far better than
    # by the N-bar law, which cannot tell a window ending at 75% from one ending at 100%
    nbar = fit_table(runs, "average-params", bootstrap=0, kfold=0)["heldout"]["leave_one_window_out"]
    assert lowo["mae"] < 0.5 * nbar["mae"]
    dense = fit_table(runs[runs["start"].isna()], "average-params", bootstrap=0, kfold=0)["heldout"]
    assert "0 pruning windows" in dense["leave_one_window_out"]["skipped"]


def test_leave_one_window_out_needs_three_windows():
    runs = synthetic_runs()
    two = runs[runs["start"].isna() | runs["end"].isin([0.25, 0.5])]
    assert "skipped" in uncertainty.leave_one_window_out(AverageParamsLaw(), two)


# ---------------------------------------------------------------------------------------- schedule advice

GRID = {(0.0, 0.25): 3.30, (0.0, 0.5): 3.25, (0.0, 0.75): 3.20, (0.25, 0.75): 3.22, (0.5, 0.75): 3.21,
        (0.25, 1.0): 3.35, (0.5, 1.0): 3.40, (0.75, 1.0): 3.46}


def advice_grid(seed_sd: float, pair_sd: float, seeds: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    offsets = rng.normal(0, seed_sd, seeds)
    rows = [{"run_id": f"w{start}-{end}-s{seed}", "corpus": "c", "budget": "b", "scale": "s1", "schedule": f"w{start}-{end}",
             "target_sparsity": 0.8, "method": "global", "shape": "geometric", "start": start, "end": end,
             "seed": seed, "final_val_loss": loss + offsets[seed] + rng.normal(0, pair_sd)}
            for (start, end), loss in GRID.items() for seed in range(seeds)]
    return pd.DataFrame(rows)


def predictions(runs: pd.DataFrame, by_window: dict) -> pd.Series:
    return pd.Series([by_window[(r.start, r.end)] for r in runs.itertuples()], index=runs["run_id"])


def test_the_regret_analysis_finds_the_known_best_window():
    runs = advice_grid(seed_sd=0.05, pair_sd=0.001)
    right = C.ranking_quality(runs, predictions(runs, GRID), margin=0.005).iloc[0]
    assert right["pick"] == right["best"] == "0%→75%" and right["spearman"] == pytest.approx(1.0)
    assert right["regret"] == 0 and right["paired"] == right["bootstrap"] == C.REPRODUCED
    # a law that sees no recovery: it prefers the windows that end at 100% (higher N-bar)
    wrong = {w: -w[1] - 0.01 * w[0] for w in GRID}
    bad = C.ranking_quality(runs, predictions(runs, wrong), margin=0.005).iloc[0]
    assert bad["pick"] == "75%→100%" and bad["pick_rank"] == len(GRID)
    assert bad["regret"] == pytest.approx(0.26, abs=0.01) and bad["spearman"] < 0
    assert bad["paired"] == bad["bootstrap"] == C.NOT_REPRODUCED


def test_seed_noise_that_swamps_the_grid_is_underpowered():
    runs = advice_grid(seed_sd=0.05, pair_sd=0.05)
    near = dict(GRID)
    near[(0.5, 0.75)] = 3.0  # the law picks a window 0.01 nats from the best: within the margin if precise
    row = C.ranking_quality(runs, predictions(runs, near), margin=0.005).iloc[0]
    assert row["regret_halfwidth"] > row["margin_abs"]
    assert row["paired"] == C.UNDERPOWERED and row["bootstrap"] == C.UNDERPOWERED


def _fit_doc(law: str, runs: pd.DataFrame, by_window: dict) -> dict:
    preds = predictions(runs, by_window)
    block = {"predictions": [{"run_id": k, "observed": 0.0, "predicted": v} for k, v in preds.items()]}
    params = {"E": 1.0, "A": 1.0, "B": 1.0, "alpha": 0.3, "beta": 0.3}
    if law == "recovery":
        params.update(C=0.01, rho=0.1)
    return {"law": law, "params": params, "status": {"usable": True},
            "heldout": {"leave_one_window_out": block}, "columns": {"N": "n_avg", "D": "tokens"}}


def test_the_claim_judges_the_law_with_the_best_held_out_picks():
    runs = advice_grid(seed_sd=0.05, pair_sd=0.001)
    runs["n_avg"], runs["n_final"], runs["n_prunable"], runs["tokens"] = 1e4, 2e3, 2e4, 2e5
    runs["steps"], runs["end_step"] = 100, (runs["end"] * 100).round()
    wrong = {w: -w[1] - 0.01 * w[0] for w in GRID}
    fits = {"average_params": _fit_doc("average-params", runs, wrong), "recovery": _fit_doc("recovery", runs, GRID)}
    claim = C.schedule_advice(runs, fits, margin=0.005)
    assert C.ranking_law(claim.detail) == "recovery"
    assert claim.verdict == C.REPRODUCED and "N̄ law with recovery (chosen by held-out regret)" in claim.ours
    assert "N̄ law (average non-zero params): worst regret 0.26" in claim.ours
    held = claim.detail[claim.detail["predictions"] == "held out"].set_index("law")
    assert held.loc["recovery", "pick_share_after_last_prune"] == pytest.approx(0.25)
    only_nbar = C.schedule_advice(runs, {"average_params": fits["average_params"]}, margin=0.005)
    assert only_nbar.verdict == C.NOT_REPRODUCED
    assert C.schedule_advice(runs, {}, margin=0.005).verdict == C.NOT_TESTED


def test_fresh_runs_of_a_grid_the_fit_never_saw_are_held_out_too():
    """A schedule grid trained at another scale (the planner's check) is judged with the full
    fit's predictions; a window the fit saw at that scale keeps its leave-one-window-out one."""
    seen = advice_grid(seed_sd=0.05, pair_sd=0.001)
    fresh = advice_grid(seed_sd=0.05, pair_sd=0.001).assign(scale="s2", seed=lambda f: f["seed"] + 1)
    fresh["run_id"] = fresh["run_id"] + "-s2"
    runs = pd.concat([seen, fresh], ignore_index=True)
    runs["n_avg"] = 1e4 * (1 + runs["end"] + 0.1 * runs["start"])  # the law prefers late windows: wrong here
    runs["n_final"], runs["tokens"] = 2e3, 2e5
    fit = _fit_doc("average-params", seen, GRID) | {"query": "scale == 's1' or (seed == 1 and end == 0.25)"}
    fit["heldout"]["leave_one_window_out"]["predictions"].append(
        {"run_id": fresh["run_id"].iloc[0], "observed": 0.0, "predicted": 1.0})  # s2, window 0-25%, seed 1
    predicted, source = C.heldout_predictions(runs, fit, "average_params")
    first = fresh[(fresh["start"] == 0.0) & (fresh["end"] == 0.25)]
    assert (predicted[first["run_id"]] == 1.0).all() and (source[first["run_id"]] == C.LEAVE_ONE_WINDOW_OUT).all()
    later = fresh[fresh["end"] > 0.25]["run_id"]
    assert (source[later] == C.FRESH_RUNS).all()
    assert predicted[later].idxmin().startswith("w0.75-1.0")  # the full fit: largest N-bar
    rows = C.schedule_rankings(runs, {"average_params": fit}, margin=0.005, in_sample=False).set_index("scale")
    assert rows.loc["s2", "held_out_by"] == "fresh runs + leave one window out"
    assert rows.loc["s2", "pick"] == "0%→25%" and rows.loc["s1", "pick"] == "0%→75%"
