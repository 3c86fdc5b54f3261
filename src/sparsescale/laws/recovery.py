"""The N-bar law with recovery: paper A's law, told how much training followed its prunes.

    L = E + A / N_eff^alpha + B / D^beta
    log N_eff = log N-bar + W * log(N_final / N-bar)
    W = mean over the pruning window of exp(-(training left after the prune) / rho)
      = exp(-R / rho) * (1 - exp(-P / rho)) / (P / rho)      (exp(-R / rho) when P = 0)

N-bar is the average non-zero count over training (paper A), N_final the count after the
last pruning event, R the share of training steps after that event (``recovery_share``:
1 for dense runs, 0 when the last prune falls on the last step), P the share of training
steps from the first pruning event to the last (``pruning_share``: 0 for dense runs and
one-shot prunes), and rho the recovery scale, a share of training.

Why this form. Paper A's law credits a run with its *average* size, so it cannot tell a
schedule that ends pruning at 75% of training from one that ends at 100%. The step logs
show why that matters: after each prune the training loss jumps and then decays back over
the following steps; a run whose last prunes fall near its end keeps those jumps. A run that
had no time to recover behaves like a model of its *final* size, one with time to recover
like a model of its average size. The effective size moves, in log space, from N-bar towards
N_final by W: each pruning event's share of the log-density drop, discounted by the
training left after it. A geometric schedule (paper A's) removes the same fraction at every
event, events evenly spaced from the first to the last, so the average over the window is
exact for it; for other shapes it is an approximation. Spreading the same prune over a
longer window leaves less of it unrecovered.

The law
- equals the N-bar law for dense runs (N_final = N-bar) and for any schedule whose
  recovery share is large against rho (W vanishes), so it can only differ where the
  N-bar law has no information;
- has one coefficient more than the N-bar law, fitted with the others by the same
  procedure (approach 3: Huber on log residuals, the published grid, here crossed with a
  few values of rho, then L-BFGS), so bootstrap, held-out errors and the fit JSON are those
  of every other law.

rho sits in a box (``RHO_BOUNDS``): at its lower bound no recovery effect was seen, and
the law is the N-bar law (listed in ``status.at_bounds``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sparsescale.laws.base import exp_or_inf
from sparsescale.laws.chinchilla import THETA_BOUNDS as CHINCHILLA_BOUNDS
from sparsescale.laws.chinchilla import AverageParamsLaw, batch_objective, hoffmann_grid, minimize_huber, objective_terms

RHO_BOUNDS = (1e-4, 10.0)
RHO_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)  # crossed with the published grid for the first screen
THETA_NAMES = ("a", "b", "e", "alpha", "beta", "log_rho")
THETA_BOUNDS = CHINCHILLA_BOUNDS + ((math.log(RHO_BOUNDS[0]), math.log(RHO_BOUNDS[1])),)


def recovery_share(frame: pd.DataFrame, steps_col: str = "steps", end_col: str = "end_step") -> pd.Series:
    """Share of training steps after the last pruning event: 1 for runs never pruned."""
    if "recovery_share" in frame.columns:
        return frame["recovery_share"]
    steps = frame[steps_col].astype(float)
    end = frame[end_col].astype(float) if end_col in frame.columns else pd.Series(np.nan, index=frame.index)
    return ((steps - end) / steps).where(end.notna(), 1.0)


def pruning_share(frame: pd.DataFrame, steps_col: str = "steps", start_col: str = "start_step",
                  end_col: str = "end_step") -> pd.Series:
    """Share of training steps from the first pruning event to the last: 0 for runs never pruned."""
    if "pruning_share" in frame.columns:
        return frame["pruning_share"]
    missing = pd.Series(np.nan, index=frame.index)
    start = frame[start_col].astype(float) if start_col in frame.columns else missing
    end = frame[end_col].astype(float) if end_col in frame.columns else missing
    return ((end - start) / frame[steps_col].astype(float)).where(start.notna() & end.notna(), 0.0)


def with_recovery_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the ``recovery_share`` and ``pruning_share`` columns, derived from the
    trainer's ``steps``, ``start_step`` and ``end_step`` where it has none."""
    if "steps" not in frame.columns:
        return frame
    return frame.assign(recovery_share=recovery_share(frame), pruning_share=pruning_share(frame))


def unrecovered_weight(share: np.ndarray, span: np.ndarray, log_rho: float) -> tuple[np.ndarray, np.ndarray]:
    """W (see the module docstring) and its derivative with respect to log rho."""
    inv_rho = math.exp(-log_rho)
    x = np.asarray(span, float) * inv_rho
    tail = np.exp(-np.asarray(share, float) * inv_rho)
    small = x < 1e-6
    safe = np.where(small, 1.0, x)
    spread = np.where(small, 1.0 - x / 2, -np.expm1(-safe) / safe)  # (1 - e^-x) / x
    # d spread / d log rho = -x d/dx [(1 - e^-x) / x] = (1 - e^-x (1 + x)) / x
    dspread = np.where(small, x / 2, (1.0 - np.exp(-safe) * (1.0 + safe)) / safe)
    weight = tail * spread
    return weight, weight * share * inv_rho + tail * dspread


def log_effective_n(log_n_avg: np.ndarray, log_n_final: np.ndarray, share: np.ndarray, span: np.ndarray,
                    log_rho: float) -> tuple[np.ndarray, np.ndarray]:
    """log N_eff and its derivative with respect to log rho."""
    pull = log_n_final - log_n_avg  # <= 0: the final count is at most the average
    weight, dweight = unrecovered_weight(share, span, log_rho)
    return log_n_avg + weight * pull, pull * dweight


def _objective_grad(theta, log_n_avg, log_n_final, share, span, log_d, log_l, delta):
    log_n, dlogn = log_effective_n(log_n_avg, log_n_final, share, span, theta[5])
    f, p1, p2, p3 = objective_terms(theta, log_n, log_d, log_l, delta)
    alpha = theta[3]
    g = np.array([p1.sum(), p2.sum(), p3.sum(), -(p1 @ log_n), -(p2 @ log_d), -alpha * (p1 @ dlogn)])
    return f, g


class RecoveryLaw(AverageParamsLaw):
    """L = E + A / N_eff^alpha + B / D^beta, N_eff between N-bar and N_final by the training
    left after the prunes (see the module docstring). Inputs: N-bar (``n_avg``), D
    (``tokens``), N_final (``n_final``), the recovery share (``recovery_share``) and the
    pruning share (``pruning_share``)."""

    name = "recovery"
    param_names = ("E", "A", "B", "alpha", "beta", "rho")
    roles = ("N", "D", "F", "R", "P")
    theta_names = THETA_NAMES
    theta_bounds = THETA_BOUNDS
    default_columns = {**AverageParamsLaw.default_columns, "F": "n_final", "R": "recovery_share",
                       "P": "pruning_share"}

    def __init__(self, n_col: str | None = None, d_col: str | None = None, loss_col: str | None = None, *,
                 f_col: str | None = None, r_col: str | None = None, p_col: str | None = None, grid: np.ndarray | None = None, **kwargs: Any):
        if grid is None:
            base = hoffmann_grid()
            rho = np.log(np.asarray(RHO_GRID))
            grid = np.column_stack([np.repeat(base, len(rho), axis=0), np.tile(rho, len(base))])
        super().__init__(n_col=n_col, d_col=d_col, loss_col=loss_col, grid=grid, **kwargs)
        self.columns["F"] = f_col or self.default_columns["F"]
        self.columns["R"] = r_col or self.default_columns["R"]
        self.columns["P"] = p_col or self.default_columns["P"]

    def _logs(self, x: dict[str, np.ndarray]):
        return np.log(x["N"]), np.log(x["F"]), x["R"], x["P"], np.log(x["D"])

    def _screen(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        log_n_avg, log_n_final, share, span, log_d = self._logs(arrays)
        out = np.empty(len(self.grid))
        for log_rho in np.unique(self.grid[:, 5]):  # one N_eff per rho of the grid
            rows = self.grid[:, 5] == log_rho
            log_n = log_effective_n(log_n_avg, log_n_final, share, span, log_rho)[0]
            out[rows] = batch_objective(self.grid[rows], log_n, log_d, np.log(arrays["L"]), self.huber_delta)
        return out

    def _refine(self, theta0: np.ndarray, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        args = (*self._logs(arrays), np.log(arrays["L"]))
        return minimize_huber(_objective_grad, theta0, args, THETA_BOUNDS, self.huber_delta, self.maxiter)

    def _log_predict(self, theta: np.ndarray, x: dict[str, np.ndarray]) -> np.ndarray:
        log_n_avg, log_n_final, share, span, log_d = self._logs(x)
        log_n = log_effective_n(log_n_avg, log_n_final, share, span, theta[5])[0]
        return super()._log_predict(theta[:5], {"N": np.exp(log_n), "D": np.exp(log_d)})

    @staticmethod
    def theta_to_params(theta: np.ndarray) -> dict[str, float]:
        return {**AverageParamsLaw.theta_to_params(theta[:5]), "rho": math.exp(float(theta[5]))}

    @staticmethod
    def params_to_theta(params: dict[str, float]) -> np.ndarray:
        return np.append(AverageParamsLaw.params_to_theta(params), math.log(params["rho"]))

    def effective_n(self, N: Any, F: Any, R: Any, P: Any = 0.0) -> np.ndarray:
        """N_eff for N-bar ``N``, final count ``F``, recovery share ``R`` and pruning share ``P``."""
        self._require_fit()
        log_n = log_effective_n(np.log(np.asarray(N, float)), np.log(np.asarray(F, float)),
                                np.asarray(R, float), np.asarray(P, float), float(self.theta_[5]))[0]
        return exp_or_inf(log_n)

    def compute_optimal(self, compute: Any) -> dict[str, np.ndarray]:
        """The dense optimum: for dense runs the law is the N-bar law."""
        dense = AverageParamsLaw().set_params(**{k: self.params[k] for k in AverageParamsLaw.param_names})
        return dense.compute_optimal(compute)

    @property
    def units(self) -> dict[str, str]:
        return {**super().units, "F": f"final non-zero parameters (column {self.columns['F']!r}, raw count)",
                "R": f"share of training steps after the last pruning event (column {self.columns['R']!r}, 0-1)",
                "P": f"share of training steps from the first pruning event to the last (column "
                     f"{self.columns['P']!r}, 0-1)",
                "rho": "share of training (unitless)"}
