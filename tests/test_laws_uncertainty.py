"""Bootstrap intervals and held-out errors of the scaling-law fits."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from sparsescale.laws.chinchilla import AverageParamsLaw, ChinchillaLaw
from sparsescale.laws.sparsity import SparsityLaw
from sparsescale.laws.synthetic import runs_table
from sparsescale.laws.uncertainty import _kfold_split, bootstrap, kfold, leave_one_scale_out, scale_groups

CHIN_TRUE = {"E": 1.8, "A": 400.0, "B": 1000.0, "alpha": 0.34, "beta": 0.30}


def test_bootstrap_intervals_cover_truth_in_most_repeats():
    repeats, covered = 8, {"E": 0, "alpha": 0, "beta": 0}
    for rep in range(repeats):
        frame = runs_table("chinchilla", CHIN_TRUE, seed=100 + rep, noise=0.02,
                           tokens_per_param=(5, 20, 80, 320))
        law = ChinchillaLaw(n_refine=16, warm_starts=1).fit(frame)
        out = bootstrap(law, frame, n_boot=40, seed=rep)
        assert out["n_failed"] <= 2
        for name in covered:
            lo, hi = out["ci"][name]
            assert lo < hi
            covered[name] += lo <= CHIN_TRUE[name] <= hi
    for name, hits in covered.items():
        assert hits >= 5, f"{name}: 95% interval covered the truth in {hits}/{repeats} repeats"


def test_bootstrap_is_seeded_sets_ci_and_derived():
    frame = runs_table("chinchilla", CHIN_TRUE, seed=0)
    law = ChinchillaLaw(n_refine=16, warm_starts=1).fit(frame)
    a = bootstrap(law, frame, n_boot=10, seed=7, derived_kwargs={"compute": [1e17]})
    b = bootstrap(law, frame, n_boot=10, seed=7, derived_kwargs={"compute": [1e17]})
    assert a["ci"] == b["ci"]
    assert "n_opt@1e+17" in a["derived_ci"] and "G" in a["derived_ci"]
    table = law.parameter_table()
    assert np.isfinite(table[["ci_low", "ci_high"]].to_numpy()).all()
    assert (table["ci_low"] <= table["ci_high"]).all()


@pytest.mark.parametrize("law_class", [ChinchillaLaw, SparsityLaw])
def test_a_warm_refit_runs_each_distinct_start_once(monkeypatch, law_class):
    # the fit's best refined end is its optimum: started twice, L-BFGS would repeat itself
    import scipy.optimize

    frame = runs_table("sparsity" if law_class is SparsityLaw else "chinchilla", seed=2)
    law = (SparsityLaw(n_starts=6) if law_class is SparsityLaw else ChinchillaLaw(n_refine=32)).fit(frame)
    assert np.array_equal(law._top_thetas[0], law.theta_)
    starts = []
    minimize = scipy.optimize.minimize

    def recording(fun, x0, *args, **kwargs):
        starts.append(tuple(np.asarray(x0, dtype=float)))
        return minimize(fun, x0, *args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", recording)
    refit = law.clone().refit_warm(frame.sample(frac=1.0, replace=True, random_state=0), law)
    distinct = {tuple(law.theta_)} | {tuple(t) for t in law._top_thetas[: law.warm_starts]}
    assert sorted(starts) == sorted(distinct) and len(starts) == len(set(starts))
    assert refit.status["usable"]


def test_sparsity_bootstrap_runs():
    frame = runs_table("sparsity", seed=1)
    law = SparsityLaw(n_starts=10).fit(frame)
    out = bootstrap(law, frame, n_boot=8, seed=0,
                    derived_kwargs={"n_values": [1e6], "compute": [1e15]})
    lo, hi = out["ci"]["b_N"]
    assert lo <= hi and 0.1 < lo and hi < 0.6
    assert any(k.startswith("s_opt@") for k in out["derived_ci"])


def test_heldout_errors_are_sane():
    noise = 0.02
    frame = runs_table("average-params", CHIN_TRUE, seed=5, noise=noise)
    law = AverageParamsLaw(n_refine=16)
    loso = leave_one_scale_out(law, frame)
    assert loso["held_out_scale"] == "s4" and loso["scale_column"] == "scale"
    assert loso["n_test"] == 12 and loso["n_train"] == 48
    # errors are in loss units: around the noise level (2 % of a loss of ~3-13)
    typical = noise * frame["final_val_loss"].mean()
    assert 0.2 * typical < loso["mae"] <= loso["rmse"] < 4 * typical
    kf = kfold(law, frame, k=4, seed=0)
    assert kf["k"] == 4 and kf["n"] == len(frame)
    assert 0.3 * typical < kf["mae"] <= kf["rmse"] < 3 * typical
    # a law fitted to the wrong N (final instead of N-bar) predicts held-out runs worse
    wrong = kfold(ChinchillaLaw(n_refine=16), frame, k=4, seed=0)
    assert wrong["mae"] > kf["mae"]


@pytest.mark.parametrize("held_out", [leave_one_scale_out, functools.partial(kfold, k=4)], ids=["loso", "kfold"])
def test_held_out_refits_carry_the_held_out_fits_uncertainty(held_out):
    exact = runs_table("average-params", CHIN_TRUE, seed=5, noise=0.0)
    law = AverageParamsLaw(n_refine=16)
    held = held_out(law, exact, refits=8, seed=3)
    refits = held["refits"]
    assert refits["n_boot"] == 8 and refits["n_failed"] == 0
    predicted = np.array(refits["predicted"])
    assert predicted.shape == (8, len(held["predictions"]))
    # runs on the law itself: every resample's refit predicts every held-out run exactly
    observed = np.array([p["observed"] for p in held["predictions"]])
    assert np.allclose(predicted, observed, rtol=1e-4)
    # noisy runs: the refits scatter the predictions, around the held-out fits' own
    noisy = runs_table("average-params", CHIN_TRUE, seed=5, noise=0.02)
    held = held_out(law, noisy, refits=40, seed=3, workers=2)  # results do not depend on workers
    predicted = np.array(held["refits"]["predicted"], dtype=float)
    fitted = np.array([p["predicted"] for p in held["predictions"]])
    spread = predicted.std(axis=0)
    assert (spread > 1e-3 * fitted).all()
    assert (np.abs(np.median(predicted, axis=0) - fitted) < 2 * spread).all()
    # the resamples come from the seed (so two laws fitted on the same runs draw the same ones)
    again = held_out(law, noisy, refits=40, seed=3, workers=2)
    assert again["refits"]["predicted"] == held["refits"]["predicted"]
    assert "refits" not in held_out(law, noisy)


def test_kfold_refit_i_predicts_each_fold_with_that_folds_refit_i():
    """Refit i of the k-fold predictions is refit i of every fold's fit: the runs of one fold
    move together (one set of coefficients per refit), runs of different folds independently
    (each fold's fit resampled on its own)."""
    noisy = runs_table("average-params", CHIN_TRUE, seed=5, noise=0.02)
    law = AverageParamsLaw(n_refine=16)
    held = kfold(law, noisy, k=4, seed=3, refits=40, workers=2)
    folds = _kfold_split(law, noisy, 4, 3)["folds"]  # the rows of each fold
    fold_of = {noisy["run_id"].iloc[r]: j for j, rows in enumerate(folds) for r in rows}
    fold = np.array([fold_of[p["run_id"]] for p in held["predictions"]])
    shift = np.array(held["refits"]["predicted"], dtype=float) - [p["predicted"] for p in held["predictions"]]
    corr = np.abs(np.corrcoef(shift.T))
    pairs = np.triu(np.ones_like(corr, bool), 1)
    within, across = corr[pairs & (fold[:, None] == fold)], corr[pairs & (fold[:, None] != fold)]
    assert np.median(within) > 2 * np.median(across), (np.median(within), np.median(across))  # 0.37, 0.10


def test_scale_groups_fallbacks():
    frame = runs_table("chinchilla", CHIN_TRUE, seed=0)
    law = ChinchillaLaw()
    name, keys, order = scale_groups(frame, law, "scale")
    assert name == "scale" and order[-1] == "s4"
    name, keys, order = scale_groups(frame.drop(columns=["scale"]), law, "scale")
    assert name == "n_prunable" and order[-1] == frame["n_prunable"].max()
    name, keys, order = scale_groups(frame.drop(columns=["scale", "n_prunable"]), law, "scale")
    assert name == "n_final" and order[-1] == frame["n_final"].max()


def test_leave_one_scale_out_skips_with_one_scale():
    frame = runs_table("chinchilla", CHIN_TRUE, seed=0, n_prunable=(1e7,))
    out = leave_one_scale_out(ChinchillaLaw(n_refine=4), frame)
    assert "skipped" in out


@pytest.mark.parametrize("k", [1, 0])
def test_kfold_bad_k(k):
    from sparsescale.io import InputError

    with pytest.raises(InputError):
        kfold(ChinchillaLaw(), runs_table("chinchilla", seed=0), k=k)
