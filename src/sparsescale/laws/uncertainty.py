"""Uncertainty and held-out checks for any fitted ``Law``.

- ``bootstrap``: resample runs (rows) with replacement ``n_boot`` times (seeded) and refit
  each resample; percentile intervals for every coefficient and for derived quantities.
  A bootstrap refit starts from the full-data optimum and the few best optima of the full
  fit (``law.warm_starts``) instead of rerunning the full initialisation grid; this is the
  usual cheap refit and keeps B = 1000 practical.
- ``leave_one_scale_out``: fit on every smaller scale, predict the largest.
- ``kfold``: k-fold cross-validation (seeded shuffle); out-of-fold MAE and RMSE in loss.
Held-out fits rerun the law's full fitting procedure (no warm start), so nothing from the
held-out points leaks into the fit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sparsescale.io import InputError
from sparsescale.laws.base import Law, n_rows, subset



def _percentile_ci(samples: np.ndarray, level: float) -> list[float]:
    good = samples[np.isfinite(samples)]
    if len(good) == 0:
        return [math.nan, math.nan]
    lo, hi = np.quantile(good, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def bootstrap(law: Law, data: Any, n_boot: int = 200, seed: int = 0, level: float = 0.95,
              derived_kwargs: dict | None = None, set_ci: bool = True) -> dict:
    """Bootstrap over runs. ``law`` must already be fitted on ``data``.

    Returns ``{"n_boot", "n_failed", "level", "ci": {param: [lo, hi]},
    "derived_ci": {name: [lo, hi]}, "samples": DataFrame}`` and, with ``set_ci``, stores
    the coefficient intervals on ``law.ci`` (shown by ``parameter_table``).
    """
    if law.theta_ is None:
        raise RuntimeError("bootstrap needs a fitted law")
    n = n_rows(data)
    rng = np.random.default_rng(seed)
    derived_kwargs = derived_kwargs or {}
    rows, drows, failed = [], [], 0
    for i in range(int(n_boot)):
        idx = rng.integers(0, n, n)
        try:
            fit = law.clone().refit_warm(subset(data, idx), law)
        except (InputError, FloatingPointError, np.linalg.LinAlgError):
            failed += 1
            continue
        if not math.isfinite(fit.fit_loss):
            failed += 1
            continue
        rows.append(fit.params)
        try:
            drows.append(fit.derived_scalars(**derived_kwargs))
        except (ValueError, ZeroDivisionError, FloatingPointError):
            drows.append({})
    samples = pd.DataFrame(rows, columns=list(law.param_names))
    derived = pd.DataFrame(drows)
    ci = {p: _percentile_ci(samples[p].to_numpy(float), level) for p in law.param_names}
    derived_ci = {c: _percentile_ci(derived[c].to_numpy(float), level) for c in derived.columns}
    if set_ci:
        law.ci = ci
    return {"n_boot": int(n_boot), "n_failed": failed, "level": level, "ci": ci,
            "derived_ci": derived_ci, "samples": samples, "method":
            "percentile bootstrap over runs; refits warm-started from the full-data optimum"}


def _errors(pred: np.ndarray, obs: np.ndarray) -> dict[str, float]:
    err = pred - obs
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "bias": float(np.mean(err)), "max_abs": float(np.max(np.abs(err)))}


def scale_groups(data: Any, law: Law, scale_col: str | None = "scale") -> tuple[str, np.ndarray, list]:
    """The scale of each row and the scales ordered smallest to largest.

    A scale is a distinct value of ``scale_col`` if that column exists, else of the dense
    parameter count ``n_prunable`` if present, else of the law's N. Scales are ordered by the
    median of ``n_prunable`` (or N) of their rows.
    """
    cols = data.columns if isinstance(data, pd.DataFrame) else list(data.keys())
    size_col = "n_prunable" if "n_prunable" in cols else None
    size = (np.asarray(data[size_col], float) if size_col else law.extract(data, with_loss=False)["N"])
    if scale_col and scale_col in cols:
        key_name, keys = scale_col, np.asarray(data[scale_col])
    elif size_col:
        key_name, keys = size_col, size
    else:
        key_name, keys = law.columns["N"], size
    uniq = list(pd.unique(pd.Series(keys)))
    med = {u: float(np.median(size[keys == u])) for u in uniq}
    return key_name, keys, sorted(uniq, key=lambda u: med[u])


def leave_one_scale_out(law: Law, data: Any, scale_col: str | None = "scale") -> dict:
    """Fit on all scales but the largest, predict the largest: errors in loss units."""
    key_name, keys, order = scale_groups(data, law, scale_col)
    if len(order) < 2:
        return {"skipped": f"only one scale in column {key_name!r}", "scale_column": key_name}
    largest = order[-1]
    test = keys == largest
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    if len(train_idx) < len(law.param_names):
        return {"skipped": f"{len(train_idx)} points below the largest scale, fewer than "
                           f"{len(law.param_names)} parameters", "scale_column": key_name}
    fit = law.clone().fit(subset(data, train_idx))
    test_data = subset(data, test_idx)
    obs = fit.extract(test_data)["L"]
    out = _errors(fit.predict(test_data), obs)
    out.update({"scale_column": key_name, "held_out_scale": _plain(largest),
                "train_scales": [_plain(u) for u in order[:-1]],
                "n_train": int(len(train_idx)), "n_test": int(len(test_idx)),
                "fit_params": fit.params})
    return out


def kfold(law: Law, data: Any, k: int = 5, seed: int = 0) -> dict:
    """k-fold cross-validation over runs: out-of-fold MAE and RMSE in loss."""
    n = n_rows(data)
    k = int(k)
    if k < 2:
        raise InputError(f"kfold needs k >= 2, got {k}")
    k = min(k, n)
    folds = np.array_split(np.random.default_rng(seed).permutation(n), k)
    pred = np.full(n, np.nan)
    obs = law.extract(data)["L"]
    for fold in folds:
        train = np.setdiff1d(np.arange(n), fold)
        if len(train) < len(law.param_names):
            return {"skipped": f"a training fold has {len(train)} points, fewer than "
                               f"{len(law.param_names)} parameters", "k": k}
        fit = law.clone().fit(subset(data, train))
        pred[fold] = fit.predict(subset(data, fold))
    out = _errors(pred, obs)
    out.update({"k": k, "n": n, "seed": seed})
    return out


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def heldout(law: Law, data: Any, k: int = 5, seed: int = 0, scale_col: str | None = "scale") -> dict:
    return {"leave_one_scale_out": leave_one_scale_out(law, data, scale_col),
            "kfold": kfold(law, data, k, seed) if k else None}


