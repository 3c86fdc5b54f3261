"""Evaluating a law never overflows or warns, for any parameters its fit can reach; a fit
whose shape the data do not determine says so.

Each test turns numpy's floating-point warnings into errors itself (besides the project-wide
filters in pyproject.toml), so it fails wherever a law overflows, not on some machines only.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparsescale.laws import uncertainty
from sparsescale.laws.chinchilla import THETA_BOUNDS as CHINCHILLA_BOUNDS
from sparsescale.laws.chinchilla import ChinchillaLaw
from sparsescale.laws.cli import fit_table
from sparsescale.laws.sparsity import THETA_BOUNDS as SPARSITY_BOUNDS
from sparsescale.laws.sparsity import SparsityLaw
from sparsescale.laws.synthetic import runs_table

# The 18 runs (seed 0, dense + uniform cubic) of the tiny study on which the sparsity fit ran
# to b_S = -264 and b_D = 21 and every evaluation of it overflowed (issue 14).
TINY_SPARSITY_RUNS = Path(__file__).parent / "data" / "tiny_sparsity_runs.csv"


@contextlib.contextmanager
def strict_floats():
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error", RuntimeWarning)
        yield


def _box_samples(bounds, n: int, seed: int) -> np.ndarray:
    """``n`` points of the box: its corners first (where overflow lives), then uniform draws."""
    lo, hi = np.array(bounds, float).T
    rng = np.random.default_rng(seed)
    corners = np.array([[lo[i] if (k >> i) & 1 else hi[i] for i in range(len(lo))] for k in range(2 ** len(lo))])
    return np.vstack([corners, rng.uniform(lo, hi, (n, len(lo)))])


def _sparsity_law(theta: np.ndarray, d_ref: float) -> SparsityLaw:
    la_s, b_s, lc_s, b_n, la_d, b_d, lc = theta
    return SparsityLaw().set_params(d_ref=d_ref, a_S=math.exp(la_s), b_S=b_s, c_S=math.exp(lc_s), b_N=b_n,
                                    a_D=math.exp(la_d) * d_ref, b_D=b_d, c=math.exp(lc))


def test_sparsity_law_is_finite_everywhere_in_its_box():
    s = np.array([0.0, 0.5, 0.9, 0.99])[:, None, None]
    n = np.geomspace(1e3, 1e12, 4)[None, :, None]
    d = np.geomspace(1e3, 1e14, 5)[None, None, :]
    for theta in _box_samples(SPARSITY_BOUNDS, 200, seed=0):
        law = _sparsity_law(theta, d_ref=3e6)
        with strict_floats():
            loss = law.loss(s, n, d)
            opt = law.optimal_sparsity(np.geomspace(1e4, 1e9, 3)[:, None], np.geomspace(1e12, 1e22, 4)[None, :])
            mult = law.effective_multiplier([0.0, 0.5, 0.9])
            law.derived(n_values=[1e5, 1e6], compute=[1e13, 1e16])
        assert np.all(np.isfinite(loss)) and np.all(loss > 0), theta
        assert np.all(np.isfinite(opt["loss"])) and np.all((opt["s_opt"] >= 0) & (opt["s_opt"] <= 0.99))
        assert not np.any(np.isnan(mult)) or theta[3] == 0  # undefined only without a size term


def test_chinchilla_law_is_finite_everywhere_in_its_box():
    n = np.geomspace(1e3, 1e12, 6)
    d = np.geomspace(1e3, 1e14, 6)
    for theta in _box_samples(CHINCHILLA_BOUNDS, 200, seed=1):
        law = ChinchillaLaw().set_params(**ChinchillaLaw.theta_to_params(theta))
        with strict_floats():
            pred = law.predict(N=n, D=d)
            terms = law.terms(n[:, None], d[None, :])
            if law.params["alpha"] > 0 and law.params["beta"] > 0:
                law.compute_optimal(np.geomspace(1e10, 1e25, 4))
                law.derived_scalars(compute=[1e15, 1e20])
        assert not np.any(np.isnan(pred)) and np.all(pred > 0)
        assert not any(np.any(np.isnan(v)) for v in terms.values())


@pytest.mark.parametrize("law_name", ["sparsity", "chinchilla"])
def test_fit_of_the_tiny_study_evaluates_without_warnings(law_name):
    """The data that broke it: fit, bootstrap, held-out refits and every derived quantity.
    The refits run in two forked workers, which inherit ``strict_floats``; a warning there
    fails the test as it would in one process."""
    runs = pd.read_csv(TINY_SPARSITY_RUNS)
    with strict_floats():
        fit = fit_table(runs, law_name, bootstrap=20, heldout_refits=20, kfold=3, workers=2)
    assert all(math.isfinite(v) for v in fit["params"].values())
    if law_name == "sparsity":
        law = SparsityLaw().set_params(d_ref=fit["fit_procedure"]["d_ref"], **fit["params"])
        with strict_floats():
            law.loss(np.linspace(0, 0.99, 50), 3e4, np.geomspace(1e4, 1e9, 50))


def _exp(x: float) -> float:
    return float(np.exp(np.float64(x)))


@pytest.mark.parametrize("workers", [1, 2])
def test_an_overflow_in_a_refit_worker_fails_the_caller(workers):
    """What lets the tests above run refits in forked workers: ``strict_floats`` holds there too."""
    with strict_floats(), pytest.raises(FloatingPointError, match="overflow"):
        uncertainty.run_tasks(_exp, [(1.0,), (1000.0,)], workers=workers)


def test_refit_workers_are_forked_processes_where_the_platform_can_fork(monkeypatch):
    import multiprocessing
    import os

    assert set(uncertainty.run_tasks(os.getpid, [(), ()], workers=2)).isdisjoint({os.getpid()})
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # Windows
    assert uncertainty.run_tasks(os.getpid, [(), ()], workers=2) == [os.getpid()] * 2


def test_usable_cpus_without_an_affinity_mask(monkeypatch):
    import os

    if hasattr(os, "sched_getaffinity"):
        assert uncertainty.usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert uncertainty.usable_cpus() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert uncertainty.usable_cpus() == 1


def test_a_fit_the_data_cannot_shape_is_reported_unusable():
    runs = pd.read_csv(TINY_SPARSITY_RUNS)
    law = SparsityLaw().fit(runs)
    assert law.status["usable"] is False
    assert any("sits on its bound" in r for r in law.status["reasons"]), law.status
    fit = fit_table(runs, "sparsity", bootstrap=0, kfold=0)
    assert fit["status"]["usable"] is False and fit["status"]["reasons"]


def test_a_well_posed_fit_is_usable():
    frame = runs_table("sparsity", seed=0, noise=0.01)
    law = SparsityLaw().fit(frame)
    assert law.status == {"usable": True, "reasons": [], "at_bounds": []}


def test_refits_do_not_depend_on_the_number_of_workers():
    frame = runs_table("average-params", seed=3, noise=0.03)
    law = ChinchillaLaw(n_refine=32).fit(frame)
    one = uncertainty.bootstrap(law, frame, n_boot=12, seed=5, workers=1, set_ci=False)
    two = uncertainty.bootstrap(law, frame, n_boot=12, seed=5, workers=2, set_ci=False)
    pd.testing.assert_frame_equal(one["samples"], two["samples"])
    held_one = uncertainty.heldout(law, frame, k=3, workers=1, refits=12)
    held_two = uncertainty.heldout(law, frame, k=3, workers=2, refits=12)
    assert held_one["kfold"]["mae"] == held_two["kfold"]["mae"]
    assert held_one["leave_one_scale_out"]["mae"] == held_two["leave_one_scale_out"]["mae"]
    for kind in ("leave_one_scale_out", "kfold"):
        assert held_one[kind]["refits"] == held_two[kind]["refits"]
