"""Derived quantities and comparisons built on the fitted laws.

- ``compute_grid`` / ``size_grid``: a few compute or size values spanning a data set, for
  the compute-optimal allocation and the optimal-sparsity table in a fit JSON.
- ``compare_parameter_counts``: paper A's comparison. On the same runs, fit
  (1) the average-parameter law (N = N-bar, column ``n_avg``) on dense and sparse runs,
  (2) the same form with the final non-zero count (``n_final``) on dense and sparse runs,
  (3) a dense-only fit (dense runs only; N-bar = final N for them),
  and report each fit's prediction errors on the sparse runs (the dense-only fit is
  evaluated with both N-bar and final N as its N). Optionally also k-fold errors on all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sparsescale.io import InputError


def make_law(name: str, **kwargs: Any):
    """A law object by CLI name: chinchilla | average-params | recovery | sparsity."""
    from sparsescale.laws.chinchilla import AverageParamsLaw, ChinchillaLaw
    from sparsescale.laws.recovery import RecoveryLaw
    from sparsescale.laws.sparsity import SparsityLaw

    laws = {"chinchilla": ChinchillaLaw, "average-params": AverageParamsLaw, "recovery": RecoveryLaw,
            "sparsity": SparsityLaw}
    if name not in laws:
        raise InputError(f"unknown law {name!r}; choose from {', '.join(laws)}")
    return laws[name](**kwargs)


def compute_grid(n: np.ndarray, d: np.ndarray, count: int = 4, dense_factor: np.ndarray | None = None) -> np.ndarray:
    """``count`` log-spaced compute values from the smallest to the largest C = 6 N D in the
    data (times ``dense_factor`` = 1 / (1 - S) for the dense-equivalent cost)."""
    c = 6.0 * np.asarray(n, float) * np.asarray(d, float)
    if dense_factor is not None:
        c = c * dense_factor
    lo, hi = float(np.min(c)), float(np.max(c))
    if hi <= lo:
        return np.array([lo])
    return np.geomspace(lo, hi, count)


def size_grid(n: np.ndarray, count: int = 3) -> np.ndarray:
    lo, hi = float(np.min(n)), float(np.max(n))
    if hi <= lo:
        return np.array([lo])
    return np.geomspace(lo, hi, count)


def sparse_mask(frame: pd.DataFrame, method_col: str = "method", s_col: str = "sparsity") -> np.ndarray:
    """Sparse runs: ``method != 'dense'`` when a method column exists, else sparsity > 0."""
    if method_col in frame.columns:
        return (frame[method_col].astype(str) != "dense").to_numpy()
    if s_col in frame.columns:
        return (frame[s_col].to_numpy(float) > 0)
    raise InputError(f"cannot tell sparse from dense runs: no column {method_col!r} or {s_col!r}")


def compare_parameter_counts(frame: pd.DataFrame, *, n_avg_col: str = "n_avg", n_final_col: str = "n_final",
                             d_col: str = "tokens", loss_col: str = "final_val_loss",
                             method_col: str = "method", s_col: str = "sparsity",
                             law_kwargs: dict | None = None) -> dict:
    """Fit N-bar, final-N and dense-only Chinchilla laws; errors on the sparse runs.

    Returns ``{"table": DataFrame(fit, fitted_on, n_used_for_prediction, n_sparse, mae, rmse,
    bias, max_abs), "fits": {name: law}}``. Errors are predicted minus observed, in loss.
    """
    from sparsescale.laws.chinchilla import ChinchillaLaw

    law_kwargs = law_kwargs or {}
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    sparse = sparse_mask(frame, method_col, s_col)
    if not sparse.any():
        raise InputError("no sparse runs to compare on")
    dense_rows = frame.iloc[np.flatnonzero(~sparse)]
    sparse_rows = frame.iloc[np.flatnonzero(sparse)]
    fits = {
        "average_params": ChinchillaLaw(n_col=n_avg_col, d_col=d_col, loss_col=loss_col, **law_kwargs).fit(frame),
        "final_params": ChinchillaLaw(n_col=n_final_col, d_col=d_col, loss_col=loss_col, **law_kwargs).fit(frame),
    }
    if len(dense_rows) >= 5:
        fits["dense_only"] = ChinchillaLaw(n_col=n_final_col, d_col=d_col, loss_col=loss_col, **law_kwargs).fit(dense_rows)
    obs = sparse_rows[loss_col].to_numpy(float)
    rows = []

    def add(name: str, fitted_on: str, law: ChinchillaLaw, n_col: str) -> None:
        pred = law.predict({"N": sparse_rows[n_col].to_numpy(float), "D": sparse_rows[d_col].to_numpy(float)})
        err = pred - obs
        rows.append({"fit": name, "fitted_on": fitted_on, "n_used_for_prediction": n_col,
                     "n_sparse": int(len(obs)), "mae": float(np.mean(np.abs(err))),
                     "rmse": float(np.sqrt(np.mean(err ** 2))), "bias": float(np.mean(err)),
                     "max_abs": float(np.max(np.abs(err)))})

    add("average_params", "dense+sparse", fits["average_params"], n_avg_col)
    add("final_params", "dense+sparse", fits["final_params"], n_final_col)
    if "dense_only" in fits:
        add("dense_only", "dense", fits["dense_only"], n_avg_col)
        add("dense_only", "dense", fits["dense_only"], n_final_col)
    return {"table": pd.DataFrame(rows), "fits": fits}


