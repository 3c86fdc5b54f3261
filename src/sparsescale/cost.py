"""How the cost of a training run grows with the work it does.

The runs table carries each train job's cost as Snakemake's benchmark measured it
(``job_wall_s``, ``job_cpu_s``, ``job_max_rss_mb``; see ``sparsescale.aggregate``). Here:

- ``train_flops(runs)``: the FLOPs a run executed, ``model_flops_per_token * tokens`` (dense
  kernels: masked weights still go through them, so a sparse run costs what its dense model does);
- ``PowerLaw``: ``y = k * x1^b1 * x2^b2 ...`` fitted by least squares in log-log space, the
  scaling of cost with FLOPs or with (N, D): ``fit``, ``predict``, ``prediction_interval``,
  ``parameter_table`` (standard errors, 95% intervals, R^2) and ``heldout`` (leave one group,
  e.g. one model scale, out and predict it).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from sparsescale.io import InputError

COST_COLUMNS = ("job_wall_s", "job_cpu_s", "job_max_rss_mb")


def train_flops(runs: pd.DataFrame) -> pd.Series:
    """FLOPs each run executed: dense model FLOPs per token times training tokens."""
    missing = [c for c in ("model_flops_per_token", "tokens") if c not in runs.columns]
    if missing:
        raise InputError(f"runs table: missing column(s) {missing} needed for training FLOPs")
    return runs["model_flops_per_token"] * runs["tokens"]


class PowerLaw:
    """``y = k * prod(x_i ** b_i)``: ordinary least squares on ``log y = log k + sum b_i log x_i``."""

    def __init__(self, x_cols: Sequence[str], y_col: str = "job_wall_s", level: float = 0.95):
        if not x_cols:
            raise InputError("PowerLaw: give at least one x column")
        self.x_cols = list(x_cols)
        self.y_col = y_col
        self.level = level
        self.coef: np.ndarray | None = None  # log k, then the exponents
        self.cov: np.ndarray | None = None
        self.resid_var: float | None = None
        self.r2: float | None = None
        self.n_points: int | None = None
        self._t: float | None = None  # Student-t quantile of the interval

    # ------------------------------------------------------------------ inputs
    def _logs(self, data: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
        missing = [c for c in columns if c not in data.columns]
        if missing:
            raise InputError(f"missing column(s) {missing}; available: {', '.join(map(str, data.columns))}")
        values = data[list(columns)].to_numpy(dtype=float)
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            label = data["run_id"].iloc[row] if "run_id" in data.columns else data.index[row]
            raise InputError(f"column {columns[col]!r}: row {label!r} is {values[row, col]}; a power law needs "
                             f"positive, finite values")
        return np.log(values)

    def _design(self, data: pd.DataFrame) -> np.ndarray:
        return np.column_stack([np.ones(len(data)), self._logs(data, self.x_cols)])

    # ------------------------------------------------------------------ API
    def fit(self, data: pd.DataFrame) -> "PowerLaw":
        from scipy import stats

        X, y = self._design(data), self._logs(data, [self.y_col])[:, 0]
        n, p = X.shape
        if n <= p:
            raise InputError(f"{n} points for a power law in {self.x_cols}: need more than {p} to estimate its "
                             f"uncertainty")
        if np.linalg.matrix_rank(X) < p:
            raise InputError(f"columns {self.x_cols} do not vary independently over the {n} points: the exponents "
                             f"are not identifiable")
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ coef
        self.resid_var = float(resid @ resid / (n - p))
        self.cov = self.resid_var * np.linalg.inv(X.T @ X)
        total = float(((y - y.mean()) ** 2).sum())
        self.r2 = 1.0 - float(resid @ resid) / total if total > 0 else float("nan")
        self.coef, self.n_points = coef, n
        self._t = float(stats.t.ppf(0.5 + self.level / 2, n - p))
        return self

    def _check_fitted(self) -> None:
        if self.coef is None:
            raise InputError("PowerLaw: call fit() first")

    @property
    def exponents(self) -> dict[str, float]:
        self._check_fitted()
        return dict(zip(self.x_cols, map(float, self.coef[1:])))

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        self._check_fitted()
        return np.exp(self._design(data) @ self.coef)

    def prediction_interval(self, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Interval at ``level`` for a new run's y (parameter uncertainty plus the scatter of runs)."""
        self._check_fitted()
        X = self._design(data)
        se = np.sqrt(self.resid_var + np.einsum("ij,jk,ik->i", X, self.cov, X))
        centre = X @ self.coef
        return np.exp(centre - self._t * se), np.exp(centre + self._t * se)

    def parameter_table(self) -> pd.DataFrame:
        """Prefactor ``k`` (y at every x = 1) and one exponent per x, with standard errors and intervals."""
        self._check_fitted()
        se = np.sqrt(np.diag(self.cov))
        rows = []
        for i, name in enumerate(["k", *(f"exponent of {c}" for c in self.x_cols)]):
            low, high = self.coef[i] - self._t * se[i], self.coef[i] + self._t * se[i]
            if i == 0:  # fitted as log k
                rows.append({"parameter": name, "value": np.exp(self.coef[0]), "se": np.nan,
                             "ci_low": np.exp(low), "ci_high": np.exp(high)})
            else:
                rows.append({"parameter": name, "value": self.coef[i], "se": se[i], "ci_low": low, "ci_high": high})
        table = pd.DataFrame(rows)
        table["r2"], table["n_points"] = self.r2, self.n_points
        return table

    def heldout(self, data: pd.DataFrame, group_col: str) -> pd.DataFrame:
        """Leave each group out, fit on the rest, predict it: one row per group with its points
        and the mean absolute relative error of the prediction. Groups whose complement is too
        small to fit (or does not vary) are left out of the table."""
        if group_col not in data.columns:
            raise InputError(f"missing group column {group_col!r}")
        rows = []
        for group, held in data.groupby(group_col, sort=False):
            rest = data[data[group_col] != group]
            try:
                law = PowerLaw(self.x_cols, self.y_col, self.level).fit(rest)
            except InputError:
                continue
            observed = held[self.y_col].to_numpy(dtype=float)
            rel = np.abs(law.predict(held) / observed - 1.0)
            rows.append({group_col: group, "points": len(held), "mean_abs_rel_error": float(rel.mean())})
        return pd.DataFrame(rows, columns=[group_col, "points", "mean_abs_rel_error"])
