"""Chinchilla law L(N, D) = E + A/N^alpha + B/D^beta, fitted by Hoffmann et al.'s approach 3.

Approach 3 as published (Hoffmann et al. 2022, appendix D.2): with a = log A, b = log B,
e = log E the predicted log loss is LSE(a - alpha log N, b - beta log D, e); minimise the
SUM over runs of Huber_delta(predicted log L - observed log L) with delta = 1e-3, by L-BFGS
from a grid of initialisations, and keep the best. The grid is the published one:
alpha, beta in {0, 0.5, ..., 2.0}, e in {-1, -0.5, ..., 1.0}, a, b in {0, 5, ..., 25}
(``np.arange(0, 2.5, .5)`` etc.: the ranges 0..2.5, -1..1.5, 0..30 with the upper end
excluded), 5 * 5 * 5 * 6 * 6 = 4500 starts.

Speed: the objective is first evaluated at all 4500 starts at once (one vectorised numpy
pass, chunked), and scipy L-BFGS (analytic gradient, tight tolerances; the objective is
divided by delta internally so scipy's tolerances are not loose relative to the tiny Huber
values, the early-stopping problem found by the independent re-fit) is run from the starts
with the lowest initial objective, best first, in batches of ``refine_batch`` (32), until
``refine_patience`` (2) batches in a row lower the best loss by no more than
``REFINE_IMPROVEMENT`` (1e-6) relative, or ``n_refine`` (256) starts are done. On
well-posed data the first batch already holds the optimum, so a fit refines 96 starts
instead of 256 (``benchmarks/fit_speed.py`` checks the loss against L-BFGS from all 4500
starts). ``refine_patience=None`` refines all ``n_refine``; ``n_refine=None`` every start
(the exhaustive, slow reference). The winning start and the fit loss (the sum of Huber
losses, not divided by delta) are reported.

The average-parameter law of paper A is this class fed N-bar (column ``n_avg``) instead of
the final non-zero count: ``ChinchillaLaw(n_col="n_avg")`` or ``AverageParamsLaw()``.
Inputs and coefficients are raw units: N in parameters, D in tokens, E, A, B in loss units
(A and B absorb the raw-unit scale exactly as in the published fit).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize

from sparsescale.laws.base import Law, exp_or_inf, huber, logsumexp_rows

PUBLISHED = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# internal vector: (a, b, e, alpha, beta) = (log A, log B, log E, alpha, beta)
THETA_NAMES = ("a", "b", "e", "alpha", "beta")


def hoffmann_grid() -> np.ndarray:
    """The published initialisation grid, shape (4500, 5) in (a, b, e, alpha, beta) order."""
    alpha = np.arange(0.0, 2.5, 0.5)
    beta = np.arange(0.0, 2.5, 0.5)
    e = np.arange(-1.0, 1.5, 0.5)
    a = np.arange(0.0, 30.0, 5.0)
    b = np.arange(0.0, 30.0, 5.0)
    mesh = np.meshgrid(a, b, e, alpha, beta, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def objective_terms(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                    log_l: np.ndarray, delta: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Sum of Huber(log residual)/delta for one theta, and per point its derivative with
    respect to the three log-terms a - alpha log N, b - beta log D and e."""
    a, b, e, alpha, beta = theta[:5]
    t1 = a - alpha * log_n
    t2 = b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    e1 = np.exp(t1 - m)
    e2 = np.exp(t2 - m)
    e3 = np.exp(e - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - log_l
    ar = np.abs(r)
    f = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum() / delta
    psi = np.clip(r, -delta, delta) / (delta * s)
    return float(f), psi * e1, psi * e2, psi * e3


def _objective_grad(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                    log_l: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Sum of Huber(log residual)/delta and its gradient, for one theta."""
    f, p1, p2, p3 = objective_terms(theta, log_n, log_d, log_l, delta)
    g = np.array([p1.sum(), p2.sum(), p3.sum(), -(p1 @ log_n), -(p2 @ log_d)])
    return f, g


def batch_objective(thetas: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                    log_l: np.ndarray, delta: float, chunk: int = 1024) -> np.ndarray:
    """Sum of Huber losses for many thetas at once (vectorised over starts x points)."""
    out = np.empty(len(thetas))
    for lo in range(0, len(thetas), chunk):
        th = thetas[lo:lo + chunk]
        a, b, e, alpha, beta = (th[:, i:i + 1] for i in range(5))
        pred, _ = logsumexp_rows(a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(th), len(log_n))))
        out[lo:lo + chunk] = huber(pred - log_l, delta).sum(axis=1)
    return out


# A batch of refined starts counts as an improvement only if it lowers the best loss by more
# than this fraction. L-BFGS runs that end in the same flat valley (a law whose data leave a
# term undetermined, E -> 0 with beta -> 7 on a held-out refit of 24 tiny runs) scatter by
# about 1e-7 relative; below that floor "improvement" is noise and refining ran to n_refine
# (224 starts, 63 s, where 96 reach the same loss to 1e-7).
REFINE_IMPROVEMENT = 1e-6

# Box (a, b, e, alpha, beta) far outside any real fit: on a handful of points an unbounded
# search can run to alpha, beta -> inf with A, B = e^a, e^b overflowing a float.
THETA_BOUNDS = ((-50.0, 300.0), (-50.0, 300.0), (-20.0, 10.0), (0.0, 10.0), (0.0, 10.0))


def minimize_huber(objective_grad, theta0: np.ndarray, args: tuple, bounds, delta: float, maxiter: int = 2000):
    """L-BFGS-B on an objective scaled by 1/delta (so its tight tolerances are not loose against
    the tiny Huber values): (theta, sum of Huber losses)."""
    res = optimize.minimize(
        objective_grad, np.asarray(theta0, dtype=float), args=(*args, delta),
        jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-10, "maxcor": 20},
    )
    return res.x, float(res.fun) * delta


def lbfgs(theta0: np.ndarray, log_n, log_d, log_l, delta: float, maxiter: int = 2000):
    return minimize_huber(_objective_grad, theta0, (log_n, log_d, log_l), THETA_BOUNDS, delta, maxiter)


class ChinchillaLaw(Law):
    """L(N, D) = E + A / N^alpha + B / D^beta (approach 3 fit; see the module docstring).

    Options: ``grid`` (initialisations, default the published 4500), ``n_refine`` (at most
    how many of the best-screened starts get L-BFGS; None = all), ``refine_batch`` and
    ``refine_patience`` (stop refining after that many batches without a better loss; None =
    refine all ``n_refine``), ``warm_starts`` (how many of the best refined starts a
    bootstrap refit reuses besides the optimum).
    """

    name = "chinchilla"
    param_names = ("E", "A", "B", "alpha", "beta")
    roles = ("N", "D")
    theta_names = THETA_NAMES
    theta_bounds = THETA_BOUNDS
    exponents = ("alpha", "beta")

    def __init__(self, n_col: str | None = None, d_col: str | None = None,
                 loss_col: str | None = None, *, grid: np.ndarray | None = None,
                 n_refine: int | None = 256, refine_batch: int = 32, refine_patience: int | None = 2,
                 warm_starts: int = 4, maxiter: int = 2000, huber_delta: float = 1e-3, seed: int = 0,
                 **_: Any):
        super().__init__(n_col=n_col, d_col=d_col, loss_col=loss_col, huber_delta=huber_delta, seed=seed)
        self.grid = hoffmann_grid() if grid is None else np.atleast_2d(np.asarray(grid, dtype=float))
        self.n_refine = n_refine
        self.refine_batch = int(refine_batch)
        self.refine_patience = refine_patience
        self.warm_starts = warm_starts
        self.maxiter = maxiter
        self.n_starts: int | None = None
        self._top_thetas: np.ndarray | None = None

    # ------------------------------------------------------------------ fitting
    def _screen(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The objective at every start of the grid (one vectorised pass)."""
        log_n, log_d, log_l = np.log(arrays["N"]), np.log(arrays["D"]), np.log(arrays["L"])
        return batch_objective(self.grid, log_n, log_d, log_l, self.huber_delta)

    def _refine(self, theta0: np.ndarray, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        """L-BFGS from one start: (theta, sum of Huber losses)."""
        log_n, log_d, log_l = np.log(arrays["N"]), np.log(arrays["D"]), np.log(arrays["L"])
        return lbfgs(theta0, log_n, log_d, log_l, self.huber_delta, self.maxiter)

    def _fit_arrays(self, arrays: dict[str, np.ndarray], warm: Law | None = None) -> None:
        def refine(th0: np.ndarray) -> tuple[float, np.ndarray]:
            th, f = self._refine(th0, arrays)
            return (f if np.all(np.isfinite(th)) and math.isfinite(f) else math.inf), th

        if warm is not None:
            starts = self._warm_starts(warm)
            start_idx = np.full(len(starts), -1)
            screened = None
            results = [refine(th0) for th0 in starts]
        else:
            screened = self._screen(arrays)
            screened = np.where(np.isfinite(screened), screened, np.inf)
            order = np.argsort(screened, kind="stable")
            if self.n_refine is not None:
                order = order[: self.n_refine]
            results, stale, best_so_far = [], 0, math.inf
            for lo in range(0, len(order), self.refine_batch):
                results += [refine(th0) for th0 in self.grid[order[lo:lo + self.refine_batch]]]
                batch_best = min(f for f, _ in results)
                stale = stale + 1 if batch_best >= best_so_far * (1 - REFINE_IMPROVEMENT) else 0
                best_so_far = min(best_so_far, batch_best)
                if self.refine_patience is not None and stale >= self.refine_patience:
                    break
            start_idx = order[: len(results)]
            starts = self.grid[start_idx]
        losses = np.array([f for f, _ in results])
        best = int(np.argmin(losses))
        self.theta_ = results[best][1]
        self.fit_loss = float(losses[best])
        self.n_starts = len(self.grid) if warm is None else len(starts)
        ranked = np.argsort(losses, kind="stable")
        self._top_thetas = np.array([results[i][1] for i in ranked[: max(self.warm_starts, 1)]])
        th0 = starts[best]
        self.winning_start = {
            "index": int(start_idx[best]),
            "start": dict(zip(self.theta_names, map(float, th0))),
            "refined_starts": int(len(starts)),
            "grid_size": int(len(self.grid)),
            "method": ("warm start from the full-data optimum" if warm is not None else
                       "vectorised objective at every grid start, L-BFGS from the best "
                       f"{len(starts)}"),
        }
        if screened is not None:
            self.winning_start["screened_rank"] = int(best)
        self.params = self.theta_to_params(self.theta_)

    @staticmethod
    def theta_to_params(theta: np.ndarray) -> dict[str, float]:
        a, b, e, alpha, beta = map(float, theta)
        return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}

    @staticmethod
    def params_to_theta(params: dict[str, float]) -> np.ndarray:
        return np.array([math.log(params["A"]), math.log(params["B"]), math.log(params["E"]),
                         params["alpha"], params["beta"]])

    def set_params(self, **params: float) -> "ChinchillaLaw":
        """Use given coefficients (E, A, B, alpha, beta) without fitting, e.g. to simulate."""
        self.params = {k: float(params[k]) for k in self.param_names}
        self.theta_ = self.params_to_theta(self.params)
        return self

    def _log_predict(self, theta: np.ndarray, x: dict[str, np.ndarray]) -> np.ndarray:
        a, b, e, alpha, beta = theta
        pred, _ = logsumexp_rows(a - alpha * np.log(x["N"]), b - beta * np.log(x["D"]),
                                 np.full(len(x["N"]), e))
        return pred

    def terms(self, N: Any, D: Any) -> dict[str, np.ndarray]:
        """The loss split into its parts: ``size`` = E + A/N^alpha (the D -> infinity limit)
        and ``data`` = B/D^beta; they sum to ``predict``."""
        self._require_fit()
        a, b, e, alpha, beta = self.theta_[:5]
        n, d = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
        return {"size": math.exp(e) + exp_or_inf(a - alpha * np.log(n)), "data": exp_or_inf(b - beta * np.log(d))}

    def fit_from(self, data: Any, theta0: Any) -> "ChinchillaLaw":
        """A new law fitted by L-BFGS from the single start ``theta0`` = (a, b, e, alpha, beta)
        only: the single-start baseline the grid is compared with."""
        law = self.clone()
        law.grid = np.atleast_2d(np.asarray(theta0, dtype=float))
        law.n_refine = None
        return law.fit(data)

    @property
    def units(self) -> dict[str, str]:
        return {"N": f"parameters (column {self.columns['N']!r}, raw count)",
                "D": f"tokens (column {self.columns['D']!r}, raw count)",
                "L": f"loss (column {self.columns['L']!r}, nats/token)",
                "E": "loss", "A": "loss * parameters^alpha", "B": "loss * tokens^beta",
                "compute": "FLOPs, C = 6 N D"}

    # ------------------------------------------------------------------ derived
    def compute_optimal(self, compute: Any) -> dict[str, np.ndarray]:
        """Chinchilla compute-optimal allocation for C = 6 N D:
        N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (1/G) (C/6)^(alpha/(alpha+beta)),
        G = (alpha A / (beta B))^(1/(alpha+beta))."""
        self._require_fit()
        a, b, e, alpha, beta = map(float, self.theta_)
        if not (alpha > 0 and beta > 0):
            raise ValueError(f"no compute-optimal allocation: alpha ({alpha:g}) and beta ({beta:g}) must be positive")
        c = np.asarray(compute, dtype=float)
        s = alpha + beta
        # in logs: G and the optimum overflow a float for steep or tiny exponents
        log_g = (math.log(alpha) + a - math.log(beta) - b) / s
        log_half = np.log(c / 6.0)
        log_n = log_g + (beta / s) * log_half
        log_d = -log_g + (alpha / s) * log_half
        loss = math.exp(e) + exp_or_inf(a - alpha * log_n) + exp_or_inf(b - beta * log_d)
        return {"compute": c, "n_opt": exp_or_inf(log_n), "d_opt": exp_or_inf(log_d),
                "tokens_per_param": exp_or_inf(log_d - log_n), "loss": loss, "G": float(exp_or_inf(log_g)),
                "n_exponent": beta / s, "d_exponent": alpha / s}

    def tokens_for_loss(self, N: Any, loss: Any) -> np.ndarray:
        """Tokens D at which L(N, D) = loss: D = (B / (loss - E - A/N^alpha))^(1/beta). NaN where
        ``loss`` is at or below E + A/N^alpha, the D -> infinity limit (unreachable at this N);
        inf where D exceeds the float range."""
        self._require_fit()
        p = self.params
        n, target = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(loss, dtype=float))
        gap = target - self.terms(n, 1.0)["size"]
        reachable = gap > 0
        log_d = (math.log(p["B"]) - np.log(np.where(reachable, gap, 1.0))) / p["beta"]
        finite = log_d < np.log(np.finfo(float).max)
        d = np.where(finite, np.exp(np.where(finite, log_d, 0.0)), np.inf)
        return np.where(reachable, d, np.nan)

    def derived(self, compute: Any = (), **_: Any) -> dict:
        if not self.params or not (self.params["alpha"] > 0 and self.params["beta"] > 0):
            return {"compute_optimal": None, "note": "alpha and beta must be positive for an optimum"}
        co = self.compute_optimal(np.asarray(compute, dtype=float))
        rows = [{"compute": float(c), "n_opt": float(n), "d_opt": float(d), "tokens_per_param": float(t),
                 "loss": float(lv)}
                for c, n, d, t, lv in zip(co["compute"], co["n_opt"], co["d_opt"], co["tokens_per_param"], co["loss"])]
        return {"G": float(co["G"]), "n_exponent": float(co["n_exponent"]),
                "d_exponent": float(co["d_exponent"]), "compute_optimal": rows,
                "definition": "C = 6 N D; N_opt = G (C/6)^(beta/(alpha+beta)), "
                              "D_opt = (C/6)^(alpha/(alpha+beta)) / G, G = (alpha A/(beta B))^(1/(alpha+beta))"}

    def derived_scalars(self, compute: Any = (), **_: Any) -> dict[str, float]:
        if not (self.params["alpha"] > 0 and self.params["beta"] > 0):
            return {}
        co = self.compute_optimal(np.asarray(compute, dtype=float))
        out = {"G": float(co["G"]), "n_exponent": float(co["n_exponent"]), "d_exponent": float(co["d_exponent"])}
        for i, c in enumerate(co["compute"]):
            out[f"n_opt@{c:.3g}"] = float(co["n_opt"][i])
            out[f"d_opt@{c:.3g}"] = float(co["d_opt"][i])
            out[f"loss@{c:.3g}"] = float(co["loss"][i])
        return out


class AverageParamsLaw(ChinchillaLaw):
    """Paper A's law: the Chinchilla form with N replaced by the average non-zero parameter
    count over training, N-bar (column ``n_avg``), fitted on dense and sparse runs together."""

    name = "average-params"
    default_columns = {**ChinchillaLaw.default_columns, "N": "n_avg"}
