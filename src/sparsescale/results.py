"""Reading the pipeline's outputs and evaluating the fitted laws they hold.

The file contracts are in docs/ARCHITECTURE.md: ``runs.csv`` (one row per run),
``steps.parquet``, the fit JSONs (``results/fits/*.json``) and the data manifests. Law
predictions are computed from a fit JSON's ``params`` by the laws library, so the claims
(``sparsescale.claims``) and the notebooks' figures evaluate exactly the law that was fitted.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sparsescale.io import InputError


# ---------------------------------------------------------------------------------------
# Published numbers (docs: /work/shared/papers/METHOD-NOTES.md)
# ---------------------------------------------------------------------------------------
CHINCHILLA_PUBLISHED = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
SPARSITY_PUBLISHED = {
    "ViT/JFT": {"a_S": 294.4, "b_S": 0.821, "c_S": 468.2, "b_N": 0.392, "a_D": 2.37e8, "b_D": 0.890, "c": 4.517},
    "T5/C4": {"a_S": 16.79, "b_S": 0.722, "c_S": 45.02, "b_N": 0.245, "a_D": 1.05e4, "b_D": 0.203, "c": 0.651},
}
PAPER_A_MAE = 0.016  # reported fit error of the N-bar law (unverified reading)
PAPER_SCALES = {
    "A (Jin et al. 2025)": "58M-468M params (Llama-2 style), C4, seq 2048, ~20 tokens/param",
    "B (Frantar et al. 2023)": "T5 / ViT, ~1M-85M non-zero params, up to ~1e11 tokens / JFT-4B",
}
CHINCHILLA_KEYS = ("E", "A", "B", "alpha", "beta")
SPARSITY_KEYS = ("a_S", "b_S", "c_S", "b_N", "a_D", "b_D", "c")
LAW_NAMES = {
    "average_params": "N̄ law (average non-zero params)",
    "final_params": "final-N law (final non-zero params)",
    "recovery": "N̄ law with recovery",
    "dense_only": "dense-only law",
    "sparsity": "sparsity law L(S, N, D)",
    "synthetic": "synthetic-corpus law",
}
DEFAULT_N_COL = {"average_params": "n_avg", "final_params": "n_final", "dense_only": "n_avg", "synthetic": "n_avg",
                 "sparsity": "n_final", "recovery": "n_avg"}


# ---------------------------------------------------------------------------------------
# Loading inputs
# ---------------------------------------------------------------------------------------
RUN_COLUMNS = ("run_id", "corpus", "scale", "budget", "schedule", "seed", "method", "final_val_loss")


def load_runs(path: str | os.PathLike) -> pd.DataFrame:
    """runs.csv or runs.parquet; checks the columns every notebook relies on."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: runs table not found")
    return checked_runs(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path), path)


def checked_runs(frame: pd.DataFrame, source: str | os.PathLike) -> pd.DataFrame:
    """A runs table already read (from ``source``, named in errors), checked as ``load_runs``
    checks it and with the same derived columns; ``frame`` itself is left as it was."""
    missing = [c for c in RUN_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{source}: missing columns {missing}")
    frame = frame.copy()
    for col in ("target_sparsity", "start", "end", "sparsity", "mean_density", "n_avg", "n_final", "tokens", "compute"):
        if col not in frame.columns:
            frame[col] = np.nan
    frame["target_sparsity"] = frame["target_sparsity"].fillna(0.0).astype(float)
    for col in ("shape",):
        if col not in frame.columns:
            frame[col] = None
    frame["family"] = frame.apply(schedule_family, axis=1)
    if "steps" in frame.columns:
        from sparsescale.laws.recovery import with_recovery_columns

        frame = with_recovery_columns(frame)
    return frame


def load_steps(path: str | os.PathLike | None) -> pd.DataFrame | None:
    if not path or not Path(path).is_file():
        return None
    return pd.read_parquet(path)


def load_fits(fits: dict | None) -> dict[str, dict]:
    """``{role: fit JSON}`` for every role whose file exists; absent files are skipped."""
    out: dict[str, dict] = {}
    for role, path in (fits or {}).items():
        if path and Path(path).is_file():
            fit = json.loads(Path(path).read_text(encoding="utf-8"))
            fit["_path"] = str(path)
            out[role] = fit
    return out


def fit_usable(fit: dict) -> bool:
    """False when ``sparsescale fit`` reported the fit unusable (fit JSONs before the status
    field count as usable)."""
    return bool((fit.get("status") or {}).get("usable", True))


def load_entropy(data_manifests: dict | None, key: str = "entropy_rate_nats") -> dict[str, float]:
    """``{corpus: value}`` of a manifest entropy for every manifest that states one: the true
    ``entropy_rate_nats`` of a synthetic corpus, or any corpus's ``unigram_entropy_nats``."""
    out: dict[str, float] = {}
    for corpus, path in (data_manifests or {}).items():
        if path and Path(path).is_file():
            value = json.loads(Path(path).read_text(encoding="utf-8")).get(key)
            if value is not None:
                out[corpus] = float(value)
    return out


def load_config_text(config_path: str | None) -> str:
    if config_path and Path(config_path).is_file():
        return Path(config_path).read_text(encoding="utf-8")
    return ""


# ---------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------


def schedule_family(row) -> str:
    method = str(row.get("method") or "").lower()
    shape = str(row.get("shape") or "").lower()
    if method in ("dense", "none", "") or not (row.get("target_sparsity") or 0) > 0:
        return "dense"
    if method == "nm":
        return "n:m"
    return f"{method} {shape}".strip()


def window_label(start, end) -> str:
    if start is None or end is None or (isinstance(start, float) and math.isnan(start)) or (
        isinstance(end, float) and math.isnan(end)
    ):
        return ""
    return f"{100 * start:.0f}%→{100 * end:.0f}%"



# ---------------------------------------------------------------------------------------
# Laws
# ---------------------------------------------------------------------------------------


def get_param(params: dict, name: str) -> float:
    """Case-sensitive first, then case-insensitive look-up of a fitted parameter."""
    if name in params:
        return float(params[name])
    lowered = {k.lower(): v for k, v in params.items()}
    if name.lower() in lowered:
        return float(lowered[name.lower()])
    raise InputError(f"fit params: no parameter {name!r} (have {sorted(params)})")


def fit_units(fit: dict) -> tuple[float, float]:
    """Divisors for N and D in a fit's coefficients, as the laws library defines them:
    the sparsity law's a_S and c_S are per million parameters; everything else is raw."""
    if fit.get("law") == "sparsity":
        from sparsescale.laws.sparsity import N_UNIT

        return N_UNIT, 1.0
    return 1.0, 1.0


def fit_columns(fit: dict, role: str) -> dict[str, str]:
    """Which runs.csv columns the fit used for n, d, s and loss (contract defaults otherwise)."""
    cols = {"n": DEFAULT_N_COL.get(role, "n_avg"), "d": "tokens", "s": "sparsity", "loss": "final_val_loss"}
    given = fit.get("columns") or {}
    if isinstance(given, dict):
        for key, value in given.items():
            k = str(key).lower().replace("_col", "").replace("-col", "")
            if k in cols and value:
                cols[k] = str(value)
    return cols


def _chinchilla(params: dict):
    from sparsescale.laws import ChinchillaLaw

    return ChinchillaLaw().set_params(**{k: get_param(params, k) for k in CHINCHILLA_KEYS})


def chinchilla_predict(params: dict, n, d):
    """L = E + A/N^alpha + B/D^beta from a fit JSON's params (raw N and D), by the laws library."""
    n, d = np.broadcast_arrays(np.asarray(n, dtype=float), np.asarray(d, dtype=float))
    return _chinchilla(params).predict(N=n.ravel(), D=d.ravel()).reshape(n.shape)


def chinchilla_terms(params: dict, n, d) -> dict[str, np.ndarray]:
    """The size part E + A/N^alpha and the data part B/D^beta of a fit JSON's law."""
    return _chinchilla(params).terms(n, d)


def sparsity_predict(params: dict, s, n, d):
    """Paper B's L(S, N, D) from a fit JSON's params (raw N and D), by the laws library."""
    from sparsescale.laws import SparsityLaw

    return SparsityLaw().set_params(**{k: get_param(params, k) for k in SPARSITY_KEYS}).loss(s, n, d)


def select_fit_runs(runs: pd.DataFrame, fit: dict) -> pd.DataFrame:
    """The runs a fit was made on: its ``query`` applied to runs.csv, minus ``dropped`` run ids."""
    query = fit.get("query")
    frame = runs
    if query:
        try:
            frame = runs.query(query, engine="python")
        except Exception:  # the query names columns this table lacks: use every run
            frame = runs
    dropped = fit.get("dropped") or []
    ids = {d.get("run_id") if isinstance(d, dict) else d for d in dropped}
    if ids:
        frame = frame[~frame["run_id"].isin(ids)]
    return frame.copy()


def law_predictions(runs: pd.DataFrame, fit: dict, role: str) -> pd.Series:
    cols = fit_columns(fit, role)
    if fit.get("law") == "recovery":
        from sparsescale.laws.recovery import RecoveryLaw, with_recovery_columns

        law = RecoveryLaw().set_params(**{k: get_param(fit["params"], k) for k in RecoveryLaw.param_names})
        runs = with_recovery_columns(runs)
        return pd.Series(law.predict(N=runs[cols["n"]], D=runs[cols["d"]], N0=runs["n_prunable"], F=runs["n_final"],
                                     R=runs["recovery_share"], P=runs["pruning_share"]), index=runs.index)
    if role == "sparsity" or str(fit.get("law", "")).startswith("sparsity"):
        return pd.Series(sparsity_predict(fit["params"], runs[cols["s"]].fillna(0), runs[cols["n"]], runs[cols["d"]]), index=runs.index)
    return pd.Series(chinchilla_predict(fit["params"], runs[cols["n"]], runs[cols["d"]]), index=runs.index)


def errors(observed, predicted) -> dict[str, float]:
    r = np.asarray(predicted, float) - np.asarray(observed, float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "n": 0}
    return {"mae": float(np.mean(np.abs(r))), "rmse": float(np.sqrt(np.mean(r**2))), "n": int(r.size)}


def heldout_metric(fit: dict, kind: str = "leave_one_scale_out", metric: str = "mae") -> tuple[float, list | None]:
    """A held-out error and its bootstrap interval when the fit JSON gives one."""
    block = (fit.get("heldout") or {}).get(kind) or {}
    value = block.get(metric)
    ci = None
    for key in (f"{metric}_ci", f"{metric}_interval"):
        if isinstance(block.get(key), (list, tuple)) and len(block[key]) == 2:
            ci = [float(block[key][0]), float(block[key][1])]
    if isinstance(block.get("ci"), dict) and isinstance(block["ci"].get(metric), (list, tuple)):
        ci = [float(x) for x in block["ci"][metric]]
    return (float(value) if value is not None else float("nan")), ci


def coefficient_table(fit: dict, keys=None) -> pd.DataFrame:
    params = fit.get("params") or {}
    ci = fit.get("ci") or {}
    keys = keys or list(params)
    rows = []
    for k in keys:
        try:
            value = get_param(params, k)
        except InputError:
            continue
        lo, hi = (ci.get(k) or ci.get(k.lower()) or [np.nan, np.nan])[:2]
        rows.append({"parameter": k, "value": value, "ci_low": float(lo) if lo is not None else np.nan,
                     "ci_high": float(hi) if hi is not None else np.nan})
    return pd.DataFrame(rows, columns=["parameter", "value", "ci_low", "ci_high"])


def mean_density_cost(s, cost: str = "dense"):
    """Training cost per token of a sparse run, as a multiple of its *non-zero* count.

    ``dense``: sparse training costs as much as the dense model it is pruned from,
    N / (1 - S) (the accounting of paper B); ``schedule``: the cubic 25%->75% schedule's
    mean density, (1 - 0.625 S) / (1 - S).
    """
    s = np.asarray(s, dtype=float)
    if cost == "schedule":
        return (1 - 0.625 * s) / (1 - s)
    return 1 / (1 - s)


def optimal_sparsity(params: dict, n_nonzero, compute, cost: str = "dense", s_max: float = 0.95, n_grid: int = 191):
    """S minimising L(S, N, D) (the sparsity law with ``params``) at fixed non-zero params N
    and training compute C.

    D follows from C = 6 * N * cost_factor(S) * D; S is searched on a grid over [0, s_max].
    Returns (S_opt, D at the optimum) arrays with the broadcast shape of N and C.
    """
    s_grid = np.linspace(0.0, s_max, n_grid)
    n = np.asarray(n_nonzero, float)[..., None]
    c = np.asarray(compute, float)[..., None]
    d = c / (6.0 * n * mean_density_cost(s_grid, cost))
    loss = sparsity_predict(params, s_grid, n, d)
    idx = np.nanargmin(loss, axis=-1)
    s_opt = s_grid[idx]
    d_opt = np.take_along_axis(d, idx[..., None], axis=-1)[..., 0]
    return s_opt, d_opt
