"""Shared machinery for the scaling laws: input validation, point selection, the Huber loss
and the small ``Law`` base class (``fit``, ``predict``, ``params``, ``parameter_table``).

Data are given either as a pandas DataFrame or as a mapping of arrays. A law looks up each
input first under its configured column name (``n_col``, ``d_col``, ``s_col``,
``loss_col``) and then under its role name (``N``, ``D``, ``S``, ``L``), so
``law.fit({"N": n, "D": d, "L": loss})`` works as well as ``law.fit(runs_frame)``.
All inputs are raw units (parameters, tokens); each law converts internally and states the
units of its coefficients in ``law.units``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from sparsescale.io import InputError

HUBER_DELTA = 1e-3
LOG_FLOAT_MAX = math.log(np.finfo(float).max)  # exp of anything above this overflows
ROLE_DESCRIPTIONS = {
    "N": "parameter count",
    "D": "training tokens",
    "S": "sparsity",
    "L": "loss",
    "F": "final non-zero parameter count",
    "N0": "dense prunable parameter count",
    "R": "share of training after the last pruning event",
    "P": "share of training from the first pruning event to the last",
}


@contextlib.contextmanager
def single_thread_blas():
    """Run with one BLAS thread (threadpoolctl). The fits make millions of tiny BLAS calls
    (inside scipy's L-BFGS-B); with several BLAS threads on a busy machine each call can cost
    a millisecond instead of microseconds (measured: a 0.7 s fit took 12 s)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Elementwise Huber loss (quadratic within ``delta``, linear outside)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def exp_or_inf(x: Any) -> np.ndarray:
    """exp(x) that returns inf past the float range instead of overflowing with a warning."""
    x = np.asarray(x, dtype=float)
    return np.where(x > LOG_FLOAT_MAX, np.inf, np.exp(np.minimum(x, LOG_FLOAT_MAX)))


def logsumexp_rows(*terms: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """log(sum_i exp(t_i)) over broadcastable arrays; also the softmax weights."""
    m = terms[0]
    for t in terms[1:]:
        m = np.maximum(m, t)
    exps = [np.exp(t - m) for t in terms]
    s = exps[0]
    for e in exps[1:]:
        s = s + e
    return m + np.log(s), [e / s for e in exps]


def row_label(data: Any, i: int) -> str:
    if isinstance(data, pd.DataFrame):
        label = f"row {data.index[i]!r}"
        if "run_id" in data.columns:
            label += f" (run_id={data['run_id'].iloc[i]!r})"
        return label
    return f"row {i}"


def _lookup(data: Any, names: list[str]) -> tuple[str, Any] | None:
    for name in names:
        if name is None:
            continue
        if isinstance(data, pd.DataFrame):
            if name in data.columns:
                return name, data[name]
        elif isinstance(data, Mapping) and name in data:
            return name, data[name]
    return None


def available_columns(data: Any) -> list[str]:
    if isinstance(data, pd.DataFrame):
        return [str(c) for c in data.columns]
    if isinstance(data, Mapping):
        return [str(k) for k in data.keys()]
    return []


def n_rows(data: Any) -> int:
    if isinstance(data, pd.DataFrame):
        return len(data)
    if isinstance(data, Mapping):
        for v in data.values():
            return len(np.atleast_1d(np.asarray(v)))
    raise InputError(f"data must be a pandas DataFrame or a mapping of arrays, got {type(data).__name__}")


def subset(data: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` (positional, repeats allowed) of a DataFrame or mapping of arrays."""
    idx = np.asarray(idx, dtype=int)
    if isinstance(data, pd.DataFrame):
        return data.iloc[idx]
    return {k: np.asarray(v)[idx] if np.ndim(v) else v for k, v in data.items()}


class Law:
    """Base class. Subclasses define ``name``, ``param_names``, ``roles`` and the fitting."""

    name = "law"
    param_names: tuple[str, ...] = ()
    roles: tuple[str, ...] = ("N", "D")  # inputs besides the loss
    # the internal vector ``theta_`` the optimiser moves, the box it is kept in (wide enough
    # for any plausible fit, narrow enough that every prediction stays a finite float), and
    # the shape exponents among its entries: one stuck on its bound means the data did not
    # determine the law's shape, so the fit is reported unusable
    theta_names: tuple[str, ...] = ()
    theta_bounds: tuple[tuple[float, float], ...] = ()
    exponents: tuple[str, ...] = ()
    default_columns = {"N": "n_final", "D": "tokens", "S": "sparsity", "L": "final_val_loss"}

    def __init__(self, n_col: str | None = None, d_col: str | None = None,
                 loss_col: str | None = None, s_col: str | None = None,
                 huber_delta: float = HUBER_DELTA, seed: int = 0):
        self.columns = {
            "N": n_col or self.default_columns["N"],
            "D": d_col or self.default_columns["D"],
            "L": loss_col or self.default_columns["L"],
        }
        if "S" in self.roles:
            self.columns["S"] = s_col or self.default_columns["S"]
        self.huber_delta = float(huber_delta)
        self.seed = seed
        self.params: dict[str, float] | None = None
        self.fit_loss: float | None = None
        self.n_points: int | None = None
        self.winning_start: dict | None = None
        self.ci: dict[str, list[float]] | None = None
        self.theta_: np.ndarray | None = None
        self.status: dict | None = None

    # ------------------------------------------------------------------ inputs
    def _column(self, data: Any, role: str, required: bool = True) -> tuple[str, np.ndarray] | None:
        col = self.columns[role]
        # role names (N, D, S, L) are accepted for plain mappings of arrays, not for tables
        found = _lookup(data, [col] if isinstance(data, pd.DataFrame) else [col, role])
        if found is None:
            if not required:
                return None
            raise InputError(
                f"missing column {col!r} ({ROLE_DESCRIPTIONS[role]}); available columns: "
                f"{', '.join(available_columns(data)) or '(none)'}"
            )
        name, values = found
        try:
            arr = np.asarray(values, dtype=float).reshape(-1)
        except (TypeError, ValueError) as err:
            raise InputError(f"column {name!r} ({ROLE_DESCRIPTIONS[role]}) is not numeric: {err}") from err
        return name, arr

    def extract(self, data: Any, with_loss: bool = True) -> dict[str, np.ndarray]:
        """Validated float arrays by role; raises InputError naming the column and row."""
        out: dict[str, np.ndarray] = {}
        roles = list(self.roles) + (["L"] if with_loss else [])
        for role in roles:
            name, arr = self._column(data, role)
            bad = ~np.isfinite(arr)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputError(f"column {name!r}: {row_label(data, i)} is {arr[i]} (not finite)")
            if role in ("N", "D", "L", "F", "N0"):
                bad = arr <= 0
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise InputError(
                        f"column {name!r}: {row_label(data, i)} is {arr[i]:g}; "
                        f"{ROLE_DESCRIPTIONS[role]} must be positive"
                    )
            if role in ("R", "P"):
                bad = (arr < 0) | (arr > 1)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise InputError(f"column {name!r}: {row_label(data, i)} is {arr[i]:g}; "
                                     f"the {ROLE_DESCRIPTIONS[role]} must be in [0, 1]")
            if role == "S":
                bad = (arr < 0) | (arr >= 1)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise InputError(
                        f"column {name!r}: {row_label(data, i)} is {arr[i]:g}; sparsity must be in [0, 1)"
                    )
            out[role] = arr
        lengths = {len(v) for v in out.values()}
        if len(lengths) > 1:
            raise InputError(f"input arrays have different lengths: { {k: len(v) for k, v in out.items()} }")
        return out

    def _check_count(self, n: int) -> None:
        if n < len(self.param_names):
            raise InputError(
                f"{n} data points for the {self.name} law, which has {len(self.param_names)} "
                f"parameters ({', '.join(self.param_names)}): need at least {len(self.param_names)}"
            )

    # ------------------------------------------------------------------ API
    def fit(self, data: Any) -> "Law":
        arrays = self.extract(data)
        self._check_count(len(arrays["L"]))
        with single_thread_blas():
            self._fit_arrays(arrays)
        self.n_points = len(arrays["L"])
        self.ci = None
        self.status = self._assess(arrays)
        return self

    def refit_warm(self, data: Any, init: "Law") -> "Law":
        """Fit ``data`` starting from ``init``'s optimum (and a few of its best starts):
        the cheap refit used by the bootstrap."""
        arrays = self.extract(data)
        self._check_count(len(arrays["L"]))
        with single_thread_blas():
            self._fit_arrays(arrays, warm=init)
        self.n_points = len(arrays["L"])
        self.status = self._assess(arrays)
        return self

    def _warm_starts(self, warm: "Law") -> np.ndarray:
        """Where a warm refit starts: ``warm``'s optimum, then the ends of up to
        ``self.warm_starts`` of its best refined starts, each once. The best of those ends is
        the optimum itself, and L-BFGS from a repeated start only repeats its result."""
        candidates = [warm.theta_]
        if getattr(warm, "_top_thetas", None) is not None:
            candidates += list(warm._top_thetas[: self.warm_starts])
        starts: list[np.ndarray] = []
        for theta in candidates:
            if not any(np.array_equal(theta, seen) for seen in starts):
                starts.append(theta)
        return np.array(starts)

    def _assess(self, arrays: dict[str, np.ndarray]) -> dict:
        """``{"usable", "reasons", "at_bounds"}`` of the fitted optimum: unusable when the
        objective or a prediction at the fitted points is not finite, or when a shape
        exponent sits on its bound. Log-coefficients on a bound (a term that vanishes, such
        as E -> 0) are listed in ``at_bounds`` but leave the fit usable."""
        at_bounds = [name for name, value, (lo, hi) in zip(self.theta_names, self.theta_, self.theta_bounds)
                     if value <= lo + 1e-6 * (hi - lo) or value >= hi - 1e-6 * (hi - lo)]
        reasons = []
        if self.fit_loss is None or not math.isfinite(self.fit_loss):
            reasons.append("the fit objective is not finite")
        elif not np.all(np.isfinite(self._log_predict(self.theta_, arrays))):
            reasons.append("predictions at the fitted points are not finite")
        bounds = dict(zip(self.theta_names, self.theta_bounds))
        for name in self.exponents:
            if name in at_bounds:
                lo, hi = bounds[name]
                reasons.append(f"exponent {name} = {self.params[name]:g} sits on its bound [{lo:g}, {hi:g}]: "
                               "the data do not determine the law's shape")
        return {"usable": not reasons, "reasons": reasons, "at_bounds": at_bounds}

    def predict(self, data: Any = None, **arrays: Any) -> np.ndarray:
        """Predicted loss for a DataFrame / mapping, or keyword arrays by role (N=, D=, S=)."""
        self._require_fit()
        if data is None:
            data = arrays
        x = self.extract(data, with_loss=False)
        return exp_or_inf(self._log_predict(self.theta_, x))

    def parameter_table(self) -> pd.DataFrame:
        self._require_fit()
        rows = []
        for name in self.param_names:
            lo, hi = (self.ci or {}).get(name, (math.nan, math.nan))
            rows.append({"name": name, "value": self.params[name], "ci_low": lo, "ci_high": hi})
        return pd.DataFrame(rows, columns=["name", "value", "ci_low", "ci_high"])

    def clone(self) -> "Law":
        """An unfitted copy with the same options."""
        new = copy.copy(self)
        new.params = new.fit_loss = new.n_points = new.winning_start = new.ci = new.theta_ = new.status = None
        new.columns = dict(self.columns)
        return new

    def objective(self, data: Any) -> float:
        """The fitting objective (sum of Huber losses on log residuals) at the fitted params."""
        self._require_fit()
        x = self.extract(data)
        r = self._log_predict(self.theta_, x) - np.log(x["L"])
        return float(huber(r, self.huber_delta).sum())

    def _require_fit(self) -> None:
        if self.theta_ is None:
            raise RuntimeError(f"{self.name} law is not fitted yet: call fit() first")

    # subclasses implement
    def _fit_arrays(self, arrays: dict[str, np.ndarray], warm: "Law | None" = None) -> None:
        raise NotImplementedError

    def _log_predict(self, theta: np.ndarray, x: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    @property
    def units(self) -> dict[str, str]:
        return {}

    def derived(self, **kwargs: Any) -> dict:
        return {}

    def derived_scalars(self, **kwargs: Any) -> dict[str, float]:
        """Flat name -> value of derived quantities (for bootstrap intervals)."""
        return {}


def select_points(data: Any, law: Law, drop_highest_loss: int = 0,
                  min_n: float | None = None) -> tuple[Any, list[dict]]:
    """Validate ``data`` for ``law`` and apply the explicit drop options.

    ``min_n`` drops runs whose N (the law's N column) is below it; then the
    ``drop_highest_loss`` rows with the highest loss are dropped. Returns the kept rows and a
    list describing every dropped row (reason, row, N, loss and run_id when present).
    """
    arrays = law.extract(data)
    n = len(arrays["L"])
    keep = np.ones(n, dtype=bool)
    dropped: list[dict] = []

    def record(i: int, reason: str) -> None:
        item = {"reason": reason, "row": _row_index(data, i),
                "N": float(arrays["N"][i]), "loss": float(arrays["L"][i])}
        if isinstance(data, pd.DataFrame) and "run_id" in data.columns:
            item["run_id"] = str(data["run_id"].iloc[i])
        dropped.append(item)

    if min_n is not None:
        for i in np.flatnonzero(arrays["N"] < float(min_n)):
            keep[i] = False
            record(int(i), f"N ({law.columns['N']}) below min_n={min_n:g}")
    k = int(drop_highest_loss or 0)
    if k < 0:
        raise InputError(f"drop_highest_loss must be >= 0, got {k}")
    if k:
        candidates = np.flatnonzero(keep)
        order = candidates[np.argsort(-arrays["L"][candidates], kind="stable")][:k]
        for i in order:
            keep[i] = False
            record(int(i), f"one of the {k} highest-loss points")
    kept = subset(data, np.flatnonzero(keep))
    law._check_count(int(keep.sum()))
    return kept, dropped


def _row_index(data: Any, i: int) -> Any:
    if isinstance(data, pd.DataFrame):
        v = data.index[i]
        return v.item() if hasattr(v, "item") else v
    return int(i)
