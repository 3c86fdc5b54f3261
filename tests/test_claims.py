"""The claims' analyses and verdicts, on run tables and fits with known effects."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pandas as pd
import pytest

from sparsescale import claims as C
from sparsescale import results as R
from sparsescale.laws.cli import fit_table
from sparsescale.laws.synthetic import runs_table

WINDOWS = [(0.0, 0.75), (0.25, 0.75), (0.5, 0.75), (0.0, 1.0)]


# ---------------------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("decisions,verdict", [
    ([C.REPRODUCED, C.REPRODUCED], C.REPRODUCED),
    ([C.NOT_REPRODUCED, C.NOT_REPRODUCED, C.NOT_TESTED], C.NOT_REPRODUCED),
    ([C.REPRODUCED, C.NOT_REPRODUCED], C.UNSTABLE),
    ([C.REPRODUCED, C.NOT_REPRODUCED, C.UNDERPOWERED], C.UNSTABLE),  # disagreement outranks missing power
    ([C.REPRODUCED, C.UNDERPOWERED], C.UNDERPOWERED),
    ([C.UNSTABLE, C.REPRODUCED], C.UNSTABLE),
    ([C.NOT_TESTED, C.NOT_TESTED], C.NOT_TESTED),
])
def test_verdict_combines_the_analyses(decisions, verdict):
    assert C.combine(decisions) == verdict


# ---------------------------------------------------------------------------------------- when to prune


def grid_runs(true_loss: dict, seeds: int, seed_sd: float, pair_sd: float, rng_seed: int = 0,
              scale: str = "s1") -> pd.DataFrame:
    """Global geometric runs of one group: loss = schedule effect + a shared per-seed offset
    (same init and batches for every schedule of a seed) + a small per-run residual."""
    rng = np.random.default_rng(rng_seed)
    offsets = rng.normal(0, seed_sd, seeds)
    rows = []
    for (start, end), loss in true_loss.items():
        for seed in range(seeds):
            rows.append({"corpus": "c", "budget": "b", "scale": scale, "target_sparsity": 0.8, "method": "global",
                         "shape": "geometric", "start": start, "end": end, "seed": seed,
                         "final_val_loss": loss + offsets[seed] + rng.normal(0, pair_sd)})
    return pd.DataFrame(rows)


def test_paired_gap_sees_through_seed_to_seed_spread():
    """Seeds differ by ~0.1 nats, schedules by 0.05: both analyses call 25%-75% clearly worse."""
    runs = grid_runs(dict(zip(WINDOWS, [5.00, 5.05, 5.02, 5.08])), seeds=4, seed_sd=0.1, pair_sd=0.002)
    claim = C.when_to_prune(runs, margin=0.002)
    row = claim.detail.iloc[0]
    assert row["best_schedule"] == "0%→75%" and row["rank"] == 3
    assert row["gap"] == pytest.approx(0.05, abs=0.006) and row["gap_se"] < 0.004
    assert row["boot_low"] > row["margin_abs"]
    assert [a.decision for a in claim.analyses] == [C.NOT_REPRODUCED, C.NOT_REPRODUCED]
    assert claim.verdict == C.NOT_REPRODUCED


def test_within_the_margin_is_reproduced_by_both_analyses():
    runs = grid_runs(dict(zip(WINDOWS, [5.00, 5.004, 5.02, 5.08])), seeds=3, seed_sd=0.1, pair_sd=0.001)
    claim = C.when_to_prune(runs, margin=0.002)
    assert claim.detail.iloc[0]["gap"] <= claim.detail.iloc[0]["margin_abs"]
    assert claim.verdict == C.REPRODUCED


def _paired_table(per_seed: dict) -> pd.DataFrame:
    """One group's runs from {window: [loss of seed 0, seed 1, ...]}."""
    return pd.DataFrame([{"corpus": "c", "budget": "b", "scale": "s1", "target_sparsity": 0.5, "method": "global",
                          "shape": "geometric", "start": st, "end": en, "seed": seed, "final_val_loss": loss}
                         for (st, en), losses in per_seed.items() for seed, loss in enumerate(losses)])


def test_a_gap_the_seeds_disagree_on_is_underpowered_with_its_numbers():
    """Beyond the margin on average, but the seeds disagree (gaps 0.00 and 0.06)."""
    per_seed = {(0.0, 0.75): [5.00, 5.00], (0.25, 0.75): [5.00, 5.06], (0.5, 0.75): [5.05, 5.05]}
    runs = _paired_table(per_seed)
    claim = C.when_to_prune(runs, margin=0.002)
    row = claim.detail.iloc[0]
    assert row["gap"] == pytest.approx(0.03) and row["gap_halfwidth"] > row["margin_abs"]
    assert claim.analyses[0].decision == C.UNDERPOWERED == claim.verdict
    assert f"95% ± {row['gap_halfwidth']:.4f}" in claim.ours and f"margin {row['margin_abs']:.4f}" in claim.ours


def test_the_paired_interval_is_the_pairs_own_t_interval():
    """Per-seed gaps 0.02, 0.03, 0.04 to the best: s.e. 0.01/sqrt(3), 95% half-width t(2) x s.e.
    A third schedule whose per-seed differences scatter wildly does not widen it."""
    per_seed = {(0.0, 0.75): [5.00, 5.10, 4.90], (0.25, 0.75): [5.02, 5.13, 4.94], (0.0, 1.0): [5.3, 5.0, 5.6]}
    runs = _paired_table(per_seed)
    row = C.when_to_prune(runs, margin=0.001).detail.iloc[0]
    assert row["gap"] == pytest.approx(0.03)
    assert row["gap_se"] == pytest.approx(0.01 / np.sqrt(3))
    assert row["gap_halfwidth"] == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-5)


def test_one_seed_gives_no_error_so_no_verdict():
    runs = grid_runs(dict(zip(WINDOWS, [5.00, 5.05, 5.02, 5.08])), seeds=1, seed_sd=0.0, pair_sd=0.0)
    claim = C.when_to_prune(runs, margin=0.002)
    assert np.isnan(claim.detail.iloc[0]["gap_se"]) and claim.verdict == C.UNDERPOWERED


def test_one_group_clearly_beyond_refutes_the_claim():
    """The claim holds in every group or not at all: within at s1, clearly beyond at s2."""
    near = grid_runs(dict(zip(WINDOWS, [5.00, 5.001, 5.02, 5.08])), seeds=4, seed_sd=0.05, pair_sd=0.001, scale="s1")
    far = grid_runs(dict(zip(WINDOWS, [5.00, 5.06, 5.02, 5.08])), seeds=4, seed_sd=0.05, pair_sd=0.001, scale="s2")
    claim = C.when_to_prune(pd.concat([near, far]), margin=0.002)
    assert list(claim.detail["paired"]) == [C.REPRODUCED, C.NOT_REPRODUCED]
    assert list(claim.detail["bootstrap"]) == [C.REPRODUCED, C.NOT_REPRODUCED]
    assert claim.verdict == C.NOT_REPRODUCED
    assert "within the margin in 1/2 groups, clearly beyond in 1" in claim.ours


@pytest.mark.parametrize("decisions,verdict", [
    ([C.REPRODUCED, C.REPRODUCED], C.REPRODUCED),
    ([C.REPRODUCED, C.UNDERPOWERED], C.UNDERPOWERED),  # nothing refutes it, one group cannot say
    ([C.UNDERPOWERED, C.NOT_REPRODUCED], C.NOT_REPRODUCED),  # a clear counter-example is enough
    ([], C.NOT_TESTED),
])
def test_an_analysis_over_groups(decisions, verdict):
    assert C.across_groups(decisions) == verdict


def test_the_bootstrap_keeps_seeds_paired():
    """Seeds differ by 0.5 nats, schedules by exactly 0.03: every resample keeps the pairing,
    so its gap is 0.03 however the seeds are drawn."""
    true = dict(zip(WINDOWS, [5.00, 5.03, 5.05, 5.08]))
    row = C.when_to_prune(grid_runs(true, seeds=5, seed_sd=0.5, pair_sd=0.0), margin=0.002).detail.iloc[0]
    assert row["boot_low"] == pytest.approx(0.03) and row["boot_high"] == pytest.approx(0.03)


def test_the_seeds_a_group_needs_for_a_third_of_the_margin():
    """Per-seed gaps 0.02, 0.03, 0.04 (scatter 0.01), best loss 5.0, margin 0.1%: 0.005 nats.
    An s.e. of a third of it, 0.00167, needs (0.01 / 0.00167)^2 = 36 seeds."""
    per_seed = {(0.0, 0.75): [5.00, 5.10, 4.90], (0.25, 0.75): [5.02, 5.13, 4.94], (0.0, 1.0): [5.3, 5.0, 5.6]}
    row = C.when_to_prune_seeds(_paired_table(per_seed), margin=0.001).iloc[0]
    assert row["seeds"] == 3 and row["scatter"] == pytest.approx(0.01)
    assert row["target_se"] == pytest.approx(0.005 / 3)
    assert row["seeds_needed"] == 36


def test_the_seeds_needed_read_the_scatter_never_the_gap():
    """Moving 25%->75% further from the best changes the gap, not the count; doubling the
    scatter of its per-seed differences quadruples it; a precise group keeps its own seeds."""
    base = {(0.0, 0.75): [5.00, 5.10, 4.90], (0.25, 0.75): [5.02, 5.13, 4.94]}
    further = {**base, (0.25, 0.75): [loss + 0.2 for loss in base[(0.25, 0.75)]]}
    wider = {**base, (0.25, 0.75): [5.00 + 0.04, 5.10 + 0.06, 4.90 + 0.08]}
    precise = {**base, (0.25, 0.75): [5.03, 5.13, 4.93]}
    needed = [C.when_to_prune_seeds(_paired_table(t), margin=0.001).iloc[0]["seeds_needed"]
              for t in (base, further, wider, precise)]
    assert needed == [36, 36, 144, 3]


def test_one_seed_cannot_size_a_group():
    runs = grid_runs(dict(zip(WINDOWS, [5.00, 5.05, 5.02, 5.08])), seeds=1, seed_sd=0.0, pair_sd=0.0)
    assert np.isnan(C.when_to_prune_seeds(runs).iloc[0]["seeds_needed"])


# ---------------------------------------------------------------------------------------- N-bar law


def _ladder(law: str, seed: int = 0, noise: float = 0.005) -> pd.DataFrame:
    """Four sizes, five budgets, three sparsities. Losses 0.5% from the law (our seed-paired
    scatter is about 0.4%): at 1% the leave-one-scale-out fits' refits, extrapolating 3x in
    N, spread the interval to 0.97 even where sparse runs follow N-bar exactly."""
    runs = runs_table(law, seed=seed, noise=noise, n_prunable=(2e6, 6e6, 2e7, 6e7),
                      tokens_per_param=(5, 10, 20, 40, 80), sparsities=(0.0, 0.5, 0.8))
    runs["corpus"] = "c"
    return runs


@functools.cache
def _study(law: str) -> tuple[pd.DataFrame, dict]:
    """A ladder whose losses follow ``law`` and the three fits the claim reads (each fitted once)."""
    runs = _ladder(law)
    query = "corpus == 'c'"
    # the refits of the dense law and of the held-out fits go into every analysis's interval:
    # 40 is the fewest that decide. Two workers halve the wait; the refits do not depend on
    # their number (test_laws_numerics.py::test_refits_do_not_depend_on_the_number_of_workers)
    options = {"bootstrap": 40, "heldout_refits": 40, "n_refine": 32, "workers": 2}
    return runs, {"dense_only": fit_table(runs, "chinchilla", query="method == 'dense'", kfold=0, **options),
                  "average_params": fit_table(runs, "average-params", query=query, kfold=4, **options),
                  "final_params": fit_table(runs, "chinchilla", query=query, kfold=4, **options)}


def _nbar_study(law: str) -> tuple[pd.DataFrame, dict]:
    runs, fits = _study(law)
    return runs, copy.deepcopy(fits)


def test_sparse_runs_that_follow_nbar_reproduce_the_claim_three_ways():
    runs, fits = _nbar_study("average-params")
    claim = C.average_params_law(runs, fits)
    assert [a.name for a in claim.analyses] == ["dense-only law on sparse runs", "leave one scale out", "k-fold"]
    assert all(a.decision == C.REPRODUCED and a.interval[1] <= 0.9 for a in claim.analyses), claim.ours
    assert claim.verdict == C.REPRODUCED


def test_sparse_runs_that_follow_final_n_do_not():
    runs, fits = _nbar_study("chinchilla")
    claim = C.average_params_law(runs, fits)
    assert all(a.decision == C.NOT_REPRODUCED and a.interval[0] > 0.9 for a in claim.analyses), claim.ours
    assert claim.verdict == C.NOT_REPRODUCED


def _transfer_errors(runs: pd.DataFrame, params: dict) -> tuple[np.ndarray, np.ndarray]:
    sparse = runs[runs["method"] != "dense"]
    return tuple(R.chinchilla_predict(params, sparse[col], sparse["tokens"]) - sparse["final_val_loss"].to_numpy()
                 for col in ("n_avg", "n_final"))


def test_dense_only_transfer_uses_nbar_and_final_n_of_the_same_sparse_runs():
    runs, fits = _nbar_study("average-params")
    transfer = C.average_params_law(runs, fits).analyses[0]
    assert "40 sparse runs" in transfer.numbers and "20 dense runs" in transfer.numbers
    assert "interval over 40 of the dense-only law's bootstrap refits" in transfer.numbers
    for err in _transfer_errors(runs, fits["dense_only"]["params"]):  # N-bar, then final N
        assert f"{np.abs(err).mean():.4f}" in transfer.numbers


def test_the_transfer_interval_holds_the_dense_laws_own_uncertainty():
    runs, fits = _nbar_study("average-params")
    law = fits["dense_only"]["params"]
    # refits identical to the fit: the interval is the one over the sparse runs alone
    fits["dense_only"]["bootstrap"]["samples"] = [dict(law)] * 40
    transfer = C.average_params_law(runs, fits).analyses[0]
    assert transfer.interval == pytest.approx(C._paired_ratio(*_transfer_errors(runs, law), C.N_BOOT, 0)[1:])
    assert transfer.decision == C.REPRODUCED
    # a law its own refits cannot pin (a third of them with a size exponent far off): the same
    # point ratio, but an interval that reaches past 0.9 decides nothing
    wild = [dict(law, alpha=law["alpha"] * 0.2, A=law["A"] * 0.05)] * 20 + [dict(law)] * 40
    fits["dense_only"]["bootstrap"]["samples"] = wild
    loose = C.average_params_law(runs, fits).analyses[0]
    assert loose.value == pytest.approx(transfer.value)
    assert loose.interval[0] < 0.9 < loose.interval[1], loose.numbers
    assert loose.decision == C.UNDERPOWERED


@pytest.mark.parametrize("refits,failed,decision,words", [
    (None, 0, C.UNDERPOWERED, "0 bootstrap refits"),
    (5, 0, C.UNDERPOWERED, "5 bootstrap refits"),
    (45, 10, C.UNDERPOWERED, "35 bootstrap refits"),  # refits predicting an infinite loss failed
    (50, 5, C.REPRODUCED, "interval over 45 of the dense-only law's bootstrap refits (5 failed)"),
])
def test_the_transfer_needs_refits_of_the_dense_law(refits, failed, decision, words):
    runs, fits = _nbar_study("average-params")
    law = fits["dense_only"]["params"]
    diverging = dict(law, A=1e300, alpha=-10.0)  # finite coefficients, infinite predicted loss
    fits["dense_only"]["bootstrap"] = None if refits is None else {
        "samples": [diverging] * failed + [dict(law)] * (refits - failed)}
    transfer = C.average_params_law(runs, fits).analyses[0]
    assert transfer.decision == decision and words in transfer.numbers, transfer.numbers
    err_nbar, err_final = _transfer_errors(runs, law)
    assert transfer.value == pytest.approx(np.abs(err_nbar).mean() / np.abs(err_final).mean())


HELDOUT = [("leave_one_scale_out", 1, "of scale s3, interval over 40 of the held-out fits'"),
           ("kfold", 2, "held-out runs, interval over 40 of the held-out fits'")]


def _heldout_errors(fits: dict, kind: str) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.array([p["predicted"] - p["observed"] for p in fits[role]["heldout"][kind]["predictions"]])
                 for role in ("average_params", "final_params"))


@pytest.mark.parametrize("kind,index,words", HELDOUT)
def test_a_held_out_interval_holds_the_held_out_fits_uncertainty(kind, index, words):
    runs, fits = _nbar_study("average-params")
    blocks = [fits[role]["heldout"][kind] for role in ("average_params", "final_params")]
    # refits that predict what the fits predict: the interval over the held-out runs alone
    for block in blocks:
        block["refits"]["predicted"] = [[p["predicted"] for p in block["predictions"]]] * 40
    held = C.average_params_law(runs, fits).analyses[index]
    assert held.interval == pytest.approx(C._paired_ratio(*_heldout_errors(fits, kind), C.N_BOOT, 0)[1:])
    assert held.decision == C.REPRODUCED and words in held.numbers, held.numbers
    # a third of the N-bar fits' refits predict 0.3 nats high: same point, no decision
    high = [[p["predicted"] + 0.3 for p in blocks[0]["predictions"]]] * 20
    blocks[0]["refits"]["predicted"] = high + blocks[0]["refits"]["predicted"][20:]
    loose = C.average_params_law(runs, fits).analyses[index]
    assert loose.value == pytest.approx(held.value)
    assert loose.interval[0] < 0.9 < loose.interval[1] and loose.decision == C.UNDERPOWERED, loose.numbers


@pytest.mark.parametrize("kind,index", [(kind, index) for kind, index, _ in HELDOUT])
@pytest.mark.parametrize("refits,failed,decision,words", [
    (None, 0, C.UNDERPOWERED, "the held-out fits' own uncertainty has no interval"),
    (45, 10, C.UNDERPOWERED, "rests on 35 bootstrap refits"),
    (50, 5, C.REPRODUCED, "interval over 45 of the held-out fits' bootstrap refits (5 failed)"),
])
def test_a_held_out_analysis_needs_refits_of_both_fits(kind, index, refits, failed, decision, words):
    """A resample counts only where both fits' refits succeeded: here the N-bar fit's first
    refits and the final-N fit's last ones failed, ``failed`` in all."""
    runs, fits = _nbar_study("average-params")
    n = refits or 0
    failing = {"average_params": range(failed - failed // 2), "final_params": range(n - failed // 2, n)}
    for role, fail in failing.items():
        block = fits[role]["heldout"][kind]
        fitted = [p["predicted"] for p in block["predictions"]]
        if refits is None:
            del block["refits"]
        else:
            block["refits"]["predicted"] = [None if i in fail else fitted for i in range(n)]
    held = C.average_params_law(runs, fits).analyses[index]
    assert held.decision == decision and words in held.numbers, held.numbers


def test_noisy_few_runs_are_underpowered_and_disagreeing_analyses_unstable():
    runs, fits = _nbar_study("average-params")
    # held-out predictions where the two laws err alike: an interval around 1 that reaches 0.9
    rng = np.random.default_rng(0)
    for role in ("average_params", "final_params"):
        block = fits[role]["heldout"]["kfold"]
        block["predictions"] = [{**p, "predicted": p["observed"] + rng.normal(0, 0.05)} for p in block["predictions"]]
        block["refits"]["predicted"] = [[p["predicted"] for p in block["predictions"]]] * 40
    claim = C.average_params_law(runs, fits)
    assert claim.analyses[2].decision == C.UNDERPOWERED
    assert claim.analyses[2].interval[0] <= 0.9 < claim.analyses[2].interval[1]
    assert claim.verdict == C.UNDERPOWERED
    # leave-one-scale-out now says the opposite of the dense-only transfer: unstable
    block = fits["average_params"]["heldout"]["leave_one_scale_out"]
    block["predictions"] = [{**p, "predicted": p["observed"] + 1.0} for p in block["predictions"]]
    block["refits"]["predicted"] = [[q + 1.0 for q in refit] for refit in block["refits"]["predicted"]]
    assert C.average_params_law(runs, fits).verdict == C.UNSTABLE


def test_missing_fits_mean_not_tested():
    claim = C.average_params_law(_ladder("average-params"), {})
    assert claim.verdict == C.NOT_TESTED


# ---------------------------------------------------------------------------------------- optimal sparsity

RISING = {"a_S": 3.0, "b_S": 0.8, "c_S": 0.5, "b_N": 0.3, "a_D": 3e7, "b_D": 0.35, "c": 1.5}


def _sparsity_fit(params: dict, spread: float = 0.0, n: int = 60, usable: bool = True) -> tuple[pd.DataFrame, dict]:
    runs = runs_table("sparsity", params, seed=0, noise=0.0, n_prunable=(2e6, 6e6, 2e7))
    runs["corpus"] = "c"
    rng = np.random.default_rng(0)
    samples = [{k: v * float(np.exp(rng.normal(0, spread))) for k, v in params.items()} for _ in range(n)]
    status = {"usable": usable, "reasons": [] if usable else ["exponent b_S = 5 sits on its bound"], "at_bounds": []}
    return runs, {"law": "sparsity", "params": params, "query": "corpus == 'c'", "status": status,
                  "columns": {"N": "n_final", "D": "tokens", "S": "sparsity", "loss": "final_val_loss"},
                  "bootstrap": {"samples": samples}}


def test_rising_optimal_sparsity_with_a_tight_bootstrap_is_reproduced():
    runs, fit = _sparsity_fit(RISING, spread=0.01)
    claim = C.optimal_sparsity_rises(runs, {"sparsity": fit})
    assert (claim.detail["change"] > 0.05).all() and (claim.detail["change_low"] > 0.05).all()
    assert claim.verdict == C.REPRODUCED


def test_a_wide_bootstrap_is_underpowered():
    runs, fit = _sparsity_fit(RISING, spread=0.6)
    claim = C.optimal_sparsity_rises(runs, {"sparsity": fit})
    assert claim.analyses[0].decision == C.REPRODUCED
    assert claim.analyses[1].decision == C.UNDERPOWERED == claim.verdict


def test_too_few_refits_for_a_95_percent_interval_decide_nothing():
    runs, fit = _sparsity_fit(RISING, spread=0.01, n=39)
    claim = C.optimal_sparsity_rises(runs, {"sparsity": fit})
    assert (claim.detail["change_low"] > 0.05).all()  # tight, but from 39 refits
    assert claim.analyses[1].decision == C.UNDERPOWERED == claim.verdict
    assert "rests on 39 bootstrap refits" in claim.ours and "needs at least 40" in claim.ours
    runs, fit = _sparsity_fit(RISING, spread=0.01, n=40)
    assert C.optimal_sparsity_rises(runs, {"sparsity": fit}).verdict == C.REPRODUCED


def test_no_gain_from_sparsity_is_not_reproduced():
    runs, fit = _sparsity_fit({**RISING, "a_S": 1e-9}, spread=0.01)
    claim = C.optimal_sparsity_rises(runs, {"sparsity": fit})
    assert np.allclose(claim.detail["change"], 0) and claim.verdict == C.NOT_REPRODUCED


def test_an_unusable_fit_is_underpowered_and_says_why():
    runs, fit = _sparsity_fit(RISING, usable=False)
    claim = C.optimal_sparsity_rises(runs, {"sparsity": fit})
    assert claim.verdict == C.UNDERPOWERED and "sits on its bound" in claim.ours


def test_the_change_is_read_over_64x_compute():
    runs, fit = _sparsity_fit(RISING)
    trend = C.sopt_trend(runs, fit)
    for _, g in trend.groupby("n_nonzero"):
        assert g["compute"].max() / g["compute"].min() == pytest.approx(64.0)


# ---------------------------------------------------------------------------------------- entropy


@pytest.mark.parametrize(
    "E,best_run,verdict",
    [(1.95, 2.00, C.REPRODUCED),  # within 5% and closer to H than any run
     (1.97, 1.95, C.UNDERPOWERED),  # within 5%, but a run is already closer: the law added nothing
     (1.50, 2.00, C.NOT_REPRODUCED)],
)
def test_entropy_verdict_needs_the_law_to_extrapolate(E, best_run, verdict):
    H = 1.92
    runs = pd.DataFrame({"corpus": ["syn", "syn", "text"], "final_val_loss": [best_run + 0.1, best_run, 1.0]})
    fit = {"query": "corpus == 'syn'", "law": "chinchilla", "params": {"E": E, "A": 1, "B": 1, "alpha": 1, "beta": 1},
           "ci": {"E": [E - 0.01, E + 0.01]}}
    claim = C.entropy_matches(runs, {"synthetic": fit}, {"syn": H})
    assert claim.verdict == verdict
    assert f"best run {best_run:.4f}" in claim.ours


@pytest.mark.parametrize(
    "E,ci,verdict",
    [(2.86, [2.37, 3.01], C.UNDERPOWERED),  # the tiny study: far from H, but an interval wider than the band
     (1.95, [0.0, 1.96], C.UNDERPOWERED),  # close to H, but the data do not pin E from below
     (1.95, None, C.UNDERPOWERED),  # no refits: no error to judge with
     (2.86, [2.80, 2.90], C.NOT_REPRODUCED)],  # far from H and pinned
)
def test_an_entropy_estimate_wider_than_the_band_is_underpowered(E, ci, verdict):
    H = 1.92  # band: 5% of H = 0.096 nats
    runs = pd.DataFrame({"corpus": ["syn"], "final_val_loss": [3.1]})
    fit = {"query": "corpus == 'syn'", "law": "chinchilla", "params": {"E": E, "A": 1, "B": 1, "alpha": 1, "beta": 1}}
    if ci:
        fit["ci"] = {"E": ci}
    claim = C.entropy_matches(runs, {"synthetic": fit}, {"syn": H})
    assert claim.verdict == verdict
    if ci and verdict == C.UNDERPOWERED:
        assert f"half-width {(ci[1] - ci[0]) / 2:.3f}" in claim.ours and "0.096-nat band" in claim.ours


@pytest.mark.parametrize("refits,failed,verdict", [(5, 0, C.UNDERPOWERED), (45, 6, C.UNDERPOWERED), (45, 5, C.NOT_REPRODUCED)])
def test_an_entropy_interval_needs_refits_in_both_tails(refits, failed, verdict):
    """The tiny profile's synthetic fit: E far from H with a tight interval from 5 refits."""
    H = 1.92
    runs = pd.DataFrame({"corpus": ["syn"], "final_val_loss": [3.13]})
    fit = {"query": "corpus == 'syn'", "law": "chinchilla", "params": {"E": 2.97, "A": 1, "B": 1, "alpha": 1, "beta": 1},
           "ci": {"E": [2.82, 3.01]}, "bootstrap": {"n_boot": refits, "n_failed": failed}}
    claim = C.entropy_matches(runs, {"synthetic": fit}, {"syn": H})
    assert claim.verdict == verdict
    if verdict == C.UNDERPOWERED:
        assert f"rests on {refits - failed} bootstrap refits" in claim.ours
