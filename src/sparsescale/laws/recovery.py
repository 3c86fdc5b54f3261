"""The N-bar law with recovery: paper A's law, plus the damage of prunes not yet recovered.

    L = E + A / N-bar^alpha + B / D^beta + C * U
    U = exp(lam - R / rho) * lam * (1 - exp(-(lam + P / rho))) / (lam + P / rho),  lam = log(N_0 / N_final)

N-bar is the average non-zero count over training (paper A), N_0 the dense model's prunable
count (``n_prunable``), N_final the count after the last pruning event, R the share of
training steps after that event (``recovery_share``: 1 for dense runs, 0 when the last prune
falls on the last step), P the share of training steps from the first pruning event to the
last (``pruning_share``: 0 for dense runs and one-shot prunes), C the damage scale (nats) and
rho the recovery scale, a share of training.

Why this form. Paper A's law credits a run with its *average* size, so it cannot tell a
schedule that ends pruning at 75% of training from one that ends at 100%. The step logs show
why that matters: after each prune the training loss jumps and then decays back over the
following steps, so a run whose last prunes fall near its end keeps those jumps. U adds them
up: every pruning event raises the compression ratio N_0 / N_t, and costs in proportion to
that rise, discounted by exp(-training left after the event / rho). The same fraction of the
surviving weights costs more at a low density (their magnitudes are larger), and a prune
spread over a longer window leaves less unrecovered than one packed into the last steps.
The closed form above is that sum for a geometric schedule (paper A's: evenly spaced events
that each remove the same fraction); for other shapes it is an approximation. For one event
U = exp(-R / rho) (N_0 / N_final - 1).

The law
- equals the N-bar law for dense runs (lam = 0, so U = 0) and for any schedule whose
  recovery share is large against rho (U vanishes), so it can only differ where the N-bar
  law has no information;
- has two coefficients more than the N-bar law, fitted with the others by the same
  procedure (approach 3: Huber on log residuals, the published grid, here crossed with a
  few values of C and rho, then L-BFGS with an analytic gradient), so bootstrap, held-out
  errors and the fit JSON are those of every other law.

C and rho sit in a box: at C's lower bound no damage was seen, and the law is the N-bar law
(listed in ``status.at_bounds``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sparsescale.io import InputError
from sparsescale.laws.base import row_label, huber
from sparsescale.laws.chinchilla import THETA_BOUNDS as CHINCHILLA_BOUNDS
from sparsescale.laws.chinchilla import AverageParamsLaw, hoffmann_grid, minimize_huber

RHO_BOUNDS = (1e-3, 10.0)
C_BOUNDS = (math.exp(-20.0), math.exp(5.0))
RHO_GRID = (0.02, 0.05, 0.1, 0.3, 1.0)  # crossed with the published grid and C_GRID for the first screen
C_GRID = (math.exp(-5.0), math.exp(-3.0), math.exp(-1.0))
THETA_NAMES = ("a", "b", "e", "alpha", "beta", "log_c", "log_rho")
THETA_BOUNDS = CHINCHILLA_BOUNDS + (tuple(map(math.log, C_BOUNDS)), tuple(map(math.log, RHO_BOUNDS)))


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


def unrecovered(lam: np.ndarray, share: np.ndarray, span: np.ndarray, log_rho: float) -> tuple[np.ndarray, np.ndarray]:
    """U (see the module docstring) for lam = log(N_0 / N_final), recovery share R = ``share``
    and pruning share P = ``span``, and its derivative with respect to log rho."""
    inv_rho = math.exp(-log_rho)
    lam, share, span = (np.asarray(v, float) for v in (lam, share, span))
    y = lam + span * inv_rho
    small = y < 1e-6
    safe = np.where(small, 1.0, y)
    g = np.where(small, 1.0 - y / 2, -np.expm1(-safe) / safe)  # (1 - e^-y) / y
    h = np.where(small, 0.5 - y / 3, (1.0 - np.exp(-safe) * (1.0 + safe)) / (safe * safe))  # -g'(y)
    scale = np.exp(lam - share * inv_rho) * lam
    return scale * g, scale * (g * share + h * span) * inv_rho


def _objective_grad(theta, log_n, log_d, lam, share, span, log_l, delta):
    """Sum of Huber(log residual)/delta over the runs, and its gradient in theta."""
    a, b, e, alpha, beta, log_c, log_rho = theta
    u, du = unrecovered(lam, share, span, log_rho)
    t1, t2 = a - alpha * log_n, b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    c = np.exp(log_c - m)
    e4 = c * u
    s = e1 + e2 + e3 + e4
    r = m + np.log(s) - log_l
    f = float(huber(r, delta).sum()) / delta
    psi = np.clip(r, -delta, delta) / (delta * s)
    g = np.array([psi @ e1, psi @ e2, psi @ e3, -(psi * e1) @ log_n, -(psi * e2) @ log_d, psi @ e4, psi @ (c * du)])
    return f, g


class RecoveryLaw(AverageParamsLaw):
    """L = E + A / N-bar^alpha + B / D^beta + C U, U the damage of the prunes not yet
    recovered (see the module docstring). Inputs: N-bar (``n_avg``), D (``tokens``), the dense
    prunable count N_0 (``n_prunable``), N_final (``n_final``), the recovery share
    (``recovery_share``) and the pruning share (``pruning_share``)."""

    name = "recovery"
    param_names = ("E", "A", "B", "alpha", "beta", "C", "rho")
    roles = ("N", "D", "N0", "F", "R", "P")
    theta_names = THETA_NAMES
    theta_bounds = THETA_BOUNDS
    default_columns = {**AverageParamsLaw.default_columns, "N0": "n_prunable", "F": "n_final",
                       "R": "recovery_share", "P": "pruning_share"}

    def __init__(self, n_col: str | None = None, d_col: str | None = None, loss_col: str | None = None, *,
                 n0_col: str | None = None, f_col: str | None = None, r_col: str | None = None,
                 p_col: str | None = None, grid: np.ndarray | None = None, **kwargs: Any):
        if grid is None:
            base = hoffmann_grid()
            extra = np.array([(math.log(c), math.log(rho)) for c in C_GRID for rho in RHO_GRID])
            grid = np.column_stack([np.repeat(base, len(extra), axis=0), np.tile(extra, (len(base), 1))])
        super().__init__(n_col=n_col, d_col=d_col, loss_col=loss_col, grid=grid, **kwargs)
        for role, col in (("N0", n0_col), ("F", f_col), ("R", r_col), ("P", p_col)):
            self.columns[role] = col or self.default_columns[role]

    def extract(self, data: Any, with_loss: bool = True) -> dict[str, np.ndarray]:
        out = super().extract(data, with_loss)
        below = out["N0"] < out["F"]
        if below.any():
            i = int(np.flatnonzero(below)[0])
            raise InputError(f"column {self.columns['N0']!r}: {row_label(data, i)} is {out['N0'][i]:g}, below its "
                             f"final non-zero count ({self.columns['F']!r}: {out['F'][i]:g}); the dense count is the "
                             f"largest a run can have")
        return out

    def _inputs(self, x: dict[str, np.ndarray]):
        return np.log(x["N"]), np.log(x["D"]), np.log(x["N0"] / x["F"]), x["R"], x["P"]

    def _screen(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The objective at every grid start, vectorised over the starts of one (C, rho)."""
        log_n, log_d, lam, share, span = self._inputs(arrays)
        log_l = np.log(arrays["L"])
        out = np.empty(len(self.grid))
        for log_c, log_rho in np.unique(self.grid[:, 5:], axis=0):
            rows = np.flatnonzero((self.grid[:, 5] == log_c) & (self.grid[:, 6] == log_rho))
            damage = math.exp(log_c) * unrecovered(lam, share, span, log_rho)[0]
            th = self.grid[rows]
            a, b, e, alpha, beta = (th[:, i:i + 1] for i in range(5))
            pred = np.log(np.exp(a - alpha * log_n) + np.exp(b - beta * log_d) + np.exp(e) + damage)
            out[rows] = huber(pred - log_l, self.huber_delta).sum(axis=1)
        return out

    def _refine(self, theta0: np.ndarray, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        args = (*self._inputs(arrays), np.log(arrays["L"]))
        return minimize_huber(_objective_grad, theta0, args, THETA_BOUNDS, self.huber_delta, self.maxiter)

    def _log_predict(self, theta: np.ndarray, x: dict[str, np.ndarray]) -> np.ndarray:
        log_n, log_d, lam, share, span = self._inputs(x)
        nbar = np.exp(super()._log_predict(theta[:5], {"N": np.exp(log_n), "D": np.exp(log_d)}))
        return np.log(nbar + math.exp(theta[5]) * unrecovered(lam, share, span, theta[6])[0])

    @staticmethod
    def theta_to_params(theta: np.ndarray) -> dict[str, float]:
        return {**AverageParamsLaw.theta_to_params(theta[:5]), "C": math.exp(float(theta[5])),
                "rho": math.exp(float(theta[6]))}

    @staticmethod
    def params_to_theta(params: dict[str, float]) -> np.ndarray:
        return np.append(AverageParamsLaw.params_to_theta(params), [math.log(params["C"]), math.log(params["rho"])])

    def damage(self, N0: Any, F: Any, R: Any, P: Any = 0.0) -> np.ndarray:
        """C U, the loss (nats) of the prunes not yet recovered, for dense count ``N0``, final
        count ``F``, recovery share ``R`` and pruning share ``P``."""
        self._require_fit()
        lam = np.log(np.asarray(N0, float) / np.asarray(F, float))
        return self.params["C"] * unrecovered(lam, R, P, float(self.theta_[6]))[0]

    def compute_optimal(self, compute: Any) -> dict[str, np.ndarray]:
        """The dense optimum: for dense runs the law is the N-bar law."""
        dense = AverageParamsLaw().set_params(**{k: self.params[k] for k in AverageParamsLaw.param_names})
        return dense.compute_optimal(compute)

    @property
    def units(self) -> dict[str, str]:
        return {**super().units,
                "N0": f"the dense model's prunable parameters (column {self.columns['N0']!r}, raw count)",
                "F": f"final non-zero parameters (column {self.columns['F']!r}, raw count)",
                "R": f"share of training steps after the last pruning event (column {self.columns['R']!r}, 0-1)",
                "P": f"share of training steps from the first pruning event to the last (column "
                     f"{self.columns['P']!r}, 0-1)",
                "C": "nats per unit rise of N_0 / N_t, unrecovered", "rho": "share of training (unitless)"}
