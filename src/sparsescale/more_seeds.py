"""The second stage of the when-to-prune design: more seeds where a group is underpowered.

An experiment that lists ``more_seeds`` runs its own ``seeds`` first. This step reads their
final losses, asks ``claims.when_to_prune_seeds`` how many seeds each group needs for its
seed-paired gap's standard error to be at most a third of the claim's margin, and lists the
runs that make up the shortfall: every sparse schedule of the group at the next seeds of
``more_seeds``, as many as there are. The workflow trains them before it aggregates (a
Snakemake checkpoint). The rule reads the scatter of the per-seed differences, never the
gap, so it cannot steer a verdict (docs/study-design.md, "An internal pilot").
"""

from __future__ import annotations

import argparse
import json
import math

from sparsescale.io import InputError, get_logger, write_json

log = get_logger("sparsescale.more_seeds")


def plan(runs, groups: list[dict]) -> dict:
    """The runs to add (``runs``) and, per group, the numbers that decided them (``groups``).

    ``runs`` is the aggregated table of the groups' own runs; ``groups`` comes from
    ``config.more_seed_groups``. A group no when-to-prune analysis judges (no 25%->75%
    schedule, one schedule) or with a single seed so far gets nothing: there is no scatter to
    size it from.
    """
    import numpy as np

    from sparsescale import claims

    need = claims.when_to_prune_seeds(runs)
    added, decided = [], []
    for group in groups:
        row = need[(need["corpus"] == group["corpus"]) & (need["scale"] == group["scale"])
                   & (need["budget"] == group["budget"])
                   & np.isclose(need["target_sparsity"].astype(float), group["final_sparsity"])]
        if row.empty or not math.isfinite(row["seeds_needed"].iloc[0]):
            why = "no when-to-prune analysis of this group" if row.empty else "one seed: no scatter to size it from"
            decided.append({**_where(group), "seeds_added": [], "why": why})
            continue
        r = row.iloc[0]
        shortfall = int(r["seeds_needed"]) - int(r["seeds"])
        seeds = group["seeds"][:max(shortfall, 0)]
        decided.append({**_where(group), "seeds": int(r["seeds"]), "gap_se": float(r["gap_se"]),
                        "scatter": float(r["scatter"]), "target_se": float(r["target_se"]),
                        "seeds_needed": int(r["seeds_needed"]), "seeds_added": seeds,
                        "short_of_target": shortfall > len(group["seeds"])})
        added += [{"corpus": group["corpus"], "scale": group["scale"], "budget": group["budget"],
                   "schedule": schedule, "seed": seed} for seed in seeds for schedule in group["schedules"]]
    return {"se_fraction_of_margin": claims.PAIRED_SE_TARGET, "groups": decided, "runs": added}


def _where(group: dict) -> dict:
    return {key: group[key] for key in ("experiment", "corpus", "scale", "budget", "final_sparsity")}


def _run(args: argparse.Namespace) -> int:
    from sparsescale.aggregate import collect

    try:
        groups = json.loads(args.groups)
    except json.JSONDecodeError as err:
        raise InputError(f"--groups: not valid JSON ({err})") from err
    if not isinstance(groups, list):
        raise InputError("--groups: expected a JSON list of groups (config.more_seed_groups)")
    result = plan(collect(args.metrics)[0], groups)
    for g in result["groups"]:
        where = f"{g['experiment']} {g['scale']}/{g['budget']} at {g['final_sparsity']:g}"
        if "seeds_needed" not in g:
            log.info("%s: adds none (%s)", where, g["why"])
            continue
        log.info("%s: s.e. %.4f on %d seeds against a target of %.4f: needs %d, adds %s%s", where, g["gap_se"],
                 g["seeds"], g["target_se"], g["seeds_needed"], g["seeds_added"] or "none",
                 "; more_seeds runs out short of the target" if g["short_of_target"] else "")
    write_json(args.out, result)
    log.info("%d run(s) to add, listed in %s", len(result["runs"]), args.out)
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "more-seeds",
        help="list the runs of the seeds an underpowered when-to-prune group still needs",
        description="Read the groups' runs, size each group's seeds so that its seed-paired gap's standard error "
        "is at most a third of the margin, and write the runs to add (JSON).",
    )
    parser.add_argument("--groups", required=True,
                        help="JSON list of groups with their schedules and candidate seeds (config.more_seed_groups)")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json of every run of those groups")
    parser.add_argument("--out", required=True, help="e.g. results/design/more-seeds.json")
    parser.set_defaults(func=_run)
