"""Planning with the fitted laws: a practitioner's questions answered before any training.

Every answer comes from a fit JSON (``sparsescale fit``'s output, ours or anyone's in that
format) or a published coefficient set shipped in ``published/`` (``published:NAME``):

- ``dense_allocation``: the Chinchilla law's compute-optimal N, D, tokens per parameter and
  loss for a compute budget C; ``tokens_for_loss``: the D that reaches a target loss at N.
- ``schedule_plan``: for concrete runs (model shape, budget, pruning schedule, expanded from
  the config's own syntax), the exact N-bar and training compute from the trainer's own
  schedule code (``account_run``), the N-bar law's predicted loss, ranked, beside the
  compute-optimal dense model of equal training compute and the dense model of equal
  final size.
- ``sparsity_plan``: paper B's optimal sparsity for non-zero size N and compute C, its D,
  loss, gain over dense at the same N and effective-parameter multiplier, over an (N, C) grid.
- ``check_runs``: predicted against observed loss for trained runs (after ``--emit-config``).

Cost: every answer states its training compute in FLOPs and, for a device of the hardware
table (or a given peak) at an MFU (measured on our runs on that device where there are any,
else ``DEFAULT_MFU``, stated as assumed), in device-hours: model FLOPs / (peak x MFU).

Uncertainty: a fit JSON holding bootstrap refits (``bootstrap.samples``) gives every
answer a percentile interval at the fit's level: the answer is recomputed for each refit.
A refit whose answer leaves the float range (the arithmetic raises) counts as failed and is
reported. Inputs beyond the fitted range of N, D or S (``data_range``) are flagged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from sparsescale.io import InputError

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MFU = 0.4  # a typical dense bf16 transformer-training MFU; used only without a measurement
PAPER_VOCAB_SIZE = 32000  # the papers' Llama-2 SentencePiece vocabulary (config/paper.yaml's tokenizer)
LAWS = ("chinchilla", "average-params", "recovery", "sparsity")  # the laws of sparsescale.laws.derived.make_law
POSITIVE = {"E", "A", "B", "a_S", "c_S", "a_D", "c", "rho"}  # optimised as logs: must be > 0
CHINCHILLA_LAWS = ("chinchilla", "average-params")
SCHEDULE_LAWS = (*CHINCHILLA_LAWS, "recovery")  # the laws that can rank pruning schedules (and allocate dense)
CLAIM_ROLES = {"average-params": "average_params", "recovery": "recovery"}  # law -> role in sparsescale.claims
FLOAT_ERRORS = (FloatingPointError, OverflowError, ZeroDivisionError)


# ----------------------------------------------------------------------------- fits


@dataclass
class LawFit:
    """One law's coefficients, its bootstrap refits and the range it was fitted on."""

    name: str
    law: str
    params: dict[str, float]
    samples: list[dict[str, float]] = field(default_factory=list)
    level: float = 0.95
    data_range: dict[str, list[float]] | None = None
    n_column: str | None = None
    source: str = ""
    invalid_samples: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # refits with no finite answer, by question
    document: dict = field(default_factory=dict, repr=False)  # the fit JSON (held-out predictions and all)

    @property
    def n_basis(self) -> str:
        """Which parameter count the law's N is: ``n_avg`` (N-bar), ``n_final``, or ``dense``
        (a published dense law: N = N-bar for dense runs; paper A's claim extends it to sparse)."""
        if self.law in ("average-params", "recovery") or self.n_column == "n_avg":
            return "n_avg"
        return "n_final" if self.n_column else "dense"

    def model(self, params: dict[str, float] | None = None):
        """The laws library's object for these (or a refit's) coefficients."""
        from sparsescale.laws.derived import make_law

        return make_law(self.law).set_params(**(params or self.params))

    def describe(self) -> dict:
        return {"fit": self.name, "law": self.law, "source": self.source, "params": self.params,
                "bootstrap_refits": len(self.samples), "level": self.level if self.samples else None,
                "data_range": self.data_range, "n_basis": self.n_basis}


def published_sets() -> list[str]:
    return sorted(p.stem for p in PUBLISHED_DIR.glob("*.json"))


def load_fit(spec: str) -> LawFit:
    """A fit JSON path, or ``published:NAME`` for a coefficient set shipped with the package."""
    if spec.startswith("published:"):
        name = spec.split(":", 1)[1]
        path = PUBLISHED_DIR / f"{name}.json"
        if not path.is_file():
            raise InputError(f"--fit {spec}: no published coefficient set {name!r} "
                             f"(available: {', '.join('published:' + n for n in published_sets())})")
    else:
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"--fit {spec}: file not found")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"--fit {spec}: not valid JSON ({err})") from err
    if not isinstance(doc, dict):
        raise InputError(f"--fit {spec}: expected a JSON object with 'law' and 'params'")
    law = doc.get("law")
    if law not in LAWS:
        raise InputError(f"--fit {spec}: 'law' is {law!r}; expected one of {', '.join(LAWS)}")
    params = _check_params(doc.get("params"), law, f"--fit {spec}: params")
    boot = doc.get("bootstrap") or {}
    samples, invalid = [], 0
    for sample in boot.get("samples") or []:
        try:
            samples.append(_check_params(sample, law, "sample"))
        except InputError:  # a failed refit (null coefficients): left out, counted
            invalid += 1
    level = float(boot.get("level") or doc.get("ci_level") or 0.95)
    columns = {str(k).upper(): v for k, v in (doc.get("columns") or {}).items()}
    source = doc.get("source") or (f"fit of {doc.get('n_points')} runs from {doc.get('data', 'a runs table')}"
                                   + (f" (query {doc['query']!r})" if doc.get("query") else ""))
    data_range = doc.get("data_range") if isinstance(doc.get("data_range"), dict) else None
    return LawFit(name=spec, law=law, params=params, samples=samples, level=level, data_range=data_range,
                  n_column=columns.get("N"), source=source, invalid_samples=invalid, document=doc)


def _check_params(params: Any, law: str, where: str) -> dict[str, float]:
    if not isinstance(params, dict):
        raise InputError(f"{where}: expected an object of coefficients")
    from sparsescale.laws.derived import make_law

    names = make_law(law).param_names
    missing = [k for k in names if k not in params]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)} (a {law} law has {', '.join(names)})")
    out = {}
    for key in names:
        value = params[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise InputError(f"{where}: {key} is {value!r}, not a finite number")
        if key in POSITIVE and value <= 0:
            raise InputError(f"{where}: {key} is {value}; it must be positive")
        out[key] = float(value)
    return out


def require_law(fit: LawFit, allowed: tuple[str, ...], question: str) -> None:
    if fit.law not in allowed:
        raise InputError(f"--fit {fit.name}: a {fit.law} law fit; {question} needs a "
                         f"{' or '.join(allowed)} law fit")


# ----------------------------------------------------------------------------- uncertainty


def evaluate(fit: LawFit, answer: Callable[[Any], dict[str, np.ndarray]], what: str) -> tuple[dict, dict]:
    """``answer(law)`` for the fit and for each bootstrap refit.

    Returns (point, draws): ``draws[key]`` stacks the refits' answers, NaN for a refit whose
    arithmetic left the float range (counted in ``fit.failed[what]``); empty without refits.
    If the fit's own answer leaves the float range, an InputError says so.
    """
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        try:
            point = finite_answer(answer(fit.model()))
        except FLOAT_ERRORS as err:
            raise InputError(f"--fit {fit.name}: its coefficients give no finite {what} ({err})") from err
    if not fit.samples:
        return point, {}
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    failed = 0
    for params in fit.samples:
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            try:
                out = finite_answer(answer(fit.model(params)))
            except FLOAT_ERRORS:
                out, failed = None, failed + 1
        for key, value in point.items():
            draw = np.full(value.shape, np.nan) if out is None else np.broadcast_to(np.asarray(out[key], float), value.shape)
            draws[key].append(draw)
    fit.failed[what] = failed
    return point, {k: np.stack(v) for k, v in draws.items()}


def finite_answer(answer: dict[str, Any]) -> dict[str, np.ndarray]:
    """The answer as float arrays; FloatingPointError if any value is inf or NaN (the laws return
    inf, without a warning, where a quantity leaves the float range)."""
    out = {k: np.asarray(v, dtype=float) for k, v in answer.items()}
    for key, value in out.items():
        if not np.isfinite(value).all():
            raise FloatingPointError(f"{key} is not finite")
    return out


def quantile_interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, each column over its finite draws only (NaN if < 2)."""
    flat = draws.reshape(len(draws), -1)
    lo, hi = np.full(flat.shape[1], np.nan), np.full(flat.shape[1], np.nan)
    for j in range(flat.shape[1]):
        good = flat[:, j][np.isfinite(flat[:, j])]
        if len(good) >= 2:
            lo[j], hi[j] = np.quantile(good, [(1 - level) / 2, (1 + level) / 2])
    return lo.reshape(draws.shape[1:]), hi.reshape(draws.shape[1:])


def range_flags(fit: LawFit, **values: Any) -> np.ndarray:
    """Per element, which inputs lie outside the fit's data range, e.g. 'N 12x above; D 3.1x below'."""
    arrays = {k: np.asarray(v, dtype=float) for k, v in values.items()}
    shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
    if not fit.data_range:
        return np.full(shape, "fitted range unknown", dtype=object)
    flags = np.full(shape, "", dtype=object)
    for role, arr in arrays.items():
        if role not in fit.data_range:
            continue
        lo, hi = map(float, fit.data_range[role])
        arr = np.broadcast_to(arr, shape)
        for idx in np.ndindex(shape):
            v = arr[idx]
            if not np.isfinite(v) or lo <= v <= hi:
                continue
            if role in ("S", "R", "P"):  # fractions: a distance, not a ratio
                text = f"{role} {v:.2f} {'above' if v > hi else 'below'} fitted [{lo:.2f}, {hi:.2f}]"
            else:
                text = f"{role} {v / hi:.3g}x above" if v > hi else f"{role} {lo / v:.3g}x below"
            flags[idx] = f"{flags[idx]}; {text}" if flags[idx] else text
    return flags


def _columns(fit: LawFit, point: dict, draws: dict, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Flat columns: each key, then key_lo / key_hi (percentile interval) where the fit has refits."""
    out = {}
    for key in keys:
        out[key] = np.ravel(point[key])
        if key in draws:
            out[f"{key}_lo"], out[f"{key}_hi"] = (np.ravel(a) for a in quantile_interval(draws[key], fit.level))
    return out


# ----------------------------------------------------------------------------- cost


@dataclass
class Cost:
    """Device-hours for a number of model FLOPs on one device at a given MFU."""

    device: str
    peak_flops: float
    mfu: float
    mfu_source: str

    def hours(self, flops: Any) -> np.ndarray:
        return np.asarray(flops, dtype=float) / (self.peak_flops * self.mfu) / 3600.0

    def describe(self) -> dict:
        return {"device": self.device, "peak_flops": self.peak_flops, "mfu": self.mfu, "mfu_source": self.mfu_source,
                "definition": "device-hours = model FLOPs / (peak FLOP/s x MFU) / 3600 on one device"}


def make_cost(device: str = "H100", peak_flops: float | None = None, mfu: float | None = None,
              runs: pd.DataFrame | None = None) -> Cost:
    """``device`` names a row of the hardware table (``sparsescale.hardware``) unless
    ``peak_flops`` is given; MFU: ``mfu``, else the median measured MFU of ``runs`` on that
    device, else ``DEFAULT_MFU`` (stated as assumed)."""
    from sparsescale.hardware import PEAK_BF16_FLOPS, datasheet_entry

    entry = datasheet_entry(device) if device else None
    if peak_flops is not None:
        if not peak_flops > 0:
            raise InputError(f"--peak-flops must be positive FLOP/s, got {peak_flops}")
        label = f"{device} at {peak_flops:.3g} FLOP/s" if device else f"a device of {peak_flops:.3g} FLOP/s"
        peak = float(peak_flops)
    elif entry is None:
        raise InputError(f"--device {device!r}: not in the hardware table "
                         f"({', '.join(n for n, _ in PEAK_BF16_FLOPS)}); give --peak-flops")
    else:
        label, peak = entry
    if mfu is not None:
        if not 0 < mfu <= 1:
            raise InputError(f"--mfu must be in (0, 1], got {mfu}")
        return Cost(label, peak, float(mfu), "given (--mfu)")
    if runs is not None and entry is not None and {"mfu", "device"} <= set(runs.columns):
        mine = runs[runs["mfu"].notna() & runs["device"].astype(str).map(lambda d: (datasheet_entry(d) or ("",))[0] == entry[0])]
        if len(mine):
            return Cost(label, peak, float(mine["mfu"].median()), f"median of {len(mine)} measured runs on {entry[0]}")
    return Cost(label, peak, DEFAULT_MFU, "assumed (no measured run on this device; pass --mfu)")


# ----------------------------------------------------------------------------- question 1: dense


def positive_values(values: Any, arg: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    bad = arr[~(np.isfinite(arr) & (arr > 0))]
    if arr.size == 0 or bad.size:
        raise InputError(f"{arg}: every value must be a positive number, got {bad[0] if bad.size else 'nothing'}")
    return arr


def dense_allocation(fit: LawFit, compute: Any, cost: Cost) -> pd.DataFrame:
    """Compute-optimal N, D, tokens per parameter and loss for each budget C = 6 N D."""
    require_law(fit, SCHEDULE_LAWS, "the dense allocation")  # for dense runs the recovery law is the N-bar law
    if not (fit.params["alpha"] > 0 and fit.params["beta"] > 0):
        raise InputError(f"--fit {fit.name}: alpha and beta must be positive for a compute-optimal allocation")
    c = positive_values(compute, "--compute")

    def answer(law):
        co = law.compute_optimal(c)
        return {k: co[k] for k in ("n_opt", "d_opt", "tokens_per_param", "loss")}

    point, draws = evaluate(fit, answer, "compute-optimal allocation")
    frame = pd.DataFrame({"fit": fit.name, "compute_flops": c,
                          **_columns(fit, point, draws, ("n_opt", "d_opt", "tokens_per_param", "loss")),
                          "device_hours": cost.hours(c),
                          "extrapolation": range_flags(fit, N=point["n_opt"], D=point["d_opt"])})
    return frame


def tokens_for_loss(fit: LawFit, n: Any, target_loss: Any, cost: Cost) -> pd.DataFrame:
    """The tokens D at which a dense model of N parameters reaches ``target_loss``."""
    require_law(fit, CHINCHILLA_LAWS, "tokens for a target loss")
    n_arr = positive_values(n, "--n")
    loss_arr = positive_values(target_loss, "--target-loss")
    nn, ll = (a.ravel() for a in np.meshgrid(n_arr, loss_arr, indexing="ij"))
    limit = fit.model().terms(nn, 1.0)["size"]
    unreachable = ll <= limit
    if unreachable.any():
        i = int(np.flatnonzero(unreachable)[0])
        raise InputError(f"--target-loss {ll[i]:g} is not reachable at --n {nn[i]:g}: with unlimited data "
                         f"--fit {fit.name} predicts {limit[i]:.4f} at that size")

    def answer(law):
        d = law.tokens_for_loss(nn, ll)
        return {"tokens": d, "tokens_per_param": d / nn, "compute_flops": 6.0 * nn * d}

    point, draws = evaluate(fit, answer, "token count")
    frame = pd.DataFrame({"fit": fit.name, "n": nn, "target_loss": ll,
                          **_columns(fit, point, draws, ("tokens", "tokens_per_param", "compute_flops")),
                          "device_hours": cost.hours(point["compute_flops"]),
                          "extrapolation": range_flags(fit, N=nn, D=point["tokens"])})
    return frame


# ----------------------------------------------------------------------------- runs: exact accounting


def account_run(spec: dict, vocab_size: int) -> dict:
    """Exact parameter and compute accounting of one run spec (``config.run_spec``), by the
    trainer's own code: its spec validation, step count, schedule (``build_schedule``) and
    pruning groups; the non-zero count of every step follows from the layer sizes
    (``planned_nonzero``), so no model is built. Raises InputError naming the model or budget."""
    from sparsescale.model import ModelConfig, flops_per_token, prunable_shapes
    from sparsescale.pruning import build_schedule, planned_nonzero, pruning_groups
    from sparsescale.run_spec import validate_spec
    from sparsescale.train import budget_steps

    spec = validate_spec(spec)
    tr, pr = spec["training"], spec["pruning"]
    try:
        cfg = ModelConfig(vocab_size=int(vocab_size), max_seq_len=tr["seq_len"],
                          **{k: spec["model"][k] for k in ("d_model", "n_layers", "n_heads", "d_ff")})
    except ValueError as err:
        raise InputError(f"model {spec['scale']}: {err}") from err
    shapes = prunable_shapes(cfg)
    sizes = {name: rows * cols for name, (rows, cols) in shapes}
    names = [name for name, _ in shapes]
    n_prunable = sum(sizes.values())
    tokens_per_step = tr["batch_size"] * tr["seq_len"]
    budget_tokens, steps = budget_steps(spec["budget_spec"], n_prunable, tokens_per_step)
    if budget_tokens < tokens_per_step:
        raise InputError(f"budget {spec['budget']} ({budget_tokens:g} tokens) is below one optimizer step of "
                         f"{tokens_per_step} tokens (batch_size {tr['batch_size']} x seq_len {tr['seq_len']})")
    if pr["method"] == "nm":
        bad = [name for name, (_, cols) in shapes if cols % pr["m"]]
        if bad:
            raise InputError(f"schedule {spec['schedule']}: m = {pr['m']} does not divide the input width of {bad[0]}")
    schedule = build_schedule(pr, steps)
    groups = pruning_groups(names, "lm_head.weight", "tok_emb.weight", pr["method"], pr["embedding_sparsity"])
    levels, step_level = np.unique(schedule.sparsity_per_step(), return_inverse=True)
    nonzero = np.array([planned_nonzero(sizes, names, groups, s) for s in levels], dtype=float)[step_level]
    final_sparsity = schedule.events[-1][1] if schedule.events else 0.0
    n_final = planned_nonzero(sizes, names, groups, final_sparsity)
    end_step = schedule.end_step if schedule.events else None
    tokens = steps * tokens_per_step
    compute = 6.0 * float(nonzero.sum()) * tokens_per_step  # the trainer's C = 6 sum_t N_t tokens_t
    return {"run_id": spec["run_id"], "scale": spec["scale"], "budget": spec["budget"], "schedule": spec["schedule"],
            "method": pr["method"], "shape": pr.get("shape"), "target_sparsity": pr["final_sparsity"],
            "start": pr["start"], "end": pr["end"],
            "n_prunable": n_prunable, "n_final": n_final, "n_avg": compute / (6.0 * tokens),
            "sparsity": 1.0 - n_final / n_prunable, "tokens": tokens, "steps": steps, "events": len(schedule.events),
            "end_step": end_step, "recovery_share": 1.0 if end_step is None else (steps - end_step) / steps,
            "pruning_share": 0.0 if end_step is None else (end_step - schedule.start_step) / steps,
            "compute_flops": compute, "model_flops": flops_per_token(cfg, tr["seq_len"]) * tokens}


def account_study(study: dict, vocab_sizes: dict[str, int], experiments: list[str] | None = None) -> pd.DataFrame:
    """``account_run`` for every run of a resolved config (or of the named experiments)."""
    from sparsescale import config as cfgmod

    if experiments is not None:
        study = {**study, "experiments": [e for e in study["experiments"] if e["name"] in experiments]}
    rows = []
    for run in cfgmod.runs(study):
        if run.corpus not in vocab_sizes:
            raise InputError(f"corpus {run.corpus}: no vocabulary size (give --vocab-size)")
        rows.append({**account_run(cfgmod.run_spec(study, run), vocab_sizes[run.corpus]), "corpus": run.corpus,
                     "seed": run.seed})
    return pd.DataFrame(rows)


def vocab_size(study: dict, corpus: str, results: str | Path = "results", given: int | None = None) -> tuple[int, str]:
    """The vocabulary a corpus trains with: ``given``, else its tokens manifest (what the
    trainer reads), else the config's BPE ``vocab_size``. Returns (size, where it came from)."""
    if given is not None:
        if given < 2:
            raise InputError(f"--vocab-size must be at least 2, got {given}")
        return int(given), "--vocab-size"
    if corpus not in study["corpora"]:
        raise InputError(f"--corpus {corpus}: not defined under 'corpora' ({', '.join(study['corpora'])})")
    manifest = Path(results) / "data" / corpus / "tokens" / "manifest.json"
    if manifest.is_file():
        return int(json.loads(manifest.read_text(encoding="utf-8"))["vocab_size"]), str(manifest)
    tokenizer = study["corpora"][corpus]["tokenizer"]
    if tokenizer.get("vocab_size"):
        return int(tokenizer["vocab_size"]), f"corpora/{corpus}/tokenizer/vocab_size (no {manifest} yet)"
    raise InputError(f"corpus {corpus}: no {manifest} and no tokenizer vocab_size in the config; give --vocab-size")


# ----------------------------------------------------------------------------- predictions for runs


def predict_runs(fit: LawFit, runs: pd.DataFrame, dense_comparisons: bool = False) -> pd.DataFrame:
    return _predictions(fit, runs, dense_comparisons)[0]


def _predictions(fit: LawFit, runs: pd.DataFrame, dense_comparisons: bool) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Each accounted run's predicted final loss (with interval and range flags). A Chinchilla
    type law takes N-bar (``n_avg``) or the final count, as it was fitted; the sparsity law takes
    (S, N_final, D). With ``dense_comparisons`` (Chinchilla type only): the compute-optimal dense
    model of equal training compute and the dense model of the run's final size on its tokens,
    and the run's gain over each (paired per refit)."""
    s, n_final, n_avg, d = (runs[k].to_numpy(float) for k in ("sparsity", "n_final", "n_avg", "tokens"))
    keys: tuple[str, ...] = ("loss",)
    if fit.law == "sparsity":
        def answer(law):
            return {"loss": law.loss(s, n_final, d)}

        flags = range_flags(fit, S=s, N=n_final, D=d)
    else:
        n = n_final if fit.n_basis == "n_final" else n_avg
        compute = runs["compute_flops"].to_numpy(float)
        positive = fit.params["alpha"] > 0 and fit.params["beta"] > 0
        dense_comparisons = dense_comparisons and positive
        inputs = {"N": n, "D": d}
        if fit.law == "recovery":  # it also reads how much training followed the prunes
            inputs.update(N0=runs["n_prunable"].to_numpy(float), F=n_final, R=runs["recovery_share"].to_numpy(float),
                          P=runs["pruning_share"].to_numpy(float))

        def answer(law):
            out = {"loss": law.predict(**inputs)}
            if dense_comparisons:
                opt = law.compute_optimal(compute)
                dense = ({"N0": n_final, "F": n_final, "R": np.ones_like(d), "P": np.zeros_like(d)}
                         if fit.law == "recovery" else {})
                size = law.predict(N=n_final, D=d, **dense)
                out.update(dense_equal_compute_n=opt["n_opt"], dense_equal_compute_loss=opt["loss"],
                           gain_vs_equal_compute=opt["loss"] - out["loss"], dense_equal_size_loss=size,
                           gain_vs_equal_size=size - out["loss"])
            return out

        if dense_comparisons:
            keys += ("dense_equal_compute_n", "dense_equal_compute_loss", "gain_vs_equal_compute",
                     "dense_equal_size_loss", "gain_vs_equal_size")
        flags = range_flags(fit, **inputs)
    point, draws = evaluate(fit, answer, "loss prediction")
    out = pd.DataFrame({"fit": fit.name, **{k: runs[k].to_numpy() for k in runs.columns}, **_columns(fit, point, draws, keys),
                        "extrapolation": flags})
    return out, draws.get("loss")


def schedule_plan(fit: LawFit, runs: pd.DataFrame, cost: Cost) -> pd.DataFrame:
    """Accounted runs (``account_study``) ranked by the N-bar law's predicted loss, with the
    dense alternatives and the share of refits in which each run is the best (``p_best``)."""
    require_law(fit, SCHEDULE_LAWS, "the schedule ranking (paper A's N-bar law, or it with recovery)")
    if fit.n_basis == "n_final":
        raise InputError(f"--fit {fit.name}: fitted on the final non-zero count ({fit.n_column}); the schedule "
                         f"ranking needs a law in N-bar (an average-params fit)")
    out, draws = _predictions(fit, runs, dense_comparisons=True)
    if draws is not None:
        whole = draws[np.isfinite(draws).all(axis=1)]  # refits that predict every run
        if len(whole):
            out["p_best"] = np.bincount(np.argmin(whole, axis=1), minlength=len(runs)) / len(whole)
    out["device_hours"] = cost.hours(runs["model_flops"].to_numpy(float))
    out = out.sort_values(["loss", "run_id"], kind="stable").reset_index(drop=True)
    out.insert(1, "rank", np.arange(1, len(out) + 1))
    return out


def ranking_check(fits: list[LawFit], runs: pd.DataFrame | None, margin: float) -> dict[str, dict]:
    """For each fit, how its schedule picks did when trained, among windows its law was not
    fitted on (its leave-one-window-out predictions, and the full fit's on fresh runs, against
    ``runs``, seed means; see ``claims.heldout_predictions``): groups checked, the scales and
    budgets they cover, groups whose pick is within ``margin``, the worst regret and rank
    correlation, and the decision over groups. ``checked`` is False, with the reason, where no
    such check exists."""
    from sparsescale import claims

    out = {}
    for fit in fits:
        role = CLAIM_ROLES.get(fit.law)
        if role is None:
            out[fit.name] = {"checked": False, "why": f"a {fit.law} law fit has no held-out schedule check"}
            continue
        if runs is None:
            out[fit.name] = {"checked": False, "why": "no trained runs table (--runs) to check its picks against"}
            continue
        table = claims.schedule_rankings(runs, {role: fit.document}, margin, in_sample=False)
        held = table[table["predictions"] == "held out"] if not table.empty else table
        if held.empty:
            out[fit.name] = {"checked": False, "why": "no trained schedule grid of 3 or more windows it was not fitted "
                                                      "on (held out by leave-one-window-out, or fresh runs)"}
            continue
        decision = claims.combine([claims.across_groups(held["paired"].tolist()),
                                   claims.across_groups(held["bootstrap"].tolist())])
        out[fit.name] = {"checked": True, "groups": int(len(held)),
                         "covers": sorted({(str(r.scale), str(r.budget)) for r in held.itertuples()}),
                         "within_margin": int((held["paired"] == claims.REPRODUCED).sum()),
                         "worst_regret": float(held["regret"].max()), "margin": float(held["margin_abs"].min()),
                         "worst_spearman": float(held["spearman"].min()), "decision": decision}
    return out


def choose_ranking_fit(check: dict[str, dict]) -> str | None:
    """The checked fit whose held-out picks regret least (then rank best): the one to rank with."""
    checked = {name: c for name, c in check.items() if c["checked"]}
    if not checked:
        return None
    return min(checked, key=lambda name: (checked[name]["worst_regret"], -checked[name]["worst_spearman"], name))


def check_coverage(check: dict) -> str:
    """The scales and budgets a fit's ranking check judged, e.g. 's1 tpp20, s2 tpp20'."""
    return ", ".join(f"{scale} {budget}" for scale, budget in check["covers"])


def check_covers(check: dict, scale: str, budget: str) -> bool:
    """Whether a fit's ranking check judged a schedule grid of this scale and budget: a law
    that passed at one scale is not thereby checked at another."""
    return bool(check["checked"]) and (str(scale), str(budget)) in {tuple(c) for c in check["covers"]}


def advice_status(check: dict, scale: str | None = None, budget: str | None = None) -> str:
    """One line on whether a fit's schedule ranking can be trusted, for every row it ranks
    (at ``scale`` and ``budget``, where given)."""
    from sparsescale import claims

    if not check["checked"]:
        return f"unchecked: {check['why']}"
    if scale is not None and not check_covers(check, scale, budget):
        return (f"unchecked at {scale} {budget}: its held-out check covers {check_coverage(check)} only "
                f"({'passed' if check['decision'] == claims.REPRODUCED else check['decision']} there)")
    numbers = (f"held-out pick within the margin in {check['within_margin']}/{check['groups']} groups, worst regret "
               f"{check['worst_regret']:.4f} nats (margin {check['margin']:.4f}), worst Spearman "
               f"{check['worst_spearman']:.2f}")
    if check["decision"] == claims.REPRODUCED:
        return f"passed: {numbers}"
    return f"{'failed' if check['decision'] == claims.NOT_REPRODUCED else 'undecided'}: {numbers}"


def trained_losses(planned: pd.DataFrame, runs: pd.DataFrame | None) -> pd.Series:
    """Each planned run's trained final loss (mean over the seeds trained), NaN where the runs
    table has no run of the same corpus, scale, budget and schedule."""
    keys = ["corpus", "scale", "budget", "schedule"]
    if runs is None or not set(keys) <= set(planned.columns):
        return pd.Series(np.nan, index=planned.index)
    means = runs.groupby(keys)["final_val_loss"].mean().rename("trained_loss").reset_index()
    merged = planned[keys].astype(str).merge(means.astype({k: str for k in keys}), on=keys, how="left")
    return pd.Series(merged["trained_loss"].to_numpy(float), index=planned.index)


TRANSFER_RTOL = 0.05  # tokens per prunable parameter: the same budget rule at another model size


def trained_reference(planned: pd.DataFrame, runs: pd.DataFrame | None,
                      exclude: tuple[str, str] | None = None) -> tuple[str | None, pd.Series]:
    """The trained grid to rank planned schedules by when no law's ranking can be trusted, and
    each planned run's seed-mean trained loss there (NaN where that schedule was not trained).

    Candidates are the scales and budgets of ``runs`` with the planned corpus and the planned
    tokens per prunable parameter (within ``TRANSFER_RTOL``); the one that trained the most of
    the planned schedules (by schedule id) wins, the planned scale and budget first on a tie,
    then the nearest model size. ``exclude`` (scale, budget) is never chosen: ``plan check``
    judges a grid by the order trained elsewhere. Paper A's practice is the same: the window
    found best at small scale is the one run at large scale."""
    none = (None, pd.Series(np.nan, index=planned.index))
    keys = ["corpus", "scale", "budget", "schedule"]
    if runs is None or planned.empty or not set(keys) <= set(runs.columns):
        return none
    here = planned.iloc[0]
    runs = runs[(runs["corpus"].astype(str) == str(here["corpus"]))
                & runs["schedule"].astype(str).isin(planned["schedule"].astype(str))]
    own = (runs["scale"].astype(str) == str(here["scale"])) & (runs["budget"].astype(str) == str(here["budget"]))
    distance = pd.Series(0.0, index=runs.index)
    if {"tokens", "n_prunable"} <= set(runs.columns):  # another scale counts only at the same budget rule
        size = runs["n_prunable"].astype(float)
        per_param = float(here["tokens"]) / float(here["n_prunable"])
        own |= np.isclose(runs["tokens"].astype(float) / size, per_param, rtol=TRANSFER_RTOL, atol=0.0)
        distance = np.abs(np.log(size / float(here["n_prunable"])))
    same = runs[own].assign(distance=distance[own])
    if exclude is not None:
        same = same[~((same["scale"].astype(str) == str(exclude[0])) & (same["budget"].astype(str) == str(exclude[1])))]
    if same.empty:
        return none
    candidates = same.groupby(["scale", "budget"]).agg(covered=("schedule", "nunique"), distance=("distance", "min"))
    candidates["elsewhere"] = [(str(s), str(b)) != (str(here["scale"]), str(here["budget"])) for s, b in candidates.index]
    scale, budget = candidates.sort_values(["covered", "elsewhere", "distance"], ascending=[False, True, True]).index[0]
    chosen = same[(same["scale"] == scale) & (same["budget"] == budget)]
    means = chosen.groupby(chosen["schedule"].astype(str))["final_val_loss"].mean()
    return f"{scale} {budget}", pd.Series(planned["schedule"].astype(str).map(means).to_numpy(float), index=planned.index)


def transferred_orders(checked: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """Rows of ``check_runs`` (one fit's) re-predicted by the trained order of another scale
    (``trained_reference`` with the checked scale and budget excluded), named ``trained order at
    SCALE BUDGET``: what ``check_ranking`` judges when the planner fell back to that order."""
    frames = []
    first = checked[checked["fit"] == checked["fit"].iloc[0]] if len(checked) else checked
    for (scale, budget), group in first.groupby(["scale", "budget"], sort=False):
        label, losses = trained_reference(group, runs, exclude=(str(scale), str(budget)))
        if label is not None and losses.notna().any():
            frames.append(group.assign(fit=f"trained order at {label}", loss=losses))
    return pd.concat(frames, ignore_index=True) if frames else first.iloc[:0]


# ----------------------------------------------------------------------------- question 3: sparsity


def sparsity_plan(fit: LawFit, n_values: Any, compute: Any, cost: Cost, s_max: float = 0.99) -> pd.DataFrame:
    """Paper B's optimal sparsity over the (non-zero N, compute C) grid (definition:
    ``sparsescale.laws.sparsity.OPTIMAL_SPARSITY_DEFINITION``)."""
    require_law(fit, ("sparsity",), "the optimal sparsity")
    if not 0 < s_max < 1:
        raise InputError(f"--s-max must be in (0, 1), got {s_max}")
    nn, cc = (a.ravel() for a in np.meshgrid(positive_values(n_values, "--n"), positive_values(compute, "--compute"),
                                            indexing="ij"))

    def answer(law):
        # a loss that leaves the float range at some S is +inf there: never the optimum
        with np.errstate(over="ignore"):
            opt = law.optimal_sparsity(nn, cc, s_max=s_max)
        return {"s_opt": opt["s_opt"], "tokens": opt["d"], "loss": opt["loss"], "dense_loss": opt["dense_loss"],
                "gain_vs_dense": opt["dense_loss"] - opt["loss"], "multiplier": law.effective_multiplier(opt["s_opt"]),
                "at_s_max": opt["at_bound"]}

    point, draws = evaluate(fit, answer, "optimal sparsity")
    frame = pd.DataFrame({"fit": fit.name, "n_nonzero": nn, "compute_flops": cc,
                          **_columns(fit, point, draws, ("s_opt", "tokens", "loss", "dense_loss", "gain_vs_dense", "multiplier")),
                          "dense_tokens": cc / (6.0 * nn), "at_s_max": point["at_s_max"].astype(bool),
                          "device_hours": cost.hours(cc),
                          "extrapolation": range_flags(fit, S=point["s_opt"], N=nn, D=point["tokens"])})
    return frame


# ----------------------------------------------------------------------------- emitted runs


def nearest_scale(study: dict, vocab: int, target: float, scales: list[str] | None = None) -> tuple[str, int]:
    """The config model whose prunable count is nearest ``target`` in log scale: (name, count)."""
    from sparsescale.model import ModelConfig, count_params

    names = scales or list(study["models"])
    unknown = [s for s in names if s not in study["models"]]
    if unknown:
        raise InputError(f"--scales {unknown[0]}: not a model of the config ({', '.join(study['models'])})")
    counts = {s: count_params(ModelConfig(vocab_size=vocab, **study["models"][s]))["n_prunable"] for s in names}
    best = min(names, key=lambda s: (abs(math.log(counts[s] / target)), s))
    return best, counts[best]


def fragment(models: dict, budgets: dict, schedules: dict, experiments: list[dict]) -> dict:
    """A config fragment that ``snakemake --configfile BASE FRAGMENT`` merges over the base:
    named tables merge, ``experiments`` replaces the base's (only the planned runs train)."""
    return {"models": models, "budgets": budgets, "schedules": schedules, "experiments": experiments}


def budget_name(tokens: int) -> str:
    return f"plan-{int(tokens)}tok"


def model_name(model: dict) -> str:
    return "plan-d{d_model}-l{n_layers}-h{n_heads}-f{d_ff}".format(**model)


def fragment_yaml(frag: dict, header: list[str]) -> str:
    import yaml

    lines = [f"# {line}" if line else "#" for line in header]
    return "\n".join(lines) + "\n" + yaml.safe_dump(frag, sort_keys=False)


# ----------------------------------------------------------------------------- the papers' scales


PAPER_ADVICE = {
    "dense": "Chinchilla (Hoffmann et al. 2022): about 20 tokens per parameter at the compute-optimal size",
    "schedule": "paper A (Jin et al. 2025): prune from 25% to 75% of training compute (near-optimal)",
    "sparsity": "paper B (Frantar et al. 2023): at a fixed non-zero size, the optimal sparsity rises with "
                "training compute",
}


def paper_study() -> dict:
    """The papers' study (config/paper.yaml over config/config.yaml), resolved."""
    from sparsescale.config import load_config

    return load_config(REPO_ROOT / "config" / "config.yaml", REPO_ROOT / "config" / "paper.yaml")


def paper_ladder(study: dict) -> pd.DataFrame:
    """Each model x tokens-per-parameter budget of the study's experiments: prunable N, tokens
    and dense compute C = 6 N D, at the papers' vocabulary."""
    from sparsescale.model import ModelConfig, count_params

    scales = dict.fromkeys(s for e in study["experiments"] for s in e["scales"])
    budgets = dict.fromkeys(b for e in study["experiments"] for b in e["budgets"])
    rows = []
    for scale in scales:
        n = count_params(ModelConfig(vocab_size=PAPER_VOCAB_SIZE, **study["models"][scale]))["n_prunable"]
        for budget in budgets:
            spec = study["budgets"][budget]
            if "tokens_per_param" in spec:
                tokens = spec["tokens_per_param"] * n
                rows.append({"scale": scale, "budget": budget, "n_prunable": n, "tokens": tokens,
                             "compute_flops": 6.0 * n * tokens})
    return pd.DataFrame(rows)


def schedule_groups(fit: LawFit, runs: pd.DataFrame, cost: Cost) -> pd.DataFrame:
    """``schedule_plan`` within each (scale, budget, final sparsity) group of pruned runs:
    paper A's comparison, schedules at one final sparsity and token budget."""
    pruned = runs[runs["method"] != "dense"]
    ranked = pd.concat([schedule_plan(fit, g, cost) for _, g in pruned.groupby(["scale", "budget", "target_sparsity"])],
                       ignore_index=True)
    return ranked.sort_values(["n_prunable", "tokens", "target_sparsity", "rank"], kind="stable", ignore_index=True)


def window_summary(ranked: pd.DataFrame, start: float = 0.25, end: float = 0.75) -> pd.DataFrame:
    """Per group of ``schedule_groups``: the law's best pruning window and where the
    ``start``-``end`` window ranks, its predicted loss gap to the best and its ``p_best``."""
    rows = []
    for (fit, scale, budget, sparsity), g in ranked.groupby(["fit", "scale", "budget", "target_sparsity"], sort=False):
        best = g.iloc[0]
        hit = g[np.isclose(g["start"], start) & np.isclose(g["end"], end)]
        row = {"fit": fit, "scale": scale, "budget": budget, "final_sparsity": sparsity, "schedules": len(g),
               "best_window": f"{best['start']:.0%}-{best['end']:.0%}", "best_loss": best["loss"]}
        if len(hit):
            h = hit.iloc[0]
            row.update({"window_rank": int(h["rank"]), "window_loss": h["loss"], "gap_to_best": h["loss"] - best["loss"],
                        "window_p_best": h.get("p_best", np.nan), "extrapolation": h["extrapolation"]})
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- check


def check_runs(fit: LawFit, study: dict, vocab_sizes: dict[str, int], results: str | Path = "results") -> pd.DataFrame:
    """Predicted (before training) against observed final loss for every run of ``study``,
    with the planned and achieved N-bar and tokens side by side (they agree when the
    planner's accounting is the trainer's). Raises InputError naming a run not trained yet."""
    runs = account_study(study, vocab_sizes)
    observed = []
    for run_id in runs["run_id"]:
        path = Path(results) / "runs" / run_id / "metrics.json"
        if not path.is_file():
            raise InputError(f"{path}: run {run_id} is not trained yet (train it with snakemake first)")
        observed.append(json.loads(path.read_text(encoding="utf-8")))
    pred = predict_runs(fit, runs)
    pred["observed_loss"] = [m["final_val_loss"] for m in observed]
    pred["error"] = pred["loss"] - pred["observed_loss"]
    if "loss_lo" in pred:
        pred["inside_interval"] = (pred["loss_lo"] <= pred["observed_loss"]) & (pred["observed_loss"] <= pred["loss_hi"])
    pred["observed_n_avg"] = [m["n_avg"] for m in observed]
    pred["observed_tokens"] = [m["tokens"] for m in observed]
    return pred


def check_ranking(checked: pd.DataFrame, margin: float) -> pd.DataFrame:
    """For each fit and each schedule grid among the checked runs (3 or more windows of one
    scale, budget and final sparsity): its pick against the best trained window, the regret
    seed-paired and by seed bootstrap, and the rank correlation (``claims.ranking_quality``).
    The planner's advice, checked by training what it ranked."""
    from sparsescale import claims

    frames = []
    for name, runs in checked.groupby("fit", sort=False):
        trained = runs.assign(final_val_loss=runs["observed_loss"])
        quality = claims.ranking_quality(trained, pd.Series(runs["loss"].to_numpy(), index=runs["run_id"]), margin)
        if not quality.empty:
            frames.append(quality.assign(fit=name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def ranking_line(row: Any) -> str:
    """One line on a ranking check (a row of ``check_ranking`` or ``claims.ranking_quality``)."""
    from sparsescale import claims

    verdict = claims.combine([row["paired"], row["bootstrap"]])
    return (f"{row['scale']} {row['budget']} at {100 * row['target_sparsity']:g}% sparsity: pick {row['pick']} "
            f"(trained rank {row['pick_rank']}/{row['windows']}, best {row['best']}), regret {row['regret']:.4f} nats "
            f"(95% ± {row['regret_halfwidth']:.4f} over the {row['pair_seeds']} seeds both ran; seed bootstrap over "
            f"the {row['seeds']} seeds every window ran [{row['boot_low']:.4f}, {row['boot_high']:.4f}]) against a margin of {row['margin_abs']:.4f}: {verdict}; Spearman "
            f"{row['spearman']:.2f} [{row['spearman_low']:.2f}, {row['spearman_high']:.2f}]")
