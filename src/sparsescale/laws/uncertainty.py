"""Uncertainty and held-out checks for any fitted ``Law``.

- ``bootstrap``: resample runs (rows) with replacement ``n_boot`` times (seeded) and refit
  each resample; percentile intervals for every coefficient and for derived quantities.
  A bootstrap refit starts from the full-data optimum and the few best optima of the full
  fit (``law.warm_starts``) instead of rerunning the full initialisation grid; this is the
  usual cheap refit and keeps B = 1000 practical.
- ``leave_one_scale_out``: fit on every smaller scale, predict the largest; with ``refits``,
  also that fit's bootstrap refits and their predictions, since every held-out error comes
  from this one fit and an interval over the held-out runs alone would treat it as exact.
- ``kfold``: k-fold cross-validation (seeded shuffle); out-of-fold MAE and RMSE in loss.
  With ``refits``, each fold's fit is refitted the same way; refit i of the k-fold
  predictions takes refit i of every fold's fit, since each fold's errors come from one fit.
Both also return every held-out run's observed and predicted loss (``predictions``).
Held-out fits rerun the law's full fitting procedure (no warm start), so nothing from the
held-out points leaks into the fit.

Refits are independent, so each function takes ``workers``: with more than one they run in
that many processes (``benchmarks/fit_speed.py`` measures the gain); results do not depend
on it. Anything that takes more than a few seconds logs its progress.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import numpy as np
import pandas as pd

from sparsescale.io import InputError, get_logger
from sparsescale.laws.base import Law, n_rows, subset

log = get_logger("sparsescale.fit")
PROGRESS_EVERY_S = 3.0


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the platform has one (Linux, so
    a SLURM allocation or ``taskset`` counts), else the machine's count (macOS, Windows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_tasks(fn: Callable, tasks: list, workers: int = 1, label: str = "refits") -> list:
    """``[fn(*task) for task in tasks]``, in ``workers`` processes when > 1 and the platform
    can fork (not Windows), in task order, logging progress every few seconds."""
    started = last = time.perf_counter()
    results: list = [None] * len(tasks)

    def progress(done: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S and done < len(tasks):
            log.info("%s: %d/%d done (%.0f s)", label, done, len(tasks), now - started)
            last = now

    if workers <= 1 or len(tasks) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for i, task in enumerate(tasks):
            results[i] = fn(*task)
            progress(i + 1)
        return results
    # fork: workers inherit the imported libraries instead of importing them again (about 1 s)
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(fn, *task) for task in tasks]
        for i, future in enumerate(futures):
            results[i] = future.result()
            progress(i + 1)
    return results



def _percentile_ci(samples: np.ndarray, level: float) -> list[float]:
    good = samples[np.isfinite(samples)]
    if len(good) == 0:
        return [math.nan, math.nan]
    lo, hi = np.quantile(good, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def _bootstrap_refits(law: Law, data: Any, resamples: list[np.ndarray], derived_kwargs: dict,
                      predict_on: Any = None) -> list:
    """Warm refits of ``law`` on each resample: ``(params, derived scalars, predictions on
    predict_on or None)``, or None (failed)."""
    out = []
    for idx in resamples:
        try:
            fit = law.clone().refit_warm(subset(data, idx), law)
        except (InputError, np.linalg.LinAlgError):
            out.append(None)
            continue
        if not math.isfinite(fit.fit_loss):
            out.append(None)
            continue
        try:
            derived = fit.derived_scalars(**derived_kwargs)
        except ValueError:  # no derived quantity for this refit (e.g. a non-positive exponent)
            derived = {}
        out.append((fit.params, derived, None if predict_on is None else fit.predict(predict_on)))
    return out


def _resample_refits(law: Law, data: Any, n_boot: int, seed: int, workers: int = 1,
                     derived_kwargs: dict | None = None, predict_on: Any = None) -> list:
    """``_bootstrap_refits`` on ``n_boot`` resamples of ``data``'s rows, in resample order.
    The resamples are drawn up front from ``seed``: the result does not depend on
    ``workers``, and two laws fitted on the same rows get the same resamples (so their
    refits pair up)."""
    n = n_rows(data)
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, n, n) for _ in range(int(n_boot))]
    chunks = [resamples[i::10] for i in range(min(10, len(resamples)))]  # 10 tasks: progress and balance
    done = run_tasks(_bootstrap_refits, [(law, data, chunk, derived_kwargs or {}, predict_on) for chunk in chunks],
                     workers, f"bootstrap ({n_boot} resamples)")
    return [done[i % len(chunks)][i // len(chunks)] for i in range(len(resamples))]


def bootstrap(law: Law, data: Any, n_boot: int = 200, seed: int = 0, level: float = 0.95,
              derived_kwargs: dict | None = None, set_ci: bool = True, workers: int = 1) -> dict:
    """Bootstrap over runs. ``law`` must already be fitted on ``data``.

    Returns ``{"n_boot", "n_failed", "level", "ci": {param: [lo, hi]},
    "derived_ci": {name: [lo, hi]}, "samples": DataFrame}`` and, with ``set_ci``, stores
    the coefficient intervals on ``law.ci`` (shown by ``parameter_table``). The result does
    not depend on ``workers`` (``_resample_refits``).
    """
    if law.theta_ is None:
        raise RuntimeError("bootstrap needs a fitted law")
    fits = _resample_refits(law, data, n_boot, seed, workers, derived_kwargs)
    failed = sum(f is None for f in fits)
    rows = [f[0] for f in fits if f is not None]
    drows = [f[1] for f in fits if f is not None]
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


def _predictions(data: Any, rows: np.ndarray, obs: np.ndarray, pred: np.ndarray) -> list[dict]:
    """Per-run held-out predictions (keyed by run_id where the table has one), so a later
    analysis can compare two laws run by run."""
    ids = data["run_id"].to_numpy()[rows] if isinstance(data, pd.DataFrame) and "run_id" in data.columns else rows
    return [{"run_id": _plain(i), "observed": float(o), "predicted": float(p)} for i, o, p in zip(ids, obs, pred)]


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


def _fit_predict(law: Law, data: Any, train_idx: np.ndarray, test_idx: np.ndarray) -> tuple[Law, np.ndarray]:
    """A full fit (no warm start) on the training rows, and its predictions on the test rows."""
    fit = law.clone().fit(subset(data, train_idx))
    return fit, fit.predict(subset(data, test_idx))


def _loso_split(law: Law, data: Any, scale_col: str | None) -> dict:
    key_name, keys, order = scale_groups(data, law, scale_col)
    if len(order) < 2:
        return {"skipped": f"only one scale in column {key_name!r}", "scale_column": key_name}
    largest = order[-1]
    test = keys == largest
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    if len(train_idx) < len(law.param_names):
        return {"skipped": f"{len(train_idx)} points below the largest scale, fewer than "
                           f"{len(law.param_names)} parameters", "scale_column": key_name}
    return {"scale_column": key_name, "held_out_scale": _plain(largest),
            "train_scales": [_plain(u) for u in order[:-1]], "train_idx": train_idx, "test_idx": test_idx}


def _heldout_refits(fitted: list[Law], data: Any, trains: list[np.ndarray], tests: list[np.ndarray], refits: int,
                    seed: int, workers: int) -> dict:
    """``refits`` bootstrap refits of each held-out fit (``fitted[j]``, fitted on rows
    ``trains[j]``, predicting rows ``tests[j]``). Refit i predicts every held-out run with
    refit i of each fit, in the order of ``tests`` concatenated, or is None where any of them
    failed. Fit j draws its resamples from ``seed + j``: two laws held out on the same rows
    get the same resamples, so their refits pair up."""
    per_fit = [_resample_refits(fit, subset(data, train), refits, seed + j, workers, predict_on=subset(data, test))
               for j, (fit, train, test) in enumerate(zip(fitted, trains, tests))]
    predicted = [None if any(r is None for r in refit) else [float(p) for r in refit for p in r[2]]
                 for refit in zip(*per_fit)]
    return {"n_boot": int(refits), "n_failed": sum(p is None for p in predicted), "seed": seed,
            "method": "percentile bootstrap over the training runs, warm refits of the held-out fits",
            # per refit, in resample order, its predictions for the held-out runs (in ``predictions`` order)
            "predicted": predicted}


def _loso_result(law: Law, data: Any, split: dict, fitted: tuple[Law, np.ndarray], refits: int = 0,
                 seed: int = 0, workers: int = 1) -> dict:
    fit, pred = fitted
    obs = law.extract(subset(data, split["test_idx"]))["L"]
    out = _errors(pred, obs)
    out.update({k: v for k, v in split.items() if not k.endswith("_idx")})
    out.update({"n_train": int(len(split["train_idx"])), "n_test": int(len(split["test_idx"])),
                "fit_params": fit.params, "predictions": _predictions(data, split["test_idx"], obs, pred)})
    if refits:
        out["refits"] = _heldout_refits([fit], data, [split["train_idx"]], [split["test_idx"]], refits, seed, workers)
    return out


def leave_one_scale_out(law: Law, data: Any, scale_col: str | None = "scale", refits: int = 0, seed: int = 0,
                        workers: int = 1) -> dict:
    """Fit on all scales but the largest, predict the largest: errors in loss units. With
    ``refits`` > 0, that many bootstrap refits of the held-out fit and their predictions
    (``refits.predicted``; None for a refit that failed)."""
    split = _loso_split(law, data, scale_col)
    if "skipped" in split:
        return split
    return _loso_result(law, data, split, _fit_predict(law, data, split["train_idx"], split["test_idx"]),
                        refits, seed, workers)


def _kfold_split(law: Law, data: Any, k: int, seed: int) -> dict:
    n = n_rows(data)
    k = int(k)
    if k < 2:
        raise InputError(f"kfold needs k >= 2, got {k}")
    k = min(k, n)
    folds = np.array_split(np.random.default_rng(seed).permutation(n), k)
    trains = [np.setdiff1d(np.arange(n), fold) for fold in folds]
    if min(len(t) for t in trains) < len(law.param_names):
        return {"skipped": f"a training fold has {min(len(t) for t in trains)} points, fewer than "
                           f"{len(law.param_names)} parameters", "k": k}
    return {"k": k, "n": n, "seed": seed, "folds": folds, "trains": trains}


def _kfold_result(law: Law, data: Any, split: dict, fitted: list[tuple[Law, np.ndarray]], refits: int = 0,
                  workers: int = 1) -> dict:
    # predictions in fold order, so that they line up with the refits' (``_heldout_refits``)
    rows = np.concatenate(split["folds"])
    pred = np.concatenate([fold_pred for _, fold_pred in fitted])
    obs = law.extract(subset(data, rows))["L"]
    out = _errors(pred, obs)
    out.update({"k": split["k"], "n": split["n"], "seed": split["seed"],
                "predictions": _predictions(data, rows, obs, pred)})
    if refits:
        out["refits"] = _heldout_refits([fit for fit, _ in fitted], data, split["trains"], split["folds"], refits,
                                        split["seed"], workers)
    return out


def kfold(law: Law, data: Any, k: int = 5, seed: int = 0, refits: int = 0, workers: int = 1) -> dict:
    """k-fold cross-validation over runs: out-of-fold MAE and RMSE in loss. With ``refits``
    > 0, that many bootstrap refits of every fold's fit and their predictions."""
    split = _kfold_split(law, data, k, seed)
    if "skipped" in split:
        return split
    fitted = [_fit_predict(law, data, train, fold) for train, fold in zip(split["trains"], split["folds"])]
    return _kfold_result(law, data, split, fitted, refits, workers)


def window_keys(data: Any, window_cols: tuple[str, str] = ("start", "end")) -> np.ndarray | None:
    """Each row's pruning window as "start-end" (None for runs never pruned), or None when
    the table has no window columns."""
    if not isinstance(data, pd.DataFrame) or not set(window_cols) <= set(data.columns):
        return None
    start, end = (data[c].to_numpy(float) for c in window_cols)
    pruned = np.isfinite(start) & np.isfinite(end)
    return np.array([f"{a:.4g}-{b:.4g}" if p else None for a, b, p in zip(start, end, pruned)], dtype=object)


def leave_one_window_out(law: Law, data: Any, window_cols: tuple[str, str] = ("start", "end"),
                         workers: int = 1) -> dict:
    """For each pruning window (start, end) in the runs: a full fit on every run of the other
    windows (and the dense runs), predicting the runs of that window. How a law ranks
    schedules it has not seen: the planner's question. Skipped with fewer than 3 windows."""
    keys = window_keys(data, window_cols)
    windows = [] if keys is None else sorted({k for k in keys if k is not None})
    if len(windows) < 3:
        return {"skipped": f"{len(windows)} pruning windows in columns {list(window_cols)}: need at least 3"}
    tests = [np.flatnonzero(keys == w) for w in windows]
    trains = [np.flatnonzero(keys != w) for w in windows]
    if min(len(t) for t in trains) < len(law.param_names):
        return {"skipped": f"a training set has {min(len(t) for t in trains)} points, fewer than "
                           f"{len(law.param_names)} parameters"}
    fitted = run_tasks(_fit_predict, [(law, data, train, test) for train, test in zip(trains, tests)], workers,
                       f"leave one window out ({len(windows)} full fits)")
    rows = np.concatenate(tests)
    pred = np.concatenate([p for _, p in fitted])
    obs = law.extract(subset(data, rows))["L"]
    return {**_errors(pred, obs), "windows": windows, "window_columns": list(window_cols),
            "predictions": _predictions(data, rows, obs, pred)}


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def heldout(law: Law, data: Any, k: int = 5, seed: int = 0, scale_col: str | None = "scale",
            workers: int = 1, refits: int = 0) -> dict:
    """Leave-one-scale-out and (``k`` > 0) k-fold errors, each with ``refits`` bootstrap
    refits of its fits; the fits run in ``workers`` processes."""
    loso = _loso_split(law, data, scale_col)
    folds = _kfold_split(law, data, k, seed) if k else None
    tasks = [] if "skipped" in loso else [(law, data, loso["train_idx"], loso["test_idx"])]
    if folds is not None and "skipped" not in folds:
        tasks += [(law, data, train, fold) for train, fold in zip(folds["trains"], folds["folds"])]
    fitted = run_tasks(_fit_predict, tasks, workers, f"held-out refits ({len(tasks)} full fits)")
    if "skipped" not in loso:
        loso, fitted = _loso_result(law, data, loso, fitted[0], refits, seed, workers), fitted[1:]
    if folds is not None and "skipped" not in folds:
        folds = _kfold_result(law, data, folds, fitted, refits, workers)
    return {"leave_one_scale_out": loso, "kfold": folds}


