"""``sparsescale fit``: fit a scaling law to any table of runs (CSV or parquet, raw units).

    sparsescale fit --law {chinchilla,average-params,recovery,sparsity} --data runs.csv --out fit.json
        [--n-col COL] [--d-col tokens] [--s-col sparsity] [--loss-col final_val_loss]
        [--scale-col scale] [--query "method == 'dense'"] [--drop-highest-loss K]
        [--min-n N] [--bootstrap B] [--kfold K] [--seed S] [--ci-level 0.95]
        [--compute C [C ...]] [--n-refine R] [--starts K] [--workers W]

Default N column: chinchilla -> n_final, average-params and recovery -> n_avg, sparsity -> n_final.
The recovery law also reads n_prunable, n_final, recovery_share and pruning_share (the last two
derived from steps, start_step and end_step, the trainer's metrics, when the table has none). A table with start and end columns (pruning
windows) also gets leave-one-window-out held-out predictions.
Heavy imports (numpy, scipy, pandas) happen inside the handler.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_N_COL = {"chinchilla": "n_final", "average-params": "n_avg", "recovery": "n_avg", "sparsity": "n_final"}
LAW_NAMES = ("chinchilla", "average-params", "recovery", "sparsity")
FORMULAS = {"chinchilla": "L = E + A / N^alpha + B / D^beta",
            "average-params": "L = E + A / Nbar^alpha + B / D^beta (Nbar: average non-zero parameters)",
            "recovery": "L = E + A / Nbar^alpha + B / D^beta + C U, U = exp(lam - R/rho) lam (1 - exp(-(lam + P/rho)))"
                        " / (lam + P/rho), lam = log(N0/Nfinal) (R: share of training after the last prune, P: from "
                        "the first prune to the last)",
            "sparsity": "L = (a_S (1-S)^b_S + c_S) (1/N)^b_N + (a_D/D)^b_D + c"}


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fit", help="fit a scaling law (chinchilla, average-params, recovery, sparsity) to a runs table",
        description="Fit a scaling law to a CSV/parquet table of runs (raw units: parameters, "
                    "tokens) and write params, fit loss, bootstrap CIs, held-out errors and "
                    "derived quantities to a JSON file.")
    p.add_argument("--law", required=True, choices=LAW_NAMES)
    p.add_argument("--data", required=True, help="runs table, .csv or .parquet")
    p.add_argument("--out", required=True, help="fit JSON to write (atomically)")
    p.add_argument("--n-col", default=None,
                   help="parameter-count column (default: n_final; n_avg for average-params)")
    p.add_argument("--d-col", default="tokens", help="training-token column (default: %(default)s)")
    p.add_argument("--s-col", default="sparsity", help="sparsity column, sparsity law (default: %(default)s)")
    p.add_argument("--loss-col", default="final_val_loss", help="loss column (default: %(default)s)")
    p.add_argument("--scale-col", default="scale",
                   help="column whose distinct values are the scales for leave-one-scale-out "
                        "(default: %(default)s; if absent: n_prunable, else N)")
    p.add_argument("--query", default=None, help="pandas query to select rows first, e.g. \"method == 'dense'\"")
    p.add_argument("--drop-highest-loss", type=int, default=0, metavar="K",
                   help="drop the K highest-loss points (reported under 'dropped')")
    p.add_argument("--min-n", type=float, default=None, metavar="N",
                   help="drop runs whose N column is below N (reported under 'dropped')")
    p.add_argument("--bootstrap", type=int, default=100, metavar="B",
                   help="bootstrap resamples over runs, for the fit's intervals; 0: none (default: %(default)s)")
    # off by default: B refits of each of the 1 + k held-out fits cost 1 + k times the fit's own
    # bootstrap (240 points, 5-fold: 23 s instead of 10 on a slow 2-core machine); the workflow
    # asks for them
    p.add_argument("--heldout-refits", type=int, default=0, metavar="B",
                   help="bootstrap refits of each held-out fit (leave one scale out, every k-fold fold), "
                        "kept with its predictions for the held-out runs, for intervals on held-out errors "
                        "(the N-bar claim's held-out analyses need 40); 0: none (default: %(default)s)")
    p.add_argument("--kfold", type=int, default=5, metavar="K", help="k for k-fold held-out error, 0: skip (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for bootstrap, folds, random starts (default: 0)")
    p.add_argument("--ci-level", type=float, default=0.95, help="bootstrap interval level (default: 0.95)")
    p.add_argument("--compute", type=float, nargs="+", default=None,
                   help="compute values (FLOPs) for derived quantities (default: 4 spanning the data)")
    p.add_argument("--n-refine", type=int, default=256,
                   help="chinchilla: L-BFGS from this many best-screened grid starts, 0: all 4500 (default: %(default)s)")
    p.add_argument("--starts", type=int, default=25, help="sparsity law: random BFGS starts (default: %(default)s, as published)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for the bootstrap and held-out refits (default: the CPUs this process may use)")
    p.set_defaults(func=run_fit)


def load_table(path: str):
    from pathlib import Path

    import pandas as pd

    from sparsescale.io import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: file not found")
    try:
        if p.suffix.lower() == ".parquet":
            return pd.read_parquet(p)
        if p.suffix.lower() in (".csv", ".txt"):
            return pd.read_csv(p)
    except Exception as err:  # pandas/pyarrow parse errors of many kinds
        raise InputError(f"{path}: cannot read table ({err})") from err
    raise InputError(f"{path}: unsupported table format {p.suffix!r} (use .csv or .parquet)")


def fit_table(frame, law_name: str, *, n_col: str | None = None, d_col: str = "tokens",
              s_col: str = "sparsity", loss_col: str = "final_val_loss", scale_col: str | None = "scale",
              query: str | None = None, drop_highest_loss: int = 0, min_n: float | None = None,
              bootstrap: int = 100, heldout_refits: int = 0, kfold: int = 5, seed: int = 0,
              ci_level: float = 0.95, compute: list[float] | None = None, n_refine: int | None = 256,
              starts: int = 25, workers: int = 1) -> dict:
    """Everything ``sparsescale fit`` does, on a DataFrame; returns the JSON-ready dict."""
    import numpy as np

    from sparsescale.io import InputError, get_logger
    from sparsescale.laws import derived as dmod
    from sparsescale.laws import uncertainty
    from sparsescale.laws.base import select_points

    log = get_logger("sparsescale.fit")
    if law_name == "recovery":
        from sparsescale.laws.recovery import with_recovery_columns

        frame = with_recovery_columns(frame)
    n_rows_in = len(frame)
    if query:
        try:
            frame = frame.query(query)
        except Exception as err:
            raise InputError(f"--query {query!r} failed: {err}") from err
        if len(frame) == 0:
            raise InputError(f"--query {query!r} selected no rows (of {n_rows_in})")
    n_col = n_col or DEFAULT_N_COL[law_name]
    kwargs: dict[str, Any] = {"n_col": n_col, "d_col": d_col, "loss_col": loss_col, "seed": seed}
    if law_name == "sparsity":
        kwargs.update(s_col=s_col, n_starts=starts)
    else:
        kwargs.update(n_refine=(n_refine or None))
    law = dmod.make_law(law_name, **kwargs)
    kept, dropped = select_points(frame, law, drop_highest_loss=drop_highest_loss, min_n=min_n)
    log.info("fitting %s law on %d points (%d dropped)", law_name, len(kept), len(dropped))
    law.fit(kept)
    if not law.status["usable"]:
        log.warning("the %s fit is unusable: %s", law_name, "; ".join(law.status["reasons"]))
    x = law.extract(kept)

    if law_name == "sparsity":
        dense_factor = 1.0 / (1.0 - x["S"])
        comp = np.asarray(compute, float) if compute else dmod.compute_grid(x["N"], x["D"], 3, dense_factor)
        dkw = {"n_values": dmod.size_grid(x["N"], 3), "compute": comp}
    else:
        comp = np.asarray(compute, float) if compute else dmod.compute_grid(x["N"], x["D"], 4)
        dkw = {"compute": comp}
    derived = law.derived(**dkw)

    boot = None
    if bootstrap and bootstrap > 0:
        log.info("bootstrap: %d resamples", bootstrap)
        boot = uncertainty.bootstrap(law, kept, n_boot=bootstrap, seed=seed, level=ci_level, derived_kwargs=dkw,
                                     workers=workers)
        derived["ci"] = boot["derived_ci"]
    log.info("held-out errors (leave-one-scale-out, %s-fold)", kfold or "no")
    held = uncertainty.heldout(law, kept, k=kfold, seed=seed, scale_col=scale_col, workers=workers,
                               refits=heldout_refits)
    if law_name != "sparsity" and uncertainty.window_keys(kept) is not None:
        log.info("held-out errors (leave one pruning window out)")
        held["leave_one_window_out"] = uncertainty.leave_one_window_out(law, kept, workers=workers)

    columns = dict(law.columns)
    return {
        "law": law_name,
        "formula": FORMULAS[law_name],
        "params": law.params,
        "status": law.status,
        "fit_loss": law.fit_loss,
        "n_points": law.n_points,
        "ci": boot["ci"] if boot else {},
        "ci_level": ci_level if boot else None,
        # the refits' coefficients too, so a planner can give any prediction an interval
        "bootstrap": ({k: boot[k] for k in ("n_boot", "n_failed", "level", "method")}
                      | {"seed": seed, "samples": boot["samples"].to_dict("records")}) if boot else None,
        "data_range": {role: [float(x[role].min()), float(x[role].max())] for role in law.roles},
        "heldout": held,
        "columns": {"N": columns["N"], "D": columns["D"], "loss": columns["L"],
                    **{role: columns[role] for role in ("S", "N0", "F", "R", "P") if role in columns}, "scale": scale_col},
        "query": query,
        "n_rows_in": n_rows_in,
        "n_rows_after_query": len(frame),
        "dropped": dropped,
        "drop_options": {"drop_highest_loss": drop_highest_loss, "min_n": min_n},
        "winning_start": law.winning_start,
        "fit_procedure": _procedure(law),
        "units": law.units,
        "derived": derived,
    }


def _procedure(law) -> dict:
    out = {"objective": "sum over runs of Huber(log predicted loss - log observed loss)",
           "huber_delta": law.huber_delta,
           "bounds": dict(zip(law.theta_names, map(list, law.theta_bounds)))}
    if law.name == "sparsity":
        out.update(optimizer="scipy L-BFGS-B (BFGS in a wide box)", random_starts=law.n_starts, seed=law.seed,
                   d_ref=law.d_ref, n_unit=1e6)
    else:
        out.update(optimizer="scipy L-BFGS-B (in a wide box)", grid="Hoffmann et al. 2022 (4500 starts)",
                   grid_size=int(len(law.grid)), n_refine=law.n_refine or int(len(law.grid)))
    return out


def run_fit(args: argparse.Namespace) -> int:
    from sparsescale.io import InputError, get_logger, write_json
    from sparsescale.laws import uncertainty

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.heldout_refits < 0:
        raise InputError(f"--heldout-refits must be 0 or more, got {args.heldout_refits}")

    frame = load_table(args.data)
    result = fit_table(
        frame, args.law, n_col=args.n_col, d_col=args.d_col, s_col=args.s_col, loss_col=args.loss_col,
        scale_col=args.scale_col, query=args.query, drop_highest_loss=args.drop_highest_loss,
        min_n=args.min_n, bootstrap=args.bootstrap, heldout_refits=args.heldout_refits, kfold=args.kfold,
        seed=args.seed,
        ci_level=args.ci_level, compute=args.compute, n_refine=args.n_refine, starts=args.starts,
        workers=args.workers or uncertainty.usable_cpus())
    result = _finite_or_null({"data": str(args.data), **result})
    write_json(args.out, result)
    get_logger("sparsescale.fit").info("wrote %s (params %s)", args.out,
                                       {k: round(v, 4) for k, v in result["params"].items()})
    return 0


def _finite_or_null(obj: Any) -> Any:
    """NaN/inf -> null, so the JSON is standard JSON."""
    import math

    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _finite_or_null(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
