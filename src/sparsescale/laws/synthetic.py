"""Synthetic runs tables generated from known coefficients (tests, benchmarks, examples).

The tables look like ``results/aggregate/runs.csv``: run_id, scale, method, sparsity,
n_prunable, n_final, n_avg, tokens, final_val_loss. Noise is multiplicative log-normal
(``noise`` = standard deviation of log loss, e.g. 0.02 for about 2 %).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def mean_density(final_sparsity: np.ndarray, start: float = 0.25, end: float = 0.75) -> np.ndarray:
    """Mean density over training for a geometric prune from ``start`` to ``end`` (fractions
    of training), dense before and at the final density after."""
    d = 1.0 - np.asarray(final_sparsity, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        during = np.where(d < 1.0, (1.0 - d) / np.log(1.0 / np.where(d < 1, d, 0.5)), 1.0)
    return start + (end - start) * during + (1.0 - end) * d


def runs_table(law: str = "average-params", params: dict | None = None, *, seed: int = 0,
               noise: float = 0.02, n_prunable=(2e6, 6e6, 2e7, 6e7, 2e8),
               tokens_per_param=(5, 20, 80), sparsities=(0.0, 0.5, 0.75, 0.875),
               d_ref: float = 1.0) -> pd.DataFrame:
    """One run per (scale, tokens-per-param, sparsity); loss from the named law.

    ``law``: ``chinchilla`` (N = n_final), ``average-params`` (N = n_avg) or ``sparsity``
    (paper B's law on S = sparsity, N = n_final, D = tokens). Tokens are
    ``tokens_per_param * n_prunable`` (the dense size sets the budget, as in the pipeline).
    """
    from sparsescale.laws.chinchilla import ChinchillaLaw
    from sparsescale.laws.sparsity import SparsityLaw

    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(n_prunable):
        for tpp in tokens_per_param:
            for s in sparsities:
                method = "dense" if s == 0 else "global"
                rows.append({"run_id": f"s{i}/tpp{tpp}/{method}-s{int(round(s * 1000))}",
                             "scale": f"s{i}", "method": method, "sparsity": float(s),
                             "n_prunable": float(n), "n_final": float(n) * (1 - s),
                             "n_avg": float(n) * float(mean_density(s)),
                             "tokens": float(n) * tpp})
    frame = pd.DataFrame(rows)
    if law in ("chinchilla", "average-params"):
        params = params or {"E": 1.8, "A": 400.0, "B": 1000.0, "alpha": 0.34, "beta": 0.30}
        truth = ChinchillaLaw().set_params(**params)
        col = "n_avg" if law == "average-params" else "n_final"
        clean = truth.predict({"N": frame[col].to_numpy(), "D": frame["tokens"].to_numpy()})
    elif law == "sparsity":
        params = params or {"a_S": 2.0, "b_S": 0.8, "c_S": 3.0, "b_N": 0.3, "a_D": 2e6, "b_D": 0.35, "c": 1.5}
        truth = SparsityLaw().set_params(d_ref=d_ref, **params)
        clean = truth.loss(frame["sparsity"].to_numpy(), frame["n_final"].to_numpy(), frame["tokens"].to_numpy())
    else:
        raise ValueError(f"unknown law {law!r}")
    frame["true_loss"] = clean
    frame["final_val_loss"] = clean * np.exp(rng.normal(0.0, noise, len(frame)))
    return frame


def chinchilla_points(points: int = 250, seed: int = 0, noise: float = 0.02,
                      params: dict | None = None) -> dict:
    """``points`` runs with N log-uniform in [1e7, 1e10] and D in [1e9, 1e12], loss from the
    Chinchilla law (default: the published coefficients) with log-normal noise."""
    from sparsescale.laws.chinchilla import PUBLISHED

    p = params or PUBLISHED
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), points))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e12), points))
    clean = p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]
    return {"N": n, "D": d, "L": clean * np.exp(rng.normal(0.0, noise, points)), "true_loss": clean}
