"""A realistic fake aggregate + fit JSONs, so the notebooks run before (and without) the pipeline.

``build(root)`` writes, under ``root``:
- ``aggregate/runs.csv``, ``aggregate/runs.parquet``, ``aggregate/steps.parquet`` with the
  columns of docs/ARCHITECTURE.md: a natural corpus ``stdlib`` (dense ladder over three
  scales and two budgets, two seeds; global geometric schedules over a start x end grid at
  two final sparsities; uniform cubic 25->75 at three sparsities; 2:4 n:m) and a synthetic
  corpus with a known entropy rate (dense ladder);
- ``fits/{dense_only,average_params,final_params,sparsity,synthetic}.json`` with the contract
  keys (``params``, ``ci``, ``heldout``, ``columns``, ``query``, ``units`` ...);
- ``data/{corpus}/tokens/manifest.json`` and ``config.yaml``.
and returns the notebook parameters that point at them.

Losses come from known laws (the N̄ law for every run, plus a small penalty for pruning away
from 25%->75%) with small seed noise. Geometric runs get the dense run's compute (more tokens
the sparser they are), as in paper A's fixed-budget comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SCALES = {"s1": 4.0e5, "s2": 1.0e6, "s3": 2.5e6}  # prunable params
EMBED = {"s1": 1.3e5, "s2": 2.6e5, "s3": 5.2e5}
BUDGETS = {"tpp10": 10, "tpp20": 20}
TRUE = {"stdlib": {"E": 1.5, "A": 150.0, "B": 150.0, "alpha": 0.34, "beta": 0.28},
        "synthetic": {"E": 2.0, "A": 120.0, "B": 130.0, "alpha": 0.32, "beta": 0.30}}
ENTROPY = 2.0
SPARSITY_PARAMS = {"a_S": 1.0, "b_S": 0.7, "c_S": 1.2, "b_N": 0.35, "a_D": 5e6, "b_D": 0.5, "c": 1.5}
COST = {"k": 1e-9, "exponent": 0.8, "overhead_s": 3.0}  # train job wall time = k * FLOPs^exponent (with noise)
STEPS = 40
EVAL_EVERY = 4


def _density_curve(method, shape, target, start, end, n_steps, n=None, m=None):
    p = (np.arange(n_steps) + 1) / n_steps
    if method == "dense" or target == 0:
        return np.ones(n_steps)
    q = np.clip((p - start) / max(end - start, 1e-9), 0, 1)
    q = np.floor(q * 8) / 8  # pruning events
    if shape == "geometric":
        return (1 - target) ** q
    return 1 - target * (1 - (1 - q) ** 3)  # cubic


def _job_cost(cost_rng, n_prunable, tokens):
    """Snakemake-benchmark columns of a train job whose time follows the COST power law."""
    flops_per_token = 6.0 * n_prunable * 1.05
    wall = COST["k"] * (flops_per_token * tokens) ** COST["exponent"] * np.exp(cost_rng.normal(0, 0.05))
    return {"model_flops_per_token": flops_per_token, "wall_time_s": wall - COST["overhead_s"], "job_wall_s": wall,
            "job_cpu_s": 1.9 * wall, "job_max_rss_mb": 300.0 + 3.2e-5 * n_prunable}


def _run_rows(rng, cost_rng, corpus, scale, budget, schedule, seed, method, shape, target, start, end, penalty=0.0,
              equal_compute=False):
    n_prunable = SCALES[scale]
    dens = _density_curve(method, shape, target, start, end, STEPS)
    tokens = BUDGETS[budget] * n_prunable / (dens.mean() if equal_compute else 1.0)
    tok_step = tokens / STEPS
    nnz = n_prunable * dens
    compute = np.cumsum(6 * nnz * tok_step)
    n_avg_run = np.cumsum(nnz) / np.arange(1, STEPS + 1)
    t = TRUE[corpus]
    n_avg = float(n_avg_run[-1])
    final = t["E"] + t["A"] / n_avg ** t["alpha"] + t["B"] / tokens ** t["beta"] + penalty
    final += rng.normal(0, 0.004)
    step_tokens = tok_step * np.arange(1, STEPS + 1)
    val = final + 0.9 * (np.sqrt(tokens / step_tokens) - 1) + 0.03 * (1 - dens)
    val = np.where((np.arange(STEPS) + 1) % EVAL_EVERY == 0, val, np.nan)
    val[-1] = final
    train = final + 0.9 * (np.sqrt(tokens / step_tokens) - 1) + rng.normal(0, 0.02, STEPS) + 0.02
    run_id = f"{corpus}/{scale}/{budget}/{schedule}/seed{seed}"
    steps = pd.DataFrame({"run_id": run_id, "corpus": corpus, "scale": scale, "budget": budget, "schedule": schedule,
                          "seed": seed, "method": method, "step": np.arange(STEPS), "tokens": step_tokens.astype(np.int64),
                          "lr": 1e-3, "train_loss": train, "val_loss": val, "density": dens,
                          "n_nonzero": nnz.astype(np.int64), "compute": compute, "n_avg": n_avg_run})
    achieved = float(1 - dens[-1]) + (rng.normal(0, 0.002) if target > 0 else 0.0)
    metrics = {"run_id": run_id, "corpus": corpus, "scale": scale, "budget": budget, "schedule": schedule, "seed": seed,
               "method": method, "shape": shape, "target_sparsity": target, "start": start, "end": end,
               "final_val_loss": final, "n_prunable": n_prunable, "n_final": float(nnz[-1]), "n_avg": n_avg,
               "n_embedding": EMBED[scale], "n_total": n_prunable + EMBED[scale], "tokens": tokens,
               "compute": float(compute[-1]), "sparsity": achieved, "mean_density": float(dens.mean()),
               "epochs": 0.4, "tokens_per_s": 2e4, "device": "cpu", **_job_cost(cost_rng, n_prunable, tokens)}
    return metrics, steps


def make_runs(seed: int = 0, penalty_25_75: float = 0.0):
    """(runs, steps) frames. ``penalty_25_75`` adds that much loss to every 25%->75% geometric run."""
    rng = np.random.default_rng(seed)
    cost_rng = np.random.default_rng(seed + 1)  # its own stream: the losses stay as they were
    runs, steps = [], []

    def add(*args, **kw):
        m, s = _run_rows(rng, cost_rng, *args, **kw)
        runs.append(m)
        steps.append(s)

    windows = [(0.0, 0.25), (0.0, 0.5), (0.0, 0.75), (0.25, 0.5), (0.25, 0.75), (0.25, 1.0), (0.5, 0.75), (0.5, 1.0)]
    for scale in SCALES:
        for budget in BUDGETS:
            for sd in (0, 1):
                add("stdlib", scale, budget, "dense", sd, "dense", None, 0.0, np.nan, np.nan)
            for target in (0.25, 0.5, 0.75):
                add("stdlib", scale, budget, f"uniform-cubic-s{int(target * 100)}", 0, "uniform", "cubic", target, 0.25, 0.75,
                    penalty=0.01 * target)
            add("synthetic", scale, budget, "dense", 0, "dense", None, 0.0, np.nan, np.nan)
    for scale in ("s1", "s2"):
        for target in (0.5, 0.8):
            for start, end in windows:
                pen = 1.5 * target * ((start - 0.25) ** 2 + (end - 0.75) ** 2)
                if (start, end) == (0.25, 0.75):
                    pen += penalty_25_75
                for sd in (0, 1):
                    add("stdlib", scale, "tpp20", f"geometric-s{int(target * 100)}-{int(start * 100)}to{int(end * 100)}", sd,
                        "global", "geometric", target, start, end, penalty=pen, equal_compute=True)
        add("stdlib", scale, "tpp20", "nm-2of4", 0, "nm", "cubic", 0.5, 0.25, 0.75, penalty=0.02)
    return pd.DataFrame(runs), pd.concat(steps, ignore_index=True)


def _fit(law, params, ci_rel, query, columns, loso, kfold, n_points, units=None, runs=None, predict=None,
         data_range=None, samples=None, heldout_refits=None):
    """A fit JSON. With ``runs`` and ``predict`` (the law on those runs), held-out blocks carry
    per-run predictions (s2, the largest scale with sparse runs, for leave-one-scale-out; all
    for k-fold), and ``heldout_refits`` (by kind: refits x those runs) are the held-out fits'
    refits' predictions; bootstrap refits are ``samples``, or scatter every coefficient by about
    ``ci_rel / 4`` (seeded)."""
    rng = np.random.default_rng(len(query))
    if samples is None:
        samples = [{k: v * float(np.exp(ci_rel / 4 * rng.normal())) for k, v in params.items()} for _ in range(40)]
    fit = {"law": law, "params": params, "status": {"usable": True, "reasons": [], "at_bounds": []},
           "ci": {k: [v * (1 - ci_rel), v * (1 + ci_rel)] for k, v in params.items()},
           "bootstrap": {"n_boot": len(samples), "n_failed": 0, "level": 0.95, "samples": samples},
           "fit_loss": 1e-4, "n_points": n_points, "query": query, "columns": columns, "dropped": [],
           "heldout": {"leave_one_scale_out": {"mae": loso, "rmse": loso * 1.3, "held_out_scale": "s2"},
                       "kfold": {"mae": kfold, "rmse": kfold * 1.3, "k": 5}}}
    if runs is not None:
        for kind, rows in (("leave_one_scale_out", runs[runs["scale"] == "s2"]), ("kfold", runs)):
            fit["heldout"][kind]["predictions"] = [
                {"run_id": r, "observed": float(o), "predicted": float(q)}
                for r, o, q in zip(rows["run_id"], rows["final_val_loss"], predict(rows))]
    for kind, predicted in (heldout_refits or {}).items():
        fit["heldout"][kind]["refits"] = {"n_boot": len(predicted), "n_failed": 0, "seed": 0, "predicted": predicted}
    if units:
        fit["units"] = units
    if data_range:
        fit["data_range"] = data_range
    return fit


def _range(frame: pd.DataFrame, **columns: str) -> dict:
    return {role: [float(frame[col].min()), float(frame[col].max())] for role, col in columns.items()}


def _least_squares(model, x0, frame, cols, free):
    """A quick bounded least-squares fit of the ``free`` params (the real fitter is the ``fit`` stage)."""
    from scipy.optimize import least_squares

    args = [frame[c].to_numpy(float) for c in cols]
    y = frame["final_val_loss"].to_numpy(float)
    res = least_squares(lambda v: model({**x0, **dict(zip(free, v))}, *args) - y, [x0[k] for k in free],
                        bounds=(1e-6, np.inf), x_scale="jac", max_nfev=2000)
    return {**x0, **dict(zip(free, map(float, res.x)))}


def _chin(p, n, d):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def _sparse(p, s, n, d):
    """Paper B's law in the fit JSON's units (sparsescale.laws.SparsityLaw): N in millions, D raw."""
    n = n / 1e6
    return (p["a_S"] * (1 - s) ** p["b_S"] + p["c_S"]) * (1 / n) ** p["b_N"] + (p["a_D"] / d) ** p["b_D"] + p["c"]


def make_fits(runs: pd.DataFrame, entropy_offset: float = 0.02) -> dict[str, dict]:
    """Fit JSONs with the contract keys; params from a quick least-squares fit to the fixture runs."""
    t = TRUE["stdlib"]
    std_q = "corpus == 'stdlib' and method in ['dense', 'global']"
    dense_q = "corpus == 'stdlib' and method == 'dense'"
    uni_q = "corpus == 'stdlib' and method == 'uniform'"
    syn_q = "corpus == 'synthetic'"
    std, dense, uni = runs.query(std_q), runs.query(dense_q), runs.query(uni_q)
    free = ["E", "A", "alpha"]
    avg = _least_squares(_chin, t, std, ["n_avg", "tokens"], free)
    fin = _least_squares(_chin, t, std, ["n_final", "tokens"], free)
    den = _least_squares(_chin, t, dense, ["n_avg", "tokens"], free)

    def refits(frame: pd.DataFrame, n: int = 40) -> list[dict]:
        """Real bootstrap refits (the transfer analysis reads the dense law's uncertainty from them)."""
        rng = np.random.default_rng(0)
        return [_least_squares(_chin, t, frame.iloc[rng.integers(0, len(frame), len(frame))], ["n_avg", "tokens"], free)
                for _ in range(n)]

    def heldout_refits(n_col: str, n: int = 40) -> dict[str, list[list[float]]]:
        """Real refits on resamples of the runs below s2, predicting s2, and (k-fold's
        stand-in) of all runs, predicting all; the same resamples for both laws."""
        refit = {}
        for kind, train, test in (("leave_one_scale_out", std[std["scale"] != "s2"], std[std["scale"] == "s2"]),
                                  ("kfold", std, std)):
            rng = np.random.default_rng(0)
            fits = [_least_squares(_chin, t, train.iloc[rng.integers(0, len(train), len(train))], [n_col, "tokens"],
                                   free) for _ in range(n)]
            refit[kind] = [list(map(float, _chin(p, test[n_col], test["tokens"]))) for p in fits]
        return refit

    spa = _least_squares(_sparse, SPARSITY_PARAMS, uni, ["sparsity", "n_final", "tokens"], ["a_S", "c_S", "b_N", "c"])
    syn = dict(TRUE["synthetic"])
    syn["E"] = ENTROPY * (1 + entropy_offset)
    cols = lambda n: {"n": n, "d": "tokens", "loss": "final_val_loss"}  # noqa: E731
    return {
        "average_params": _fit("average-params", avg, 0.08, std_q, cols("n_avg"), 0.012, 0.010, len(std), runs=std,
                               predict=lambda r: _chin(avg, r["n_avg"], r["tokens"]),
                               data_range=_range(std, N="n_avg", D="tokens"), heldout_refits=heldout_refits("n_avg")),
        "final_params": _fit("chinchilla", fin, 0.1, std_q, cols("n_final"), 0.045, 0.040, len(std), runs=std,
                             predict=lambda r: _chin(fin, r["n_final"], r["tokens"]),
                             heldout_refits=heldout_refits("n_final")),
        "dense_only": _fit("chinchilla", den, 0.15, dense_q, cols("n_avg"), 0.030, 0.025, len(dense),
                           data_range=_range(dense, N="n_avg", D="tokens"), samples=refits(dense)),
        "sparsity": _fit("sparsity", spa, 0.2, uni_q, {"s": "sparsity", **cols("n_final")}, 0.02, 0.02, len(uni),
                         units={"N": "non-zero parameters; the law uses N in millions", "a_D": "tokens"},
                         data_range=_range(uni, S="sparsity", N="n_final", D="tokens")),
        "synthetic": _fit("chinchilla", syn, 0.03, syn_q, cols("n_avg"), 0.01, 0.01, 6),
    }


CONFIG_YAML = """\
# fixture study config (fake)
corpora:
  stdlib: {source: stdlib, vocab_size: 1024}
  synthetic: {source: synthetic, entropy_rate_nats: 2.0}
scales:
  s1: {d_model: 48, n_layers: 2, n_heads: 2, d_ff: 128}
  s2: {d_model: 64, n_layers: 2, n_heads: 2, d_ff: 192}
  s3: {d_model: 96, n_layers: 3, n_heads: 3, d_ff: 256}
budgets: {tpp10: {tokens_per_param: 10}, tpp20: {tokens_per_param: 20}}
training: {seq_len: 64, batch_size: 16, lr: 1.0e-3}
"""


def build(root: str | Path, seed: int = 0, penalty_25_75: float = 0.0, fits: bool = True) -> dict:
    """Write the fixture under ``root``; return the notebook parameters pointing at it."""
    root = Path(root)
    agg = root / "aggregate"
    agg.mkdir(parents=True, exist_ok=True)
    runs, steps = make_runs(seed, penalty_25_75)
    runs.to_csv(agg / "runs.csv", index=False)
    runs.to_parquet(agg / "runs.parquet", index=False)
    steps.to_parquet(agg / "steps.parquet", index=False)
    fit_paths = {}
    if fits:
        (root / "fits").mkdir(exist_ok=True)
        for role, fit in make_fits(runs).items():
            path = root / "fits" / f"{role}.json"
            path.write_text(json.dumps(fit, indent=2))
            fit_paths[role] = str(path)
    manifests = {}
    for corpus, entropy in (("stdlib", None), ("synthetic", ENTROPY)):
        path = root / "data" / corpus / "tokens" / "manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"source": {"kind": corpus}, "vocab_size": 1024, "eot_id": 0, "dtype": "uint16",
                                    "tokens": {"train": 10**6, "val": 10**5}, "entropy_rate_nats": entropy}))
        manifests[corpus] = str(path)
    config = root / "config.yaml"
    config.write_text(CONFIG_YAML)
    return {"runs_csv": str(agg / "runs.csv"), "steps_parquet": str(agg / "steps.parquet"), "fits": fit_paths,
            "data_manifests": manifests, "config_path": str(config)}


if __name__ == "__main__":  # python tests/notebook_fixtures.py DIR
    import sys

    print(json.dumps(build(sys.argv[1]), indent=2))


# ---------------------------------------------------------------------------------------
# Executed notebooks, shared by tests/test_notebooks.py and tests/test_report.py: each
# template is executed once per test session (kernel start-up is the slow part), two at a
# time in worker processes.
# ---------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("schedules", "training_curves", "when_to_prune", "average_params_law", "sparsity_law", "against_papers",
             "cost", "planner")
_CACHE: dict = {}


def _execute(job):
    from sparsescale.notebook import run_notebook

    template, out_dir, params = job
    run_notebook(template, out_dir, params)
    return str(out_dir)


def executed_notebooks() -> dict:
    """``{"root", "params", "variant_params", "out": {job name: folder}}``; built on first call.

    Jobs: every notebook on the fixture; ``against_papers`` on a variant whose 25%->75% runs
    are 0.3 nats worse (parameters honoured, verdict computed); ``sparsity_law`` and
    ``against_papers`` with no fits and no steps (robust to a missing input); ``cost`` on a
    runs table aggregated without benchmarks.
    """
    if _CACHE:
        return _CACHE
    import atexit
    import multiprocessing
    import shutil
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    from sparsescale.notebook import fits_read

    root = Path(tempfile.mkdtemp(prefix="sparsescale-notebooks-"))
    atexit.register(shutil.rmtree, root, True)
    params = build(root / "fixture")
    variant = build(root / "variant", penalty_25_75=0.3)
    bare = {**params, "fits": {}, "steps_parquet": str(root / "missing.parquet")}

    def reading_its_fits(name, given):
        """As the workflow runs a template: with only the fits its metadata says it reads."""
        template = REPO / "notebooks" / f"{name}.ipynb"
        return template, {**given, "fits": fits_read(template, given["fits"])}

    jobs = {}
    for name in NOTEBOOKS:
        template, given = reading_its_fits(name, params)
        jobs[name] = (template, root / "out" / name, given)
    template, given = reading_its_fits("against_papers", variant)
    jobs["against_papers_variant"] = (template, root / "out-variant" / "against_papers", given)
    for name in ("sparsity_law", "against_papers", "training_curves", "planner"):
        jobs[f"{name}_bare"] = (REPO / "notebooks" / f"{name}.ipynb", root / "out-bare" / name, bare)
    unbenchmarked = root / "unbenchmarked-runs.csv"
    pd.read_csv(params["runs_csv"]).drop(columns=["job_wall_s", "job_cpu_s", "job_max_rss_mb"]).to_csv(unbenchmarked,
                                                                                                      index=False)
    jobs["cost_bare"] = (REPO / "notebooks" / "cost.ipynb", root / "out-bare" / "cost",
                         {**params, "runs_csv": str(unbenchmarked)})
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_execute, job) for name, job in jobs.items()}
        out = {name: Path(f.result()) for name, f in futures.items()}
    _CACHE.update(root=root, params=params, variant_params=variant, out=out)
    return _CACHE
