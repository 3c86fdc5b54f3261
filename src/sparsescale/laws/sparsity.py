"""Paper B's law (Frantar et al. 2023):

    L(S, N, D) = (a_S (1 - S)^b_S + c_S) (1/N)^b_N + (a_D / D)^b_D + c

S = sparsity in [0, 1), N = non-zero parameters, D = training tokens.

Fitting follows their published procedure for the language (T5/C4) fit: Huber loss with
delta = 1e-3 on log-loss residuals, summed over runs, minimised by BFGS from 25 random
starts (``n_starts``, seeded), best kept; N in millions, D normalised. Implementation
details (ours): the positive coefficients a_S, c_S, a_D, c are optimised as logs and the
prediction is computed in log space with log-sum-exp (as in Chinchilla approach 3), so every
start is finite; D is divided internally by ``d_ref`` (the geometric mean of the fitted D
unless given) so that random starts for a_D are scale-free, and a_D is converted back.
BFGS runs in its box-bounded form (L-BFGS-B) inside ``THETA_BOUNDS``, far outside the
published fits: on a few noisy points an unbounded search can run to exponents in the
hundreds (b_S = -264 was seen on the tiny study), a law that overflows a float wherever it is
evaluated. A fit whose shape exponent ends on a bound is reported unusable (``law.status``).
Every evaluation (``loss``, ``optimal_sparsity``, ``effective_multiplier``) is done in log
space, so no parameter inside the box overflows or warns.

Units of the reported coefficients (also in ``law.units``): N in millions of non-zero
parameters (as published), so a_S and c_S are in loss * (1e6 parameters)^b_N; a_D in raw
tokens (the ratio a_D / D is unit-free, so no conversion is hidden); c in loss units.
Inputs are always raw counts (parameters, tokens).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize

from sparsescale.laws.base import Law, exp_or_inf, logsumexp_rows

N_UNIT = 1e6
THETA_NAMES = ("log_a_S", "b_S", "log_c_S", "b_N", "log_a_D_norm", "b_D", "log_c")
# published fits: b_S 0.72-0.82, b_N 0.25-0.39, b_D 0.20-0.89, log-coefficients within +-20
THETA_BOUNDS = ((-30.0, 30.0), (-5.0, 5.0), (-30.0, 30.0), (0.0, 5.0), (-30.0, 30.0), (0.0, 5.0), (-30.0, 10.0))
PUBLISHED_T5 = {"a_S": 16.79, "b_S": 0.722, "c_S": 45.02, "b_N": 0.245, "a_D": 1.05e4,
                "b_D": 0.203, "c": 0.651}  # a_D in training steps, as published

OPTIMAL_SPARSITY_DEFINITION = (
    "At a fixed number of non-zero parameters N and training compute C, S_opt = argmin over "
    "S in [0, s_max] of L(S, N, D) with D = C (1 - S) / (6 N): training is charged as the "
    "dense model of the same shape, C = 6 (N / (1 - S)) D, since a sparse model is trained "
    "(pruned gradually) from its dense size and sparse training gives no FLOP saving on "
    "standard hardware (paper B's accounting). So more sparsity buys a larger dense-"
    "equivalent model at the cost of fewer tokens for the same N and C."
)


def _log_pred_and_parts(theta: np.ndarray, log1ms: np.ndarray, log_n: np.ndarray, log_d: np.ndarray):
    """log L and the softmax weights of its terms, for broadcastable log(1 - S), log N, log D."""
    la_s, b_s, lc_s, b_n, la_d, b_d, lc = theta
    log1ms, log_n, log_d = np.broadcast_arrays(log1ms, log_n, log_d)
    k, (v1, v2) = logsumexp_rows(la_s + b_s * log1ms, np.full(log1ms.shape, lc_s))
    t1 = k - b_n * log_n
    t2 = b_d * (la_d - log_d)
    pred, (w1, w2, w3) = logsumexp_rows(t1, t2, np.full(log1ms.shape, lc))
    return pred, v1, v2, w1, w2, w3


def _objective_grad(theta, log1ms, log_n, log_d, log_l, delta):
    pred, v1, v2, w1, w2, w3 = _log_pred_and_parts(theta, log1ms, log_n, log_d)
    r = pred - log_l
    ar = np.abs(r)
    f = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum() / delta
    psi = np.clip(r, -delta, delta) / delta
    pw1 = psi * w1
    pw2 = psi * w2
    la_d, b_d = theta[4], theta[5]
    g = np.array([
        (pw1 * v1).sum(),
        (pw1 * v1 * log1ms).sum(),
        (pw1 * v2).sum(),
        -(pw1 @ log_n),
        (pw2.sum()) * b_d,
        (pw2 @ (la_d - log_d)),
        (psi * w3).sum(),
    ])
    if not math.isfinite(f):
        return math.inf, np.zeros(7)
    return float(f), g


class SparsityLaw(Law):
    """Paper B's L(S, N, D); see the module docstring for the fit and the units."""

    name = "sparsity"
    param_names = ("a_S", "b_S", "c_S", "b_N", "a_D", "b_D", "c")
    roles = ("S", "N", "D")
    theta_names = THETA_NAMES
    theta_bounds = THETA_BOUNDS
    exponents = ("b_S", "b_N", "b_D")

    def __init__(self, n_col: str | None = None, d_col: str | None = None,
                 loss_col: str | None = None, s_col: str | None = None, *,
                 n_starts: int = 25, d_ref: float | None = None, warm_starts: int = 4,
                 maxiter: int = 5000, huber_delta: float = 1e-3, seed: int = 0, **_: Any):
        super().__init__(n_col=n_col, d_col=d_col, loss_col=loss_col, s_col=s_col,
                         huber_delta=huber_delta, seed=seed)
        self.n_starts = int(n_starts)
        self.d_ref_option = d_ref
        self.d_ref: float | None = d_ref
        self.warm_starts = warm_starts
        self.maxiter = maxiter
        self._top_thetas: np.ndarray | None = None

    def random_starts(self, n: int, min_loss: float, rng: np.random.Generator) -> np.ndarray:
        """Random initialisations (internal parameterisation, D normalised, N in millions)."""
        lc_hi = min(math.log(0.95 * min_loss), THETA_BOUNDS[6][1])
        return np.column_stack([
            rng.uniform(-1.0, 5.0, n),    # log a_S
            rng.uniform(0.2, 1.5, n),     # b_S
            rng.uniform(-1.0, 5.0, n),    # log c_S
            rng.uniform(0.05, 0.8, n),    # b_N
            rng.uniform(-3.0, 3.0, n),    # log a_D (D / d_ref)
            rng.uniform(0.05, 0.8, n),    # b_D
            rng.uniform(lc_hi - 1.5, lc_hi, n),  # log c
        ])

    def _fit_arrays(self, arrays: dict[str, np.ndarray], warm: Law | None = None) -> None:
        if warm is not None:
            self.d_ref = warm.d_ref
        elif self.d_ref_option is None:
            self.d_ref = float(np.exp(np.mean(np.log(arrays["D"]))))
        log1ms = np.log1p(-arrays["S"])
        log_n = np.log(arrays["N"] / N_UNIT)
        log_d = np.log(arrays["D"] / self.d_ref)
        log_l = np.log(arrays["L"])
        delta = self.huber_delta
        if warm is not None:
            starts = self._warm_starts(warm)
        else:
            rng = np.random.default_rng(self.seed)
            starts = self.random_starts(self.n_starts, float(arrays["L"].min()), rng)
        results = []
        for th0 in starts:
            res = optimize.minimize(_objective_grad, np.clip(th0, *np.array(THETA_BOUNDS).T),
                                    args=(log1ms, log_n, log_d, log_l, delta), jac=True, method="L-BFGS-B",
                                    bounds=THETA_BOUNDS,
                                    options={"maxiter": self.maxiter, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 20})
            f = float(res.fun) * delta
            if not (math.isfinite(f) and np.all(np.isfinite(res.x))):
                f = math.inf
            results.append((f, res.x))
        losses = np.array([f for f, _ in results])
        best = int(np.argmin(losses))
        self.theta_ = results[best][1]
        self.fit_loss = float(losses[best])
        ranked = np.argsort(losses, kind="stable")
        self._top_thetas = np.array([results[i][1] for i in ranked[: max(self.warm_starts, 1)]])
        self.winning_start = {
            "index": best if warm is None else -1,
            "start": self._theta_to_params(starts[best]),
            "n_starts": int(len(starts)),
            "method": ("warm start from the full-data optimum" if warm is not None else
                       f"L-BFGS-B (box-bounded BFGS) from {len(starts)} random starts (seed {self.seed})"),
        }
        self.params = self._theta_to_params(self.theta_)

    def _theta_to_params(self, theta: np.ndarray) -> dict[str, float]:
        la_s, b_s, lc_s, b_n, la_d, b_d, lc = map(float, theta)
        return {"a_S": math.exp(la_s), "b_S": b_s, "c_S": math.exp(lc_s), "b_N": b_n,
                "a_D": math.exp(la_d) * self.d_ref, "b_D": b_d, "c": math.exp(lc)}

    def set_params(self, d_ref: float = 1.0, **params: float) -> "SparsityLaw":
        """Use given coefficients (reported units) without fitting, e.g. to simulate data."""
        self.d_ref = float(d_ref)
        p = {k: float(params[k]) for k in self.param_names}
        self.theta_ = np.array([math.log(p["a_S"]), p["b_S"], math.log(p["c_S"]), p["b_N"],
                                math.log(p["a_D"] / self.d_ref), p["b_D"], math.log(p["c"])])
        self.params = self._theta_to_params(self.theta_)
        return self

    def _log_predict(self, theta: np.ndarray, x: dict[str, np.ndarray]) -> np.ndarray:
        pred, *_ = _log_pred_and_parts(theta, np.log1p(-x["S"]), np.log(x["N"] / N_UNIT),
                                       np.log(x["D"] / self.d_ref))
        return pred

    @property
    def units(self) -> dict[str, str]:
        return {"S": f"sparsity (column {self.columns['S']!r}), fraction of pruned prunable weights",
                "N": f"non-zero parameters (column {self.columns['N']!r}); the law uses N in millions",
                "D": f"tokens (column {self.columns['D']!r}); fitted as D / {self.d_ref:.6g} (normalised)",
                "L": f"loss (column {self.columns['L']!r})",
                "a_S": "loss * (millions of parameters)^b_N", "c_S": "loss * (millions of parameters)^b_N",
                "a_D": "tokens", "c": "loss", "b_S": "unitless", "b_N": "unitless", "b_D": "unitless",
                "compute": "FLOPs, C = 6 (N / (1 - S)) D (dense-equivalent training cost)"}

    # ------------------------------------------------------------------ derived
    def loss(self, s: Any, n: Any, d: Any) -> np.ndarray:
        """L(S, N, D) for broadcastable raw arrays."""
        self._require_fit()
        s, n, d = np.broadcast_arrays(np.asarray(s, float), np.asarray(n, float), np.asarray(d, float))
        pred, *_ = _log_pred_and_parts(self.theta_, np.log1p(-s), np.log(n / N_UNIT), np.log(d / self.d_ref))
        return exp_or_inf(pred)

    def optimal_sparsity(self, n_nonzero: Any, compute: Any, s_max: float = 0.99,
                         resolution: int = 991) -> dict[str, np.ndarray]:
        """S_opt over the broadcast (N, C) grid. Definition (paper B's cost accounting):

        At a fixed number of non-zero parameters N and training compute C, S_opt is
        argmin over S in [0, s_max] of L(S, N, D) with D = C (1 - S) / (6 N), i.e. training
        is charged as the dense model of the same shape, C = 6 (N / (1 - S)) D. Found by a
        grid search over ``resolution`` values of S (step s_max / (resolution - 1)).
        """
        n, c = np.broadcast_arrays(np.asarray(n_nonzero, float), np.asarray(compute, float))
        s_grid = np.linspace(0.0, s_max, resolution)
        d = c[..., None] * (1 - s_grid) / (6 * n[..., None])
        losses = self.loss(s_grid, n[..., None], d)
        i = np.argmin(losses, axis=-1)
        s_opt = s_grid[i]
        return {"n": n, "compute": c, "s_opt": s_opt,
                "d": c * (1 - s_opt) / (6 * n),
                "at_bound": s_opt >= s_max,
                "loss": np.take_along_axis(losses, i[..., None], -1)[..., 0],
                "dense_loss": losses[..., 0]}

    def effective_multiplier(self, s: Any) -> np.ndarray:
        """Dense-equivalent size factor of sparsity S: a sparse model with N non-zeros matches a
        dense model with multiplier * N parameters (data term held fixed)."""
        self._require_fit()
        la_s, b_s, lc_s, b_n = (float(v) for v in self.theta_[:4])
        s = np.asarray(s, float)
        log_ratio = np.logaddexp(la_s + b_s * np.log1p(-s), lc_s) - np.logaddexp(la_s, lc_s)
        if b_n <= 0:  # no size dependence: no dense-equivalent size
            return np.full(s.shape, np.nan)
        return exp_or_inf(-log_ratio / b_n)

    def derived(self, n_values: Any = (), compute: Any = (), sparsities: Any = (0.5, 0.75, 0.875),
                s_max: float = 0.99, **_: Any) -> dict:
        n_values = np.asarray(n_values, float)
        compute = np.asarray(compute, float)
        rows = []
        if n_values.size and compute.size:
            nn, cc = np.meshgrid(n_values, compute, indexing="ij")
            opt = self.optimal_sparsity(nn.ravel(), cc.ravel(), s_max=s_max)
            rows = [{"n_nonzero": float(a), "compute": float(b), "s_opt": float(s), "tokens": float(d),
                     "loss": float(lv), "dense_loss": float(dl), "at_s_max": bool(ab)}
                    for a, b, s, d, lv, dl, ab in zip(opt["n"], opt["compute"], opt["s_opt"], opt["d"],
                                                      opt["loss"], opt["dense_loss"], opt["at_bound"])]
        sp = np.asarray(sparsities, float)
        return {"optimal_sparsity": rows, "definition": OPTIMAL_SPARSITY_DEFINITION, "s_max": s_max,
                "effective_multiplier": {f"{s:g}": float(m) for s, m in zip(sp, self.effective_multiplier(sp))}}

    def derived_scalars(self, n_values: Any = (), compute: Any = (), sparsities: Any = (0.5, 0.75, 0.875), **_: Any) -> dict[str, float]:
        d = self.derived(n_values=n_values, compute=compute, sparsities=sparsities)
        out = {f"s_opt@N={r['n_nonzero']:.3g},C={r['compute']:.3g}": r["s_opt"] for r in d["optimal_sparsity"]}
        out.update({f"effective_multiplier@S={k}": v for k, v in d["effective_multiplier"].items()})
        return out
