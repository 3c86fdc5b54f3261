"""``sparsescale plan``: the fitted laws answer a practitioner's questions before any training.

    sparsescale plan dense    --fit FIT... (--compute C... | --n N... --target-loss L...)
    sparsescale plan schedule --fit FIT... (--scale NAME | --model SHAPE) (--budget NAME | --tokens T |
                              --tokens-per-param X) [--final-sparsity S...] --schedule SPEC...
    sparsescale plan sparsity --fit FIT... --n N... --compute C... [--s-max 0.99]
    sparsescale plan check    --fit FIT... --config BASE... FRAGMENT

FIT is a fit JSON (``sparsescale fit``'s output) or ``published:NAME`` (``published:hoffmann2022``,
``published:besiroglu2024``, ``published:frantar2023``). Every question prints a table (``--json`` for scripts) with the
training compute in FLOPs and device-hours (``--device``/``--peak-flops``, ``--mfu``),
intervals where the fit holds bootstrap refits, and extrapolation flags.
``--emit-config OUT`` writes the recommended runs as a config fragment for
``snakemake --configfile BASE... OUT``; ``plan check`` then compares prediction and outcome.
Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

PAPER_B_RECIPE = {"method": "uniform", "shape": "cubic", "basis": "steps", "start": 0.25, "end": 0.75}


def add_commands(subparsers: Any) -> None:
    plan = subparsers.add_parser(
        "plan", help="answer planning questions (allocation, schedule, sparsity) from fitted laws",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    questions = plan.add_subparsers(dest="question", metavar="QUESTION", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--fit", nargs="+", required=True, metavar="FIT",
                        help="fit JSON(s), or published:NAME (hoffmann2022, besiroglu2024: Chinchilla; frantar2023: paper B's T5/C4 sparsity law)")
    common.add_argument("--device", default="H100", help="device of the hardware table for device-hours (default: %(default)s)")
    common.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s of one device (instead of the table)")
    common.add_argument("--mfu", type=float, default=None,
                        help="model-FLOPs utilisation (default: median measured on --runs for that device, else 0.4)")
    common.add_argument("--runs", default="results/aggregate/runs.csv",
                        help="runs table whose measured MFU is the default (default: %(default)s, if present)")
    common.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                        help="write the answer as JSON (to stdout, or FILE) instead of a table")
    study = argparse.ArgumentParser(add_help=False)
    study.add_argument("--config", nargs="+", default=["config/config.yaml"], metavar="FILE",
                       help="the study config(s) the runs would train under, merged in order as Snakemake "
                            "does (default: %(default)s)")
    study.add_argument("--corpus", default=None, help="corpus of the runs (default: the first experiment's)")
    study.add_argument("--vocab-size", type=int, default=None,
                       help="vocabulary size (default: the corpus's tokens manifest under --results, else the config)")
    study.add_argument("--results", default="results", help="results folder (default: %(default)s)")
    emit = argparse.ArgumentParser(add_help=False)
    emit.add_argument("--emit-config", default=None, metavar="OUT",
                      help="write the recommended runs as a config fragment for snakemake --configfile")
    emit.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the emitted runs (default: 0)")

    p = questions.add_parser("dense", parents=[common, study, emit], help="compute-optimal dense allocation (Chinchilla)",
                             description="N_opt, D_opt, tokens per parameter and loss for compute budgets; or the "
                                         "tokens a size N needs to reach a target loss.")
    p.add_argument("--compute", type=float, nargs="+", default=None, help="training compute budgets, FLOPs (C = 6 N D)")
    p.add_argument("--n", type=float, nargs="+", default=None, help="model sizes (parameters), with --target-loss")
    p.add_argument("--target-loss", type=float, nargs="+", default=None, help="target losses (nats/token), with --n")
    p.add_argument("--scales", nargs="+", default=None,
                   help="--emit-config: the config models to choose from (default: all)")
    p.set_defaults(func=run_dense)

    p = questions.add_parser("schedule", parents=[common, study, emit], help="rank pruning schedules (paper A's N-bar law)",
                             description="Exact N-bar and compute of each schedule from the trainer's own schedule "
                                         "code, the predicted final loss, ranked, beside the dense alternatives.")
    shape = p.add_mutually_exclusive_group(required=True)
    shape.add_argument("--scale", default=None, help="a model of the config by name")
    shape.add_argument("--model", default=None, metavar="SHAPE",
                       help="a model shape: d_model=512,n_layers=6,n_heads=8,d_ff=2048 (or a YAML mapping)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", default=None, help="a budget of the config by name")
    budget.add_argument("--tokens", type=int, default=None, help="training tokens")
    budget.add_argument("--tokens-per-param", type=float, default=None, help="tokens per prunable parameter")
    p.add_argument("--final-sparsity", type=float, nargs="+", default=None,
                   help="the final sparsities to plan: given to a schedule that states none, and selecting among "
                        "the schedules of a family that lists several")
    p.add_argument("--schedule", nargs="+", required=True, metavar="SPEC",
                   help="schedules in the config's syntax: NAME={method: global, start: [0.25, 0.5], duration: 0.5, "
                        "every: 10}, a bare mapping, or a family or schedule id of the config")
    p.add_argument("--no-dense", action="store_true", help="leave out the dense run of the same shape")
    p.set_defaults(func=run_schedule)

    p = questions.add_parser("sparsity", parents=[common, study, emit], help="optimal sparsity (paper B's law)",
                             description="S_opt, its tokens, predicted loss, gain over dense at the same non-zero "
                                         "size, and the effective-parameter multiplier over an (N, C) grid.")
    p.add_argument("--n", type=float, nargs="+", required=True, help="non-zero parameter counts")
    p.add_argument("--compute", type=float, nargs="+", required=True,
                   help="training compute, FLOPs (dense-equivalent: C = 6 (N / (1 - S)) D)")
    p.add_argument("--s-max", type=float, default=0.99, help="largest sparsity searched (default: %(default)s)")
    p.add_argument("--scales", nargs="+", default=None, help="--emit-config: the config models to choose from")
    p.add_argument("--schedule", default=None, metavar="SPEC",
                   help="--emit-config: the pruning recipe of the sparse runs (default: paper B's uniform cubic, "
                        "25%%-75%% of steps)")
    p.set_defaults(func=run_sparsity)

    p = questions.add_parser("check", parents=[common, study], help="predicted against observed loss of trained runs",
                             description="For every run of the config (e.g. base + an emitted fragment): the loss "
                                         "the fit predicted before training against the loss the run reached.")
    p.set_defaults(func=run_check)


# ----------------------------------------------------------------------------- handlers


def run_dense(args: argparse.Namespace) -> int:
    import pandas as pd

    from sparsescale import plan
    from sparsescale.io import InputError

    fits, cost, _ = _fits_and_cost(args)
    if args.compute is None and (args.n is None or args.target_loss is None):
        raise InputError("give --compute (budgets to allocate), or --n with --target-loss")
    if args.compute is not None and (args.n is not None or args.target_loss is not None):
        raise InputError("give either --compute, or --n with --target-loss, not both")
    if args.compute is not None:
        frame = pd.concat([plan.dense_allocation(f, args.compute, cost) for f in fits], ignore_index=True)
        shown = ["fit", "compute_flops", "n_opt", "d_opt", "tokens_per_param", "loss", "device_hours", "extrapolation"]
        title = "Compute-optimal dense allocation (C = 6 N D)"
    else:
        frame = pd.concat([plan.tokens_for_loss(f, args.n, args.target_loss, cost) for f in fits], ignore_index=True)
        shown = ["fit", "n", "target_loss", "tokens", "tokens_per_param", "compute_flops", "device_hours", "extrapolation"]
        title = "Tokens to reach a target loss"
    emitted = None
    if args.emit_config:
        if args.compute is None:
            raise InputError("--emit-config: the dense question emits runs for --compute budgets")
        emitted = _emit_dense(args, fits, frame[frame["fit"] == fits[0].name])
    return _report(args, "dense", title, frame, shown, fits, cost, emitted)


def run_schedule(args: argparse.Namespace) -> int:
    import pandas as pd

    from sparsescale import claims, plan
    from sparsescale.io import InputError

    fits, cost, table = _fits_and_cost(args)
    base, configs = _base_study(args)
    corpus = _corpus(args, base)
    vocab, vocab_from = plan.vocab_size(base, corpus, args.results, args.vocab_size)
    models, scale = _model(args, base)
    budgets, budget = _budget(args, base)
    _check_budget(args, base, {**base["models"], **models}[scale], {**base["budgets"], **budgets}[budget], vocab)
    schedules, names = {}, []
    if not args.no_dense:
        schedules["dense"], names = {"method": "dense"}, ["dense"]
    for i, text in enumerate(args.schedule):
        family, spec, variants = _schedule_spec(text, i, base, args.final_sparsity)
        if spec is not None:
            schedules[family] = spec
        names += [n for n in _at_sparsities(text, family, variants, args.final_sparsity) if n not in names]
    experiments = [{"name": "plan", "corpus": corpus, "scales": [scale], "budgets": [budget],
                    "schedules": names, "seeds": args.seeds}]
    frag = plan.fragment(models, budgets, schedules, experiments)
    study = _study(configs, frag)
    runs = plan.account_study(study, {corpus: vocab})
    if not len(runs):
        raise InputError("--schedule: no run to plan")
    trained = _trained_runs(args, table)
    check = plan.ranking_check(fits, trained, claims.PRUNE_MARGIN)
    chosen = plan.choose_ranking_fit(check)
    if chosen is not None:  # the law whose held-out picks held best ranks first
        fits = sorted(fits, key=lambda f: f.name != chosen)
    planned = runs[runs["seed"] == args.seeds[0]]
    frame = pd.concat([plan.schedule_plan(f, planned, cost)
                       .assign(advice=plan.advice_status(check[f.name], scale, budget)) for f in fits],
                      ignore_index=True)
    frame["trained_loss"] = plan.trained_losses(frame, trained)
    covered = chosen is not None and plan.check_covers(check[chosen], scale, budget)
    trusted = covered and check[chosen]["decision"] == claims.REPRODUCED
    reference, reference_loss = (None, None) if trusted else plan.trained_reference(frame, trained)
    transferred = reference is not None and reference != f"{scale} {budget}"
    if reference is not None:
        frame = _rank_by_training(frame.assign(reference_loss=reference_loss),
                                  f"trained loss at {reference} (transferred: unchecked at {scale} {budget})"
                                  if transferred else "trained loss")
    shown = ["fit", "rank", "ranked_by", "schedule", "n_avg", "n_final", "recovery_share", "pruning_share", "tokens",
             "compute_flops", "loss", "p_best", "trained_loss", *(["reference_loss"] if transferred else []),
             "dense_equal_compute_loss", "gain_vs_equal_compute",
             "dense_equal_size_loss", "device_hours", "extrapolation"]
    emitted = _write_fragment(args, "schedule", frag, configs, study, fits, {corpus: vocab}) if args.emit_config else None
    notes = [f"model {scale}: {int(runs['n_prunable'].iloc[0]):,} prunable parameters at vocabulary {vocab} ({vocab_from})",
             "n_avg (N-bar) and compute_flops (6 sum_t N_t tokens_t) come from the trainer's schedule code; device-hours "
             "use the dense model FLOPs incl. attention (masked weights still go through dense kernels)",
             "dense_equal_compute: the compute-optimal dense model at the run's training compute; dense_equal_size: a "
             "dense model of the run's final non-zero size on the same tokens; gain = dense loss - run loss",
             "recovery_share: the share of training steps after the last prune (1 for dense); pruning_share: from the "
             f"first prune to the last; trained_loss: the seed mean of the same runs in {args.runs}, where trained"]
    if transferred:
        notes.append(f"reference_loss: the seed mean of the same schedule trained at {reference} (same tokens per "
                     f"prunable parameter); plan check judges whether that order holds at {scale} {budget}")
    notes += [f"ranking check, {f.name}: {plan.advice_status(check[f.name])}" for f in fits]
    if chosen is not None and not covered:
        notes.append(f"{plan.advice_status(check[chosen], scale, budget)}: train the top candidates at {scale} "
                     f"(--emit-config with a few --seeds) and run plan check")
    title = "Pruning schedules ranked by predicted final loss"
    if chosen is not None:
        notes.insert(0, f"ranking law: {chosen}, the fit whose picks among windows it was not fitted on regret least "
                        f"when trained (worst held-out regret {check[chosen]['worst_regret']:.4f} nats)")
    if not trusted:
        why = ("no fit's schedule ranking passed the held-out check (its picks among windows it was not fitted on, "
               "against trained runs)" if chosen is None or covered else
               f"the held-out check of the ranking law covers {plan.check_coverage(check[chosen])}, not {scale} {budget}")
        if reference is None:
            fallback = "train the candidates, or check the law first."
        elif transferred:
            fallback = (f"schedules trained at {reference} are ranked by their trained loss there (the order is "
                        f"transferred, unchecked at {scale} {budget}: train the top candidates and run plan check), "
                        "the rest after them by the law.")
        else:
            fallback = "schedules already trained are ranked by their trained loss, the rest after them by the law."
        title += (f"\nWARNING: {why}, so its ranks and p_best (which counts only the coefficients' "
                  f"uncertainty) are not advice; {fallback}")
    return _report(args, "schedule", title, frame, shown, fits, cost, emitted, notes)


def _trained_runs(args, table):
    """The runs table ``_fits_and_cost`` read (None where --runs has none), checked as a runs table."""
    from sparsescale import results

    return None if table is None else results.checked_runs(table, args.runs)


def _rank_by_training(frame, basis: str):
    """Within each fit: schedules trained at the reference grid by their trained loss there
    (``reference_loss``), then the others by the law."""
    import numpy as np

    order = {name: i for i, name in enumerate(dict.fromkeys(frame["fit"]))}
    frame = frame.assign(fit_order=frame["fit"].map(order), untrained=frame["reference_loss"].isna())
    frame = frame.sort_values(["fit_order", "untrained", "reference_loss", "loss", "run_id"], kind="stable")
    frame = frame.reset_index(drop=True)
    frame["rank"] = frame.groupby("fit").cumcount() + 1
    frame["ranked_by"] = np.where(frame["untrained"], "law (not trained: unchecked)", basis)
    return frame.drop(columns=["fit_order", "untrained"])


def run_sparsity(args: argparse.Namespace) -> int:
    import pandas as pd

    from sparsescale import plan
    from sparsescale.laws.sparsity import OPTIMAL_SPARSITY_DEFINITION

    fits, cost, _ = _fits_and_cost(args)
    frame = pd.concat([plan.sparsity_plan(f, args.n, args.compute, cost, args.s_max) for f in fits], ignore_index=True)
    shown = ["fit", "n_nonzero", "compute_flops", "s_opt", "tokens", "loss", "dense_loss", "gain_vs_dense",
             "multiplier", "at_s_max", "device_hours", "extrapolation"]
    emitted = _emit_sparsity(args, fits, frame[frame["fit"] == fits[0].name]) if args.emit_config else None
    notes = [OPTIMAL_SPARSITY_DEFINITION,
             "multiplier: a sparse model with N non-zeros at S_opt matches a dense model of multiplier x N parameters; "
             "device-hours take C as the dense model's FLOPs"]
    return _report(args, "sparsity", "Optimal sparsity (paper B's L(S, N, D))", frame, shown, fits, cost, emitted, notes)


def run_check(args: argparse.Namespace) -> int:
    import pandas as pd

    from sparsescale import claims, plan

    fits, cost, table = _fits_and_cost(args)
    study, _ = _base_study(args)
    corpora = sorted({e["corpus"] for e in study["experiments"]})
    vocab = {c: plan.vocab_size(study, c, args.results, args.vocab_size)[0] for c in corpora}
    frame = pd.concat([plan.check_runs(f, study, vocab, args.results) for f in fits], ignore_index=True)
    shown = ["fit", "run_id", "loss", "observed_loss", "error", "inside_interval", "n_avg", "observed_n_avg",
             "tokens", "observed_tokens", "extrapolation"]
    notes = [f"{fit.name}: mean absolute error {g['error'].abs().mean():.4f} nats over {len(g)} runs"
             for fit, (_, g) in zip(fits, frame.groupby("fit", sort=False))]
    ranking = plan.check_ranking(pd.concat([frame, plan.transferred_orders(frame, _trained_runs(args, table))],
                                           ignore_index=True), claims.PRUNE_MARGIN)
    notes += [f"schedule ranking, {row['fit']}, {plan.ranking_line(row)}" for _, row in ranking.iterrows()]
    return _report(args, "check", "Predicted (before training) against observed final loss", frame, shown, fits,
                   cost, None, notes)


# ----------------------------------------------------------------------------- inputs


def _fits_and_cost(args):
    from sparsescale import plan
    from sparsescale.laws.cli import load_table

    fits = [plan.load_fit(spec) for spec in args.fit]
    runs = load_table(args.runs) if args.runs and Path(args.runs).is_file() else None
    return fits, plan.make_cost(args.device, args.peak_flops, args.mfu, runs), runs


def _base_study(args):
    from sparsescale.config import load_config

    return load_config(*args.config), list(args.config)


def _study(configs: list[str], frag: dict) -> dict:
    from sparsescale.config import load_config
    from sparsescale.io import InputError

    try:
        return load_config(*configs, frag)
    except InputError as err:
        raise InputError(f"the planned runs do not make a valid study over {' + '.join(configs)}: {err}") from err


def _corpus(args, study: dict) -> str:
    return args.corpus or study["experiments"][0]["corpus"]


def _yaml_mapping(text: str, arg: str, given: str | None = None) -> dict:
    """``text`` parsed as a YAML mapping; errors quote the argument as ``given``."""
    import yaml

    from sparsescale.io import InputError

    given = text if given is None else given
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"{arg} {given!r}: does not parse as YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(value, dict):
        raise InputError(f"{arg} {given!r}: expected a mapping such as {{method: global, start: 0.25, end: 0.75}}")
    return value


def _model(args, study: dict) -> tuple[dict, str]:
    from sparsescale import plan
    from sparsescale.io import InputError

    if args.scale:
        if args.scale not in study["models"]:
            raise InputError(f"--scale {args.scale}: not a model of the config ({', '.join(study['models'])})")
        return {}, args.scale
    text = args.model if args.model.lstrip().startswith("{") else "{" + args.model.replace("=", ": ") + "}"
    shape = _yaml_mapping(text, "--model", args.model)
    keys = ("d_model", "n_layers", "n_heads", "d_ff")
    if set(shape) != set(keys) or not all(isinstance(shape[k], int) and shape[k] > 0 for k in keys):
        raise InputError(f"--model {args.model!r}: give positive integers for exactly {', '.join(keys)}")
    for name, existing in study["models"].items():
        if existing == shape:
            return {}, name
    return {plan.model_name(shape): shape}, plan.model_name(shape)


def _budget(args, study: dict) -> tuple[dict, str]:
    from sparsescale import plan
    from sparsescale.io import InputError

    if args.budget:
        if args.budget not in study["budgets"]:
            raise InputError(f"--budget {args.budget}: not a budget of the config ({', '.join(study['budgets'])})")
        return {}, args.budget
    if args.tokens is not None:
        if args.tokens < 1:
            raise InputError(f"--tokens must be a positive integer, got {args.tokens}")
        return {plan.budget_name(args.tokens): {"tokens": args.tokens}}, plan.budget_name(args.tokens)
    if not args.tokens_per_param > 0:
        raise InputError(f"--tokens-per-param must be positive, got {args.tokens_per_param}")
    name = f"plan-tpp{args.tokens_per_param:g}"
    return {name: {"tokens_per_param": args.tokens_per_param}}, name


def _check_budget(args, study: dict, model: dict, budget_spec: dict, vocab: int) -> None:
    """A budget below one optimizer step is an error naming the argument that set it."""
    from sparsescale.io import InputError
    from sparsescale.model import ModelConfig, count_params

    per_step = study["training"]["batch_size"] * study["training"]["seq_len"]
    n_prunable = count_params(ModelConfig(vocab_size=vocab, **model))["n_prunable"]
    tokens = budget_spec.get("tokens") or budget_spec["tokens_per_param"] * n_prunable
    if tokens < per_step:
        arg = (f"--budget {args.budget}" if args.budget else f"--tokens {args.tokens}" if args.tokens is not None
               else f"--tokens-per-param {args.tokens_per_param:g}")
        raise InputError(f"{arg}: {tokens:g} tokens is below one optimizer step of {per_step} tokens (batch_size "
                         f"{study['training']['batch_size']} x seq_len {study['training']['seq_len']} of the config)")


def _schedule_spec(text: str, index: int, study: dict,
                   final_sparsity: list[float] | None) -> tuple[str, dict | None, dict[str, dict] | None]:
    """(family or schedule id, its spec or None for one the config defines, the family's
    expanded schedules or None for a schedule id) of one --schedule."""
    from sparsescale import config as cfgmod
    from sparsescale.io import InputError

    stripped = text.strip()
    name, sep, body = stripped.partition("=")
    if not sep and not stripped.startswith("{"):
        if name in study["schedules"]:
            return name, None, cfgmod.schedule_variants(name, study["schedules"][name])
        if name in cfgmod.schedules(study):
            return name, None, None
        raise InputError(f"--schedule {text!r}: not a schedule family or id of the config, and not a mapping")
    if not sep:
        name, body = f"plan{index + 1}", stripped
    name = name.strip()
    spec = _yaml_mapping(body, "--schedule", text)
    if spec.get("method") not in ("dense", "nm") and "final_sparsity" not in spec:
        if not final_sparsity:
            raise InputError(f"--schedule {text!r}: no final_sparsity; give --final-sparsity or put it in the schedule")
        spec["final_sparsity"] = final_sparsity if len(final_sparsity) > 1 else final_sparsity[0]
    try:
        variants = cfgmod.resolve_schedule_family(name, spec)
    except InputError as err:
        raise InputError(f"--schedule {text!r}: {err}") from err
    if name in study["schedules"] and cfgmod.schedule_variants(name, study["schedules"][name]) != variants:
        raise InputError(f"--schedule {text!r}: the config already has a different family {name!r}; choose another name")
    return name, spec, variants


def _at_sparsities(text: str, family: str, variants: dict[str, dict] | None,
                   final_sparsity: list[float] | None) -> list[str]:
    """What an experiment lists for one --schedule: the family (or the schedule id asked for),
    or, where --final-sparsity selects among the sparsities a family lists, its schedule ids at
    those sparsities."""
    from sparsescale.io import InputError

    if not final_sparsity or variants is None:
        return [family]
    listed = {v.get("final_sparsity") for v in variants.values()} - {None}
    if len(listed) < 2:
        return [family]
    chosen = [sid for sid, v in variants.items()
              if any(math.isclose(v["final_sparsity"], s, abs_tol=1e-6) for s in final_sparsity)]
    if not chosen:
        raise InputError(f"--final-sparsity {' '.join(f'{s:g}' for s in final_sparsity)}: schedule {text!r} lists "
                         f"final sparsities {', '.join(f'{s:g}' for s in sorted(listed))}, none of them")
    return chosen


# ----------------------------------------------------------------------------- emitting runs


def _emit_dense(args, fits, rows):
    from sparsescale import plan

    base, configs = _base_study(args)
    corpus = _corpus(args, base)
    vocab, _ = plan.vocab_size(base, corpus, args.results, args.vocab_size)
    budgets, experiments = {}, []
    for i, row in enumerate(rows.itertuples(index=False)):
        scale, n_scale = plan.nearest_scale(base, vocab, row.n_opt, args.scales)
        budget = _tokens_budget(row.compute_flops / (6.0 * n_scale), "--compute", row.compute_flops)
        budgets.update(budget)
        experiments.append({"name": f"plan-{i + 1}", "corpus": corpus, "scales": [scale], "budgets": list(budget),
                            "schedules": ["dense"], "seeds": args.seeds})
    frag = plan.fragment({}, budgets, {"dense": {"method": "dense"}}, experiments)
    return _write_fragment(args, "dense", frag, configs, _study(configs, frag), fits, {corpus: vocab})


def _emit_sparsity(args, fits, rows):
    from sparsescale import plan
    from sparsescale.io import InputError

    base, configs = _base_study(args)
    corpus = _corpus(args, base)
    vocab, _ = plan.vocab_size(base, corpus, args.results, args.vocab_size)
    recipe = dict(PAPER_B_RECIPE)
    if args.schedule:
        recipe = _yaml_mapping(args.schedule, "--schedule")
        recipe.pop("final_sparsity", None)
    sparsities = sorted({round(float(s), 2) for s in rows["s_opt"] if round(float(s), 2) > 0})
    schedules, sparse_ids = {"dense": {"method": "dense"}}, {}
    if sparsities:
        from sparsescale.config import resolve_schedule_family

        schedules["plan-sparse"] = {**recipe, "final_sparsity": sparsities}
        try:
            variants = resolve_schedule_family("plan-sparse", schedules["plan-sparse"])
        except InputError as err:
            raise InputError(f"--schedule {args.schedule!r}: {err}") from err
        sparse_ids = {round(v["final_sparsity"], 2): k for k, v in variants.items()}
    budgets, experiments = {}, []
    for i, row in enumerate(rows.itertuples(index=False)):
        s = round(float(row.s_opt), 2)
        # the sparse run: the rung whose dense size is nearest N / (1 - S); C = 6 N_dense D
        if s > 0:
            scale, n_scale = plan.nearest_scale(base, vocab, row.n_nonzero / (1 - s), args.scales)
            budget = _tokens_budget(row.compute_flops / (6.0 * n_scale), "--compute", row.compute_flops)
            budgets.update(budget)
            experiments.append({"name": f"plan-{i + 1}-sparse", "corpus": corpus, "scales": [scale],
                                "budgets": list(budget), "schedules": [sparse_ids[s]], "seeds": args.seeds})
        # beside it, the dense model of the same non-zero size on the same compute
        scale, n_scale = plan.nearest_scale(base, vocab, row.n_nonzero, args.scales)
        budget = _tokens_budget(row.compute_flops / (6.0 * n_scale), "--compute", row.compute_flops)
        budgets.update(budget)
        experiments.append({"name": f"plan-{i + 1}-dense", "corpus": corpus, "scales": [scale],
                            "budgets": list(budget), "schedules": ["dense"], "seeds": args.seeds})
    frag = plan.fragment({}, budgets, schedules, experiments)
    return _write_fragment(args, "sparsity", frag, configs, _study(configs, frag), fits, {corpus: vocab})


def _tokens_budget(tokens: float, arg: str, value: float) -> dict:
    from sparsescale import plan
    from sparsescale.io import InputError

    tokens = int(round(tokens))
    if tokens < 1:
        raise InputError(f"{arg} {value:g}: less than one token for the chosen model")
    return {plan.budget_name(tokens): {"tokens": tokens}}


def _write_fragment(args, question: str, frag: dict, configs: list[str], study: dict, fits, vocab: dict) -> dict:
    import pandas as pd

    from sparsescale import claims, plan
    from sparsescale.io import write_text

    runs = plan.account_study(study, vocab)  # exactly what Snakemake will train (one budget below a step fails here)
    predictions = pd.concat([plan.predict_runs(f, runs) for f in fits], ignore_index=True)
    config_args = " ".join([*configs, args.emit_config])
    # only the runs (and their data): the base study's fits would not fit on these few runs
    train = f"snakemake --cores all --configfile {config_args} --omit-from aggregate"
    check = f"sparsescale plan check --fit {' '.join(args.fit)} --config {config_args}"
    header = [f"Runs recommended by `sparsescale plan {question}` ({', '.join(args.fit)}), to check its predictions.",
              "Merged over the base config by Snakemake: models/budgets/schedules merge, experiments replace.",
              f"Train: {train}", f"Then: {check}", "", "Predicted final loss (nats/token):"]
    # one line per fit and run, its seeds together (they share the prediction)
    predictions["run"] = predictions[claims.RUN_CONFIG].astype(str).agg("/".join, axis=1)
    for (fit, run), rows in predictions.groupby(["fit", "run"], sort=False):
        row = rows.iloc[0]
        interval = f" [{row['loss_lo']:.4f}, {row['loss_hi']:.4f}]" if "loss_lo" in rows else ""
        header.append(f"  {fit}  {run} ({seed_list(rows['seed'])}): {row['loss']:.4f}{interval}")
    write_text(args.emit_config, plan.fragment_yaml(frag, header))
    return {"config": args.emit_config, "train_command": train, "check_command": check,
            "runs": predictions.to_dict("records")}


def seed_list(seeds) -> str:
    """'seed 3', or 'seeds 0, 7-38' (consecutive seeds as a range)."""
    seeds = sorted(int(s) for s in seeds)
    spans: list[list[int]] = []
    for s in seeds:
        if spans and s == spans[-1][1] + 1:
            spans[-1][1] = s
        else:
            spans.append([s, s])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
    return f"seed{'s' if len(seeds) > 1 else ''} {text}"


# ----------------------------------------------------------------------------- output


def _report(args, question: str, title: str, frame, shown: list[str], fits, cost, emitted=None,
            notes: list[str] | None = None) -> int:
    from sparsescale.laws.cli import _finite_or_null

    notes = list(notes or [])
    notes.append(f"cost: {cost.device}, peak {cost.peak_flops:.3g} FLOP/s, MFU {cost.mfu:.3g}: {cost.mfu_source}")
    for fit in fits:
        line = f"{fit.name} ({fit.law}): {fit.source}"
        line += (f"; intervals: {100 * fit.level:g}% percentile over {len(fit.samples)} bootstrap refits"
                 if len(fit.samples) >= 2 else f"; {len(fit.samples)} usable bootstrap refits, so no intervals")
        if fit.invalid_samples:
            line += (f"; {fit.invalid_samples} refits left out: a coefficient stored as null, or as 0 where the "
                     f"law needs a positive value")
        line += "".join(f"; {n} refits gave no finite {what} (left out of its interval)"
                        for what, n in fit.failed.items() if n)
        notes.append(line)
    if "extrapolation" in frame and (frame["extrapolation"] != "").any():
        notes.append("extrapolation: inputs outside the range the law was fitted on are flagged; treat those answers "
                     "as extrapolations")
    if args.json is not None:
        doc = _finite_or_null({"question": question, "title": title, "fits": [f.describe() for f in fits],
                               "cost": cost.describe(), "rows": frame.to_dict("records"), "notes": notes,
                               **({"emitted": emitted} if emitted else {})})
        text = json.dumps(doc, indent=2, default=str) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            from sparsescale.io import write_text

            write_text(args.json, text)
        return 0
    print(f"{title}\n")
    print(render(frame, shown))
    if emitted:
        print(f"\nWrote {emitted['config']}: {len({r['run_id'] for r in emitted['runs']})} run(s).")
        print(f"  train: {emitted['train_command']}\n  check: {emitted['check_command']}")
    print()
    for line in notes:
        print(f"- {line}")
    return 0


def render(frame, columns: list[str]) -> str:
    """A terminal table of ``columns``; a column with ``_lo``/``_hi`` companions shows 'x [lo, hi]'."""
    import pandas as pd

    from sparsescale.figures import format_frame

    shown = pd.DataFrame(index=frame.index)
    for col in columns:
        if col not in frame:
            continue
        text = format_frame(frame[[col]])[col]
        if f"{col}_lo" in frame:
            lo = format_frame(frame[[f"{col}_lo"]])[f"{col}_lo"]
            hi = format_frame(frame[[f"{col}_hi"]])[f"{col}_hi"]
            known = frame[f"{col}_lo"].notna() & frame[f"{col}_hi"].notna()
            text = text.where(~known, text + " [" + lo + ", " + hi + "]")
        shown[col] = text
    return shown.to_string(index=False)
