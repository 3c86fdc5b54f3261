"""The numbers behind the default study's design (docs/study-design.md), from a pilot's runs.

    python workflow/scripts/study_design.py [results/aggregate/runs.csv] [--config config/config.yaml]
        [--cores 2] [--margin 0.005]

Run after the pilot (``snakemake --cores all --profile profiles/pilot``). Prints Markdown:

1. evaluation noise: the final loss's standard error (per token and per window) against the
   when-to-prune margin;
2. seed noise: the spread of dense runs across seeds, and the scatter of the seed-paired
   difference between 25%→75% and the best schedule, which sets the standard error of the when-to-prune gap and so the
   seeds needed for it to be at most a third of the margin;
3. effect sizes: every schedule's gap to the best of its group;
4. cost: measured tokens/s and per-job time outside the training loop by scale, and the
   config's study projected from them onto ``--cores`` parallel one-thread jobs.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import pandas as pd

from sparsescale import claims as C
from sparsescale import config as study
from sparsescale import results as R
from sparsescale.model import ModelConfig, count_params


def markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    from sparsescale.figures import to_markdown

    return to_markdown(frame, digits)


def evaluation_noise(runs: pd.DataFrame, margins: pd.Series) -> str:
    stdlib = runs[runs["corpus"] == "stdlib"]
    worst = stdlib["final_val_loss_se"].max()
    lines = ["## Evaluation noise", "",
             f"The final loss is measured on {int(stdlib['final_val_tokens'].median()):,} validation tokens "
             f"(the whole split). Its standard error: per token {stdlib['final_val_loss_se'].median():.4f} "
             f"(median), {worst:.4f} (largest); per window of 128 tokens "
             f"{stdlib['final_val_loss_se_window'].median():.4f} (median), "
             f"{stdlib['final_val_loss_se_window'].max():.4f} (largest).",
             f"The smallest when-to-prune margin is {margins.min():.4f} nats, so the largest per-token "
             f"standard error is {worst / margins.min():.2f} of it (target: at most 0.2). Every run of a "
             "corpus is scored on the same tokens, so this error also cancels in the paired comparisons.", ""]
    return "\n".join(lines)


def seed_noise(runs: pd.DataFrame, claim: C.Claim) -> str:
    dense = runs[(runs["method"] == "dense") & (runs["corpus"] == "stdlib")]
    spread = dense.groupby(["scale", "budget"])["final_val_loss"].agg(["std", "count"]).dropna()
    d = claim.detail.copy()
    d["paired_sd"] = d["gap_se"] * np.sqrt(d["seeds"])
    d["seeds_for_se_third_margin"] = np.ceil((3 * d["paired_sd"] / d["margin_abs"]) ** 2).astype(int)
    lines = ["## Seed noise", ""]
    if not spread.empty:
        lines.append("Dense runs differ between seeds by (standard deviation of the final loss): "
                     + ", ".join(f"{s} {b}: {r['std']:.4f} ({int(r['count'])} seeds)" for (s, b), r in spread.iterrows())
                     + ".")
    lines += ["", "Runs of one seed share their initialisation and batches, so a schedule comparison is paired by "
              "seed. The scatter of the per-seed differences between the 25%→75% schedule and the best of its "
              "group sets the standard error of its gap: s.e. = paired sd / sqrt(seeds); the verdict uses the "
              "paired t interval (seeds - 1 degrees of freedom).", "",
              markdown(d[["scale", "budget", "target_sparsity", "seeds", "paired_sd", "gap_se", "margin_abs",
                          "seeds_for_se_third_margin"]]), ""]
    return "\n".join(lines)


def effect_sizes(runs: pd.DataFrame, claim: C.Claim) -> str:
    ranking = C.schedule_ranking(runs)
    lines = ["## Effect sizes", "",
             "Every schedule's gap to the best of its group (seed means), and the 25%→75% schedule's place:", ""]
    for key, g in ranking.groupby(C.GROUP_KEYS):
        g = g.assign(window=[R.window_label(a, b) for a, b in zip(g["start"], g["end"])])
        lines.append(f"- {key[2]} {key[1]} S={100 * key[3]:.0f}%: " + ", ".join(
            f"{w} {gap:+.4f}" for w, gap in zip(g["window"], g["gap_to_best"])))
    d = claim.detail
    lines += ["", markdown(d[["scale", "target_sparsity", "best_schedule", "rank", "gap", "gap_se", "margin_abs",
                              "boot_low", "boot_high"]]), ""]
    return "\n".join(lines)


def cost(runs: pd.DataFrame, config_path: str, cores: int) -> str:
    stdlib = runs[runs["corpus"] == "stdlib"].copy()
    stdlib["outside_loop_s"] = stdlib["wall_time_s"] - stdlib["tokens"] / stdlib["train_tokens_per_s"]
    by_scale = stdlib.groupby("scale").agg(runs=("run_id", "count"), n_prunable=("n_prunable", "first"),
                                           tokens_per_s=("train_tokens_per_s", "median"),
                                           outside_loop_s=("outside_loop_s", "median"))
    cfg = study.load_config(config_path)
    vocab = {name: int(c["tokenizer"].get("vocab_size") or c.get("vocab_size") or 0)
             for name, c in cfg["corpora"].items()}
    projected = []
    for run in study.runs(cfg):
        model = cfg["models"][run.scale]
        if run.scale not in by_scale.index:
            continue
        n = count_params(ModelConfig(vocab_size=vocab[run.corpus] or 300, max_seq_len=128, **model))["n_prunable"]
        budget = cfg["budgets"][run.budget]
        tokens = budget.get("tokens") or budget["tokens_per_param"] * n
        rate, outside = by_scale.loc[run.scale, ["tokens_per_s", "outside_loop_s"]]
        projected.append({"corpus": run.corpus, "scale": run.scale, "seconds": tokens / rate + outside})
    proj = pd.DataFrame(projected)
    lines = ["## Cost", "", "Measured on the pilot's runs (training-loop tokens/s of one-thread jobs; time inside the "
             "job but outside the loop: the final evaluation, start-up excluded):", "",
             markdown(by_scale.reset_index(), 1), ""]
    if not proj.empty:
        total = proj["seconds"].sum()
        lines.append(f"The config's study ({len(proj)} runs with a measured scale) projects to {total / 60:.0f} "
                     f"core-minutes of training, {total / 60 / cores:.0f} minutes on {cores} cores in parallel, "
                     "before process start-up and the fits, notebooks and report:")
        lines += ["", markdown(proj.groupby(["corpus", "scale"])["seconds"].agg(["count", "sum"]).reset_index(), 0), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="?", default="results/aggregate/runs.csv")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--margin", type=float, default=0.005)
    args = ap.parse_args(argv)
    runs = R.load_runs(args.runs)
    claim = C.when_to_prune(runs, args.margin)
    if claim.detail.empty:
        print("no when-to-prune grid in these runs", file=sys.stderr)
        return 1
    print("\n".join([f"# Pilot numbers ({len(runs)} runs of {args.runs})", "",
                     evaluation_noise(runs, claim.detail["margin_abs"]), seed_noise(runs, claim),
                     effect_sizes(runs, claim), cost(runs, args.config, args.cores)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
