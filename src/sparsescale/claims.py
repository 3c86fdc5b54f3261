"""The papers' claims, each judged by more than one analysis of our runs and fits.

One function per claim takes the aggregated runs (``runs.csv``), the fit JSONs by role and,
for the entropy claim, the corpora's entropy rates, and returns a ``Claim``: the claim, the
papers' number, the margin, every analysis with its numbers and decision, and a verdict.

Every analysis decides ``reproduced`` or ``not reproduced`` against the claim's margin, or
says ``underpowered`` when its measured error is wider than the margin (or its estimate sits
within that error of the margin), giving both numbers. An interval from a fit's bootstrap
counts as an error only with enough refits for its tails (40 for a 95% interval). A
claim's verdict is

- **reproduced** / **not reproduced**: every analysis that ran decides, and they agree;
- **unstable**: analyses decide differently;
- **underpowered**: no disagreement, but some analysis cannot decide;
- **not tested**: an input is missing (no run of that kind, no fit).

The margins are the issues' and the papers': 25%-75% within 0.5% of the best schedule's loss;
the N-bar law's held-out error at least 10% below the final-N law's; the optimal sparsity
rising by more than 0.05 over 64x compute at every size; the fitted E within 5% of the
synthetic corpus's entropy rate and closer to it than the best run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from sparsescale import results as R

REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
UNSTABLE, UNDERPOWERED, NOT_TESTED = "unstable", "underpowered", "not tested"
DECIDED = (REPRODUCED, NOT_REPRODUCED)
VERDICTS = (REPRODUCED, NOT_REPRODUCED, UNSTABLE, UNDERPOWERED, NOT_TESTED)
N_BOOT = 2000
PRUNE_MARGIN = 0.005  # paper A's "near-optimal": within 0.5% of the best schedule's loss


@dataclass
class Analysis:
    """One way of judging a claim: its decision and the numbers behind it, in words."""

    name: str
    decision: str
    numbers: str
    value: float = math.nan  # the headline number (a gap, an error ratio, a change in S_opt)
    interval: tuple[float, float] = (math.nan, math.nan)


@dataclass
class Claim:
    key: str
    claim: str
    paper: str
    margin: str
    analyses: list[Analysis]
    detail: pd.DataFrame = field(default_factory=pd.DataFrame)  # per group / per size, for figures

    @property
    def verdict(self) -> str:
        return combine([a.decision for a in self.analyses])

    @property
    def ours(self) -> str:
        return "; ".join(f"{a.name}: {a.numbers} ({a.decision})" for a in self.analyses)

    @property
    def value(self) -> float:
        return self.analyses[0].value if self.analyses else math.nan

    def row(self) -> dict:
        return {"claim": self.claim, "our result": self.ours, "papers' result": self.paper, "margin": self.margin,
                "verdict": self.verdict, "headline number": self.value}

    def analysis_rows(self) -> list[dict]:
        return [{"claim": self.claim, "analysis": a.name, "decision": a.decision, "numbers": a.numbers,
                 "value": a.value, "interval_low": a.interval[0], "interval_high": a.interval[1]}
                for a in self.analyses]


def combine(decisions: list[str]) -> str:
    """A verdict from several decisions (see the module docstring)."""
    ran = [d for d in decisions if d != NOT_TESTED]
    if not ran:
        return NOT_TESTED
    if UNSTABLE in ran or len({d for d in ran if d in DECIDED}) > 1:
        return UNSTABLE
    if UNDERPOWERED in ran:
        return UNDERPOWERED
    return ran[0]


def _against_margin(estimate: float, error: float, margin: float) -> str:
    """``estimate`` (a gap) judged against ``margin`` with ``error`` (a 95% half-width):
    within the margin, clearly beyond it, or underpowered (error wider than the margin, or
    the estimate within the error of it)."""
    if not (np.isfinite(estimate) and np.isfinite(error)) or error > margin:
        return UNDERPOWERED
    if estimate <= margin:
        return REPRODUCED
    if estimate - error > margin:
        return NOT_REPRODUCED
    return UNDERPOWERED


def across_groups(decisions: list[str]) -> str:
    """One analysis of a claim that should hold in every group (every scale and final
    sparsity): not reproduced if it clearly fails in any group, since one clear
    counter-example refutes it whatever the others say; reproduced if it holds in every
    group; underpowered otherwise (some group cannot decide, none refutes it)."""
    if not decisions:
        return NOT_TESTED
    if NOT_REPRODUCED in decisions:
        return NOT_REPRODUCED
    return REPRODUCED if all(d == REPRODUCED for d in decisions) else UNDERPOWERED


def _too_few_refits(fit: dict, level: float = 0.95) -> str | None:
    """Why a fit's bootstrap cannot give a ``level`` percentile interval, or None. Each tail
    needs at least one refit beyond the percentile: 2 / (1 - level) refits, 40 at 95%. With
    fewer, the interval is just the refits' range, narrow or wide by chance (the tiny
    profile's 5 refits). Fits without a bootstrap record are not judged here."""
    boot = fit.get("bootstrap") or {}
    if "samples" in boot:
        return _too_few(len(boot["samples"]), level)
    if "n_boot" in boot:
        return _too_few(int(boot["n_boot"]) - int(boot.get("n_failed") or 0), level)
    return None


def _too_few(refits: int, level: float = 0.95) -> str | None:
    """``_too_few_refits`` for a count of usable refits."""
    need = round(2 / (1 - level))
    if refits >= need:
        return None
    return f"the interval rests on {refits} bootstrap refits; a {100 * level:.0f}% percentile interval needs at least {need}"


def _percentiles(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------
# Paper A: prune from 25% to 75% of compute
# ---------------------------------------------------------------------------------------
GROUP_KEYS = ["corpus", "budget", "scale", "target_sparsity"]


def geometric_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Paper A's schedule grid: global magnitude pruning, geometric shape, with a start and end."""
    mask = (runs["method"].astype(str) == "global") & (runs["shape"].astype(str) == "geometric")
    mask &= runs["start"].notna() & runs["end"].notna() & (runs["target_sparsity"] > 0)
    geo = runs[mask].copy()
    geo["start"], geo["end"] = geo["start"].round(4), geo["end"].round(4)  # windows compare exactly
    return geo


def schedule_ranking(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (corpus, budget, scale, target sparsity): each (start, end) with its seed mean and rank."""
    geo = geometric_runs(runs)
    if geo.empty:
        return pd.DataFrame()
    agg = (geo.groupby(GROUP_KEYS + ["start", "end"], dropna=False)["final_val_loss"]
           .agg(loss="mean", seed_std="std", seeds="count").reset_index())
    agg["duration"] = (agg["end"] - agg["start"]).round(4)
    agg["rank"] = agg.groupby(GROUP_KEYS)["loss"].rank(method="min").astype(int)
    agg["gap_to_best"] = agg["loss"] - agg.groupby(GROUP_KEYS)["loss"].transform("min")
    agg["schedules_in_group"] = agg.groupby(GROUP_KEYS)["loss"].transform("count").astype(int)
    return agg.sort_values(GROUP_KEYS + ["rank"]).reset_index(drop=True)


def _paired_gap(table: pd.DataFrame, hit: tuple, best: tuple) -> tuple[float, float, float]:
    """Gap of schedule ``hit`` over schedule ``best``, its standard error and its 95%
    half-width, from a (window x seed) table of losses.

    Runs of one seed share the initialisation and the batches whatever their schedule, so
    the gap is the mean of the per-seed differences ``hit - best`` over the seeds both ran,
    and its error is that very difference's scatter: a paired t interval (Student's t with
    seeds - 1 degrees of freedom). Other schedules' differences are not pooled in: their
    scatter says nothing about this pair's (at 8 seeds of the default run some scattered
    three times as much). NaN errors with one seed.
    """
    diffs = (table.loc[hit] - table.loc[best]).dropna().to_numpy(float)
    if len(diffs) == 0:
        return math.nan, math.nan, math.nan
    if len(diffs) < 2:
        return float(diffs.mean()), math.nan, math.nan
    se = float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    return float(diffs.mean()), se, float(stats.t.ppf(0.975, len(diffs) - 1)) * se


def _seed_bootstrap_gap(table: pd.DataFrame, hit: tuple, n_boot: int, seed: int) -> np.ndarray:
    """Gap of ``hit`` to the best schedule with seeds resampled (the same resampled seeds for
    every schedule, so pairing is kept): the best schedule is chosen afresh in each resample,
    so the interval includes the luck of picking the winner. Seeds every schedule ran only."""
    complete = table.dropna(axis=1).to_numpy()
    if complete.shape[1] < 2:
        return np.array([])
    pick = np.random.default_rng(seed).integers(0, complete.shape[1], (n_boot, complete.shape[1]))
    means = complete[:, pick].mean(axis=2)  # schedules x resamples
    return means[list(table.index).index(hit)] - means.min(axis=0)


def when_to_prune(runs: pd.DataFrame, margin: float = 0.005, start: float = 0.25, end: float = 0.75,
                  n_boot: int = N_BOOT, seed: int = 0) -> Claim:
    """Paper A: the start->end schedule is within ``margin`` (a fraction of the best loss) of
    the best schedule of its grid, in every (scale, sparsity) group. Two analyses: the
    seed-paired gap with its standard error, and a bootstrap over seeds that re-picks the best."""
    claim = Claim("when_to_prune", "Pruning from 25% to 75% of compute is near-optimal (paper A)",
                  "near-optimal across 80 schedules (58M-468M params)",
                  f"{100 * margin:.2f}% of the best loss", [])
    ranking = schedule_ranking(runs)
    groups = [] if ranking.empty else list(ranking.groupby(GROUP_KEYS))
    by_group = dict(iter(geometric_runs(runs).groupby(GROUP_KEYS))) if groups else {}
    rows = []
    for group, frame in groups:
        hit = frame[np.isclose(frame["start"], start) & np.isclose(frame["end"], end)]
        if hit.empty or len(frame) < 2:
            continue
        best = frame.loc[frame["loss"].idxmin()]
        table = by_group[group].pivot_table(index=["start", "end"], columns="seed", values="final_val_loss",
                                            aggfunc="mean")
        h = hit.iloc[0]
        hit_window, best_window = (h["start"], h["end"]), (best["start"], best["end"])
        margin_abs = margin * float(best["loss"])
        gap, se, half = _paired_gap(table, hit_window, best_window)
        boot = _seed_bootstrap_gap(table, hit_window, n_boot, seed)
        lo, hi = _percentiles(boot)
        median = float(np.median(boot)) if boot.size else math.nan
        rows.append({**dict(zip(GROUP_KEYS, group)), "best_schedule": R.window_label(*best_window),
                     "best_loss": float(best["loss"]), "loss_25_75": float(h["loss"]), "rank": int(h["rank"]),
                     "schedules": int(len(frame)), "seeds": int(table.notna().all().sum()),
                     "margin_abs": margin_abs, "gap": gap, "gap_se": se, "gap_halfwidth": half,
                     "paired": _against_margin(gap, half, margin_abs),
                     "boot_gap": median, "boot_low": lo, "boot_high": hi,
                     "bootstrap": _against_margin(median, (hi - lo) / 2, margin_abs)})
    detail = pd.DataFrame(rows)
    claim.detail = detail
    if detail.empty:
        reason = "no 25%→75% geometric schedule with alternatives in the run set"
        claim.analyses = [Analysis("seed-paired gap", NOT_TESTED, reason),
                          Analysis("seed bootstrap", NOT_TESTED, reason)]
        return claim
    ranks = ", ".join(f"{r.rank}/{r.schedules}" for r in detail.itertuples())
    largest = detail.loc[detail["gap"].idxmax()]
    paired = across_groups(detail["paired"].tolist())
    claim.analyses.append(Analysis(
        "seed-paired gap", paired,
        f"within the margin in {(detail['paired'] == REPRODUCED).sum()}/{len(detail)} groups, clearly beyond in "
        f"{(detail['paired'] == NOT_REPRODUCED).sum()}; largest gap {largest['gap']:.4f} nats "
        f"(95% ± {largest['gap_halfwidth']:.4f}, s.e. {largest['gap_se']:.4f}, margin {largest['margin_abs']:.4f}); "
        f"widest 95% half-width {detail['gap_halfwidth'].max():.4f} vs smallest margin "
        f"{detail['margin_abs'].min():.4f}; ranks {ranks}",
        float(detail["gap"].max()), (float((detail["gap"] - detail["gap_halfwidth"]).max()),
                                     float((detail["gap"] + detail["gap_halfwidth"]).max()))))
    claim.analyses.append(_seed_bootstrap_analysis(detail, "seed bootstrap (best re-picked)", "gap", "boot_gap",
                                                   "schedule"))
    return claim


def _seed_bootstrap_analysis(detail: pd.DataFrame, name: str, quantity: str, estimate_col: str,
                             unit: str) -> Analysis:
    """The seed-bootstrap analysis over groups (``boot_low``, ``boot_high``, ``bootstrap``
    columns of ``detail``), reported by its widest interval."""
    width = detail["boot_high"] - detail["boot_low"]
    if width.isna().all():
        return Analysis(name, UNDERPOWERED, f"fewer than 2 seeds ran every {unit} of a group: nothing to resample")
    widest = detail.loc[width.idxmax()]
    return Analysis(
        name, across_groups(detail["bootstrap"].tolist()),
        f"within in {(detail['bootstrap'] == REPRODUCED).sum()}/{len(detail)} groups, clearly beyond in "
        f"{(detail['bootstrap'] == NOT_REPRODUCED).sum()}; widest 95% interval of the {quantity} "
        f"[{widest['boot_low']:.4f}, {widest['boot_high']:.4f}] nats (margin {widest['margin_abs']:.4f})",
        float(detail[estimate_col].max()), (float(detail["boot_low"].max()), float(detail["boot_high"].max())))


# issue 13: the design makes the seed-paired gap's standard error at most a third of the margin
PAIRED_SE_TARGET = 1 / 3


def when_to_prune_seeds(runs: pd.DataFrame, margin: float = 0.005, start: float = 0.25, end: float = 0.75,
                        se_fraction: float = PAIRED_SE_TARGET) -> pd.DataFrame:
    """The seeds each when-to-prune group needs for its seed-paired gap's standard error to be
    at most ``se_fraction`` of the margin: an internal pilot (Wittes & Brittain, 1990).

    The scatter of the per-seed differences on the seeds run so far, ``s.e. x sqrt(seeds)``,
    gives the count ``(scatter / target)**2``. Only that scatter is read, never the gap, so
    adding seeds by this rule cannot steer the verdict toward either side of the margin.
    A group with one seed has no scatter yet: its ``seeds_needed`` is NaN.
    """
    detail = when_to_prune(runs, margin, start, end).detail
    columns = GROUP_KEYS + ["seeds", "gap_se", "scatter", "target_se", "seeds_needed"]
    if detail.empty:
        return pd.DataFrame(columns=columns)
    table = detail[GROUP_KEYS + ["seeds", "gap_se"]].copy()
    table["scatter"] = table["gap_se"] * np.sqrt(table["seeds"])
    table["target_se"] = se_fraction * detail["margin_abs"]
    needed = np.ceil((table["scatter"] / table["target_se"]) ** 2 - 1e-9)  # a ratio of exactly 1 needs no more
    table["seeds_needed"] = np.maximum(needed, table["seeds"]).where(needed.notna())
    return table[columns]


# ---------------------------------------------------------------------------------------
# Ours: the fitted law's schedule advice holds when trained
# ---------------------------------------------------------------------------------------
RANKING_ROLES = ("average_params", "recovery")  # the laws that can rank pruning schedules


RUN_CONFIG = ["corpus", "scale", "budget", "schedule"]  # a run without its seed
LEAVE_ONE_WINDOW_OUT, FRESH_RUNS = "leave one window out", "fresh runs"


def heldout_window_predictions(fit: dict) -> pd.Series:
    """run_id -> the law's leave-one-window-out prediction (a fit on the other windows)."""
    block = (fit.get("heldout") or {}).get("leave_one_window_out") or {}
    return pd.Series({p["run_id"]: p["predicted"] for p in block.get("predictions") or []}, dtype=float)


def heldout_predictions(runs: pd.DataFrame, fit: dict, role: str) -> tuple[pd.Series, pd.Series]:
    """run_id -> a prediction by a fit that saw no run of the run's window at its scale and
    budget, and run_id -> where it comes from: the leave-one-window-out prediction of the
    run's configuration (scale, budget, schedule; another seed of it counts) where the fit
    had that configuration, the full fit's prediction where it had no run of it (fresh runs,
    e.g. a schedule grid trained at another scale to check the planner)."""
    config = runs[RUN_CONFIG].astype(str).agg("/".join, axis=1)
    of_run = dict(zip(runs["run_id"], config))
    lowo = {of_run[r]: p for r, p in heldout_window_predictions(fit).items() if r in of_run}
    fitted = set(config[runs["run_id"].isin(R.select_fit_runs(runs, fit)["run_id"])])
    in_lowo = config.isin(lowo.keys()).to_numpy()
    fresh = ~in_lowo & ~config.isin(fitted).to_numpy()
    predicted = pd.concat([pd.Series([lowo[k] for k in config[in_lowo]], index=runs["run_id"][in_lowo], dtype=float),
                           pd.Series(R.law_predictions(runs[fresh], fit, role).to_numpy(), index=runs["run_id"][fresh],
                                     dtype=float)])
    source = pd.Series([LEAVE_ONE_WINDOW_OUT] * int(in_lowo.sum()) + [FRESH_RUNS] * int(fresh.sum()),
                       index=predicted.index, dtype=object)
    return predicted, source


def _spearman(predicted: np.ndarray, trained: np.ndarray) -> float:
    if len(predicted) < 3 or np.ptp(predicted) == 0 or np.ptp(trained) == 0:
        return math.nan
    return float(stats.spearmanr(predicted, trained).statistic)


def ranking_quality(runs: pd.DataFrame, predicted: pd.Series, margin: float = 0.005, n_boot: int = N_BOOT,
                    seed: int = 0, source: pd.Series | None = None) -> pd.DataFrame:
    """How well predicted losses (run_id -> loss) rank the trained windows of each schedule
    grid group (scale x budget x final sparsity): Spearman's rank correlation of predicted
    against trained (seed-mean) losses, and the regret of the prediction's pick, its trained
    loss minus the best window's. The regret is judged against ``margin`` (a fraction of the
    best loss) twice, as the when-to-prune gap is: seed-paired with its t interval, and by a
    seed bootstrap that re-picks the best window in each resample (so the pick being the
    trained best by luck is not mistaken for precision). Groups with fewer than 3 predicted
    windows are left out. ``source`` (run_id -> how its prediction was held out) is listed
    per group."""
    from sparsescale.laws.recovery import with_recovery_columns

    geo = geometric_runs(with_recovery_columns(runs))
    geo = geo.assign(predicted=geo["run_id"].map(predicted),
                     source=geo["run_id"].map(source) if source is not None else None)
    rows = []
    for group, frame in geo.groupby(GROUP_KEYS):
        table = frame.pivot_table(index=["start", "end"], columns="seed", values="final_val_loss", aggfunc="mean")
        pred = frame.groupby(["start", "end"])["predicted"].mean().reindex(table.index)
        table, pred = table[pred.notna()], pred.dropna()
        if len(pred) < 3:
            continue
        trained = table.mean(axis=1)
        pick, best = pred.idxmin(), trained.idxmin()
        margin_abs = margin * float(trained.min())
        regret, se, half = _paired_gap(table, pick, best)
        boot = _seed_bootstrap_gap(table, pick, n_boot, seed)
        lo, hi = _percentiles(boot)
        median = float(np.median(boot)) if boot.size else math.nan
        complete = table.dropna(axis=1).to_numpy()
        rho_boot = []
        if complete.shape[1] >= 2:
            draws = np.random.default_rng(seed).integers(0, complete.shape[1], (min(n_boot, 400), complete.shape[1]))
            rho_boot = [_spearman(pred.to_numpy(), complete[:, d].mean(axis=1)) for d in draws]
        rho_lo, rho_hi = _percentiles(np.array([r for r in rho_boot if np.isfinite(r)]))
        sources = sorted(frame.loc[frame["predicted"].notna(), "source"].dropna().unique())
        rows.append({**dict(zip(GROUP_KEYS, group)), "held_out_by": " + ".join(sources) or None,
                     "windows": len(pred), "seeds": int(table.notna().all().sum()),
                     "pair_seeds": int((table.loc[pick].notna() & table.loc[best].notna()).sum()),
                     "pick": R.window_label(*pick), "pick_share_after_last_prune": _recovery_of(frame, pick),
                     "best": R.window_label(*best), "pick_rank": int(trained.rank(method="min")[pick]),
                     "spearman": _spearman(pred.to_numpy(), trained.to_numpy()), "spearman_low": rho_lo,
                     "spearman_high": rho_hi, "margin_abs": margin_abs, "regret": regret, "regret_se": se,
                     "regret_halfwidth": half, "paired": _against_margin(regret, half, margin_abs),
                     "boot_regret": median, "boot_low": lo, "boot_high": hi,
                     "bootstrap": _against_margin(median, (hi - lo) / 2, margin_abs)})
    return pd.DataFrame(rows)


def _recovery_of(frame: pd.DataFrame, window: tuple) -> float:
    runs = frame[np.isclose(frame["start"], window[0]) & np.isclose(frame["end"], window[1])]
    return float(runs["recovery_share"].mean()) if "recovery_share" in runs else math.nan


def schedule_rankings(runs: pd.DataFrame, fits: dict, margin: float = 0.005, n_boot: int = N_BOOT,
                      seed: int = 0, in_sample: bool = True) -> pd.DataFrame:
    """``ranking_quality`` for every law that can rank schedules, from predictions of windows
    its fit did not see (``held out``: ``heldout_predictions``) and, with ``in_sample``, from
    its own fit (``in sample``)."""
    frames = []
    for role in RANKING_ROLES:
        fit = fits.get(role)
        if fit is None or not R.fit_usable(fit):
            continue
        kinds = [("held out", *heldout_predictions(runs, fit, role))]
        if in_sample:
            kinds.insert(0, ("in sample", pd.Series(R.law_predictions(runs, fit, role).to_numpy(), index=runs["run_id"]),
                             None))
        for kind, predicted, source in kinds:
            quality = ranking_quality(runs, predicted, margin, n_boot, seed, source)
            if not quality.empty:
                frames.append(quality.assign(law=role, predictions=kind))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    return table[["law", "predictions", *[c for c in table.columns if c not in ("law", "predictions")]]]


def ranking_law(rankings: pd.DataFrame) -> str | None:
    """The law whose held-out picks have the smallest worst-group regret (then the largest
    worst-group rank correlation): the one the planner should rank with."""
    held = rankings[rankings["predictions"] == "held out"] if not rankings.empty else rankings
    if held.empty:
        return None
    score = held.groupby("law").agg(worst=("regret", "max"), rho=("spearman", "min"))
    return str(score.sort_values(["worst", "rho"], ascending=[True, False]).index[0])


def schedule_advice(runs: pd.DataFrame, fits: dict, margin: float = 0.005, n_boot: int = N_BOOT,
                    seed: int = 0) -> Claim:
    """Ours: the law the planner ranks with picks, among windows it was not fitted on, a
    window whose trained loss is within ``margin`` of the best trained window, in every
    schedule-grid group. The regret of its held-out pick is judged seed-paired and by the seed
    bootstrap; every ranking law's numbers are in ``detail``. The law is chosen by the same
    held-out regret it is judged by: with two candidate laws that selection is stated, not
    hidden."""
    claim = Claim("schedule_advice", "The fitted law picks a near-optimal schedule (held-out windows; ours)",
                  "paper A ranks schedules by training them; no law's advice is checked there",
                  f"{100 * margin:.2f}% of the best loss (the law's pick against the best trained window)", [])
    rankings = schedule_rankings(runs, fits, margin, n_boot, seed)
    claim.detail = rankings
    chosen = ranking_law(rankings)
    if chosen is None:
        reason = ("no leave-one-window-out predictions of an average_params or recovery fit for a schedule grid "
                  "of 3 or more windows")
        claim.analyses = [Analysis("held-out regret, seed-paired", NOT_TESTED, reason),
                          Analysis("held-out regret, seed bootstrap", NOT_TESTED, reason)]
        return claim
    held = rankings[rankings["predictions"] == "held out"]
    d = held[held["law"] == chosen].reset_index(drop=True)
    others = "; ".join(
        f"{R.LAW_NAMES.get(law, law)}: worst regret {g['regret'].max():.4f}, Spearman "
        + ", ".join(f"{r:.2f}" for r in g["spearman"])
        for law, g in held.groupby("law") if law != chosen)
    largest = d.loc[d["regret"].idxmax()]
    label = R.LAW_NAMES.get(chosen, chosen)
    claim.analyses.append(Analysis(
        "held-out regret, seed-paired", across_groups(d["paired"].tolist()),
        f"{label} (chosen by held-out regret): pick within the margin in {(d['paired'] == REPRODUCED).sum()}/{len(d)} "
        f"groups, clearly beyond in {(d['paired'] == NOT_REPRODUCED).sum()}; picks "
        + ", ".join(f"{r.pick} (best {r.best}, trained rank {r.pick_rank}/{r.windows})" for r in d.itertuples())
        + f"; largest regret {largest['regret']:.4f} nats (95% ± {largest['regret_halfwidth']:.4f}, "
        f"margin {largest['margin_abs']:.4f}); Spearman "
        + ", ".join(f"{r.spearman:.2f} [{r.spearman_low:.2f}, {r.spearman_high:.2f}]" for r in d.itertuples())
        + (f"; {others}" if others else ""),
        float(d["regret"].max()), (float((d["regret"] - d["regret_halfwidth"]).max()),
                                   float((d["regret"] + d["regret_halfwidth"]).max()))))
    claim.analyses.append(_seed_bootstrap_analysis(d, "held-out regret, seed bootstrap", "regret", "boot_regret",
                                                   "window"))
    return claim


# ---------------------------------------------------------------------------------------
# Paper A: one law in N-bar for dense and sparse runs
# ---------------------------------------------------------------------------------------


def _paired_ratio(err_a: np.ndarray, err_b: np.ndarray, n_boot: int, seed: int,
                  refit_errors: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float, float]:
    """MAE(a) / MAE(b) over the same runs and its 95% interval, resampling runs.

    ``refit_errors``: the same errors under each of the laws' bootstrap refits (refits x
    runs); each resample then also draws a refit, so the interval holds the laws' own
    uncertainty as well as the runs'."""
    err_a, err_b = np.abs(err_a), np.abs(err_b)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(err_a), (n_boot, len(err_a)))
    if refit_errors is None:
        boot_a, boot_b = err_a[pick], err_b[pick]
    else:
        refit = rng.integers(0, len(refit_errors[0]), (n_boot, 1))
        boot_a, boot_b = (np.abs(e)[refit, pick] for e in refit_errors)
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample can have zero final-N error
        ratios = boot_a.mean(axis=1) / boot_b.mean(axis=1)
    lo, hi = _percentiles(ratios)
    return float(err_a.mean() / err_b.mean()), lo, hi


def _ratio_analysis(name: str, mae_a: float, mae_b: float, ratio: tuple[float, float, float], rel: float,
                    extra: str = "") -> Analysis:
    """Decide 'MAE(N-bar) at least ``rel`` below MAE(final N)' from the ratio's interval."""
    value, lo, hi = ratio
    target = 1 - rel
    if not np.isfinite(hi) or not np.isfinite(lo):
        decision = UNDERPOWERED
    elif hi <= target:
        decision = REPRODUCED
    elif lo > target:
        decision = NOT_REPRODUCED
    else:
        decision = UNDERPOWERED
    numbers = (f"MAE N̄ {mae_a:.4f} vs final N {mae_b:.4f}, ratio {value:.2f} [95%: {lo:.2f}, {hi:.2f}] "
               f"against {target:.2f}{extra}")
    return Analysis(name, decision, numbers, value, (lo, hi))


def _dense_transfer(runs: pd.DataFrame, fits: dict, rel: float, n_boot: int, seed: int) -> Analysis:
    """(a) A law fitted on dense runs only predicts the sparse runs from N-bar, and from final N.

    The interval resamples the sparse runs and the dense law itself (its bootstrap refits):
    a law of 5 coefficients fitted on a handful of dense runs is far from exact, and an
    interval over the sparse runs alone would treat it as exact."""
    name = "dense-only law on sparse runs"
    dense, avg = fits.get("dense_only"), fits.get("average_params")
    if dense is None or avg is None:
        return Analysis(name, NOT_TESTED, "needs the dense_only and average_params fits")
    if not R.fit_usable(dense):
        return Analysis(name, UNDERPOWERED, "the dense-only fit is unusable: " + "; ".join(dense["status"]["reasons"]))
    sparse = R.select_fit_runs(runs, avg)
    sparse = sparse[sparse["method"].astype(str) != "dense"]
    if len(sparse) < 2:
        return Analysis(name, NOT_TESTED, f"{len(sparse)} sparse runs in the average_params fit's runs")
    d_col, loss_col = R.fit_columns(avg, "average_params")["d"], R.fit_columns(avg, "average_params")["loss"]
    obs = sparse[loss_col].to_numpy(float)
    refits = (dense.get("bootstrap") or {}).get("samples") or []

    def errors(params: dict) -> tuple[np.ndarray, np.ndarray]:
        return (R.chinchilla_predict(params, sparse["n_avg"], sparse[d_col]) - obs,
                R.chinchilla_predict(params, sparse["n_final"], sparse[d_col]) - obs)

    err_nbar, err_final = errors(dense["params"])
    refit_errors = np.array([errors(p) for p in refits]).reshape(len(refits), 2, len(obs))
    return _ratio_with_refits(name, err_nbar, err_final, refit_errors[:, 0], refit_errors[:, 1], "the dense-only law's",
                              rel, n_boot, seed,
                              f"; {len(sparse)} sparse runs, law fitted on {dense.get('n_points', '?')} dense runs")


def _ratio_with_refits(name: str, err_a: np.ndarray, err_b: np.ndarray, refit_a: np.ndarray, refit_b: np.ndarray,
                       whose: str, rel: float, n_boot: int, seed: int, extra: str) -> Analysis:
    """``_ratio_analysis`` whose interval also holds the laws' own uncertainty: ``refit_a``,
    ``refit_b`` are the errors under each bootstrap refit (refits x runs, refit i of both laws
    from the same resample). A refit that predicts an infinite or undefined loss has failed
    (as in ``plan``); at least 40 must be usable, as for any bootstrap interval."""
    finite = np.isfinite(refit_a).all(axis=1) & np.isfinite(refit_b).all(axis=1)
    mae_a, mae_b = float(np.abs(err_a).mean()), float(np.abs(err_b).mean())
    few = _too_few(int(finite.sum()))
    if few:  # the runs alone would give an interval, but not the laws' share of it
        return Analysis(name, UNDERPOWERED,
                        f"MAE N̄ {mae_a:.4f} vs final N {mae_b:.4f}, ratio {mae_a / mae_b:.2f}{extra}: "
                        f"{whose} own uncertainty has no interval: {few}", mae_a / mae_b)
    extra += f", interval over {finite.sum()} of {whose} bootstrap refits"
    if not finite.all():
        extra += f" ({(~finite).sum()} failed)"
    return _ratio_analysis(name, mae_a, mae_b,
                           _paired_ratio(err_a, err_b, n_boot, seed, (refit_a[finite], refit_b[finite])), rel, extra)


def _heldout_pair(fits: dict, kind: str, label: str, rel: float, n_boot: int, seed: int) -> Analysis:
    """(b, c) The N-bar and final-N laws, both fitted on dense + sparse runs, compared on the
    same held-out runs. Every leave-one-scale-out error comes from one fit per law,
    extrapolated to the largest scale, and the errors of a k-fold fold from one fit per law,
    so each interval also draws the held-out fits' bootstrap refits (as the dense-only
    transfer does)."""
    avg, fin = fits.get("average_params"), fits.get("final_params")
    if avg is None or fin is None:
        return Analysis(label, NOT_TESTED, "needs the average_params and final_params fits")
    unusable = [r for r, f in (("average_params", avg), ("final_params", fin)) if not R.fit_usable(f)]
    if unusable:
        return Analysis(label, UNDERPOWERED, "unusable fit: " + ", ".join(unusable))
    blocks = [((f.get("heldout") or {}).get(kind) or {}) for f in (avg, fin)]
    if any("skipped" in b for b in blocks):
        return Analysis(label, NOT_TESTED, next(b["skipped"] for b in blocks if "skipped" in b))
    if not all(b.get("predictions") for b in blocks):
        return Analysis(label, NOT_TESTED, "the fit JSONs hold no per-run held-out predictions")
    a, b = (pd.DataFrame(blk["predictions"]).set_index("run_id") for blk in blocks)
    shared = a.index.intersection(b.index)
    if len(shared) < 2:
        return Analysis(label, NOT_TESTED, "the two fits share fewer than 2 held-out runs")
    err_a = (a.loc[shared, "predicted"] - a.loc[shared, "observed"]).to_numpy(float)
    err_b = (b.loc[shared, "predicted"] - b.loc[shared, "observed"]).to_numpy(float)
    extra = f"; {len(shared)} held-out runs"
    if kind == "leave_one_scale_out":
        extra += f" of scale {blocks[0].get('held_out_scale')}"
    refit_a, refit_b = (_refit_errors(blk, shared) for blk in blocks)
    count = min(len(refit_a), len(refit_b))  # refit i of both fits comes from resample i
    return _ratio_with_refits(label, err_a, err_b, refit_a[:count], refit_b[:count], "the held-out fits'", rel,
                              n_boot, seed, extra)


def _refit_errors(block: dict, runs: pd.Index) -> np.ndarray:
    """A held-out block's refit errors on ``runs`` (refits x runs; NaN where a refit failed)."""
    predictions = pd.DataFrame(block["predictions"])
    predicted = [[math.nan] * len(predictions) if p is None else p
                 for p in (block.get("refits") or {}).get("predicted") or []]
    table = pd.DataFrame(np.array(predicted, dtype=float).reshape(-1, len(predictions)), columns=predictions["run_id"])
    return table[runs].to_numpy(float) - predictions.set_index("run_id").loc[runs, "observed"].to_numpy(float)


def average_params_law(runs: pd.DataFrame, fits: dict, rel: float = 0.10, n_boot: int = N_BOOT,
                       seed: int = 0) -> Claim:
    """Paper A: the Chinchilla law in N-bar describes dense and sparse runs at once, better
    than the same law in the final non-zero count. Three analyses, each a ratio of mean
    absolute errors with a bootstrap interval over runs: (a) a law fitted on dense runs only,
    predicting the sparse runs; (b) leave the largest scale out; (c) k-fold. Each interval
    also draws the refits of the fitted laws that made the predictions."""
    return Claim(
        "average_params", "N̄ law predicts held-out dense+sparse runs better than the final-N law (paper A)",
        f"one law fits dense and sparse; fit MAE ≈ {R.PAPER_A_MAE} (unverified)",
        f"N̄ MAE at least {100 * rel:.0f}% below final-N MAE (95% interval of the ratio below {1 - rel:.2f})",
        [_dense_transfer(runs, fits, rel, n_boot, seed),
         _heldout_pair(fits, "leave_one_scale_out", "leave one scale out", rel, n_boot, seed),
         _heldout_pair(fits, "kfold", "k-fold", rel, n_boot, seed)])


# ---------------------------------------------------------------------------------------
# Paper B: the optimal sparsity rises with training data
# ---------------------------------------------------------------------------------------


def sopt_change(params: dict, sizes: np.ndarray, centre_tokens: np.ndarray, span: float = 64.0,
                cost: str = "dense") -> np.ndarray:
    """S_opt at the top minus S_opt at the bottom of a ``span``-fold compute range centred on
    C = 6 N D (D = ``centre_tokens``) at each fixed non-zero size N."""
    centre = 6.0 * sizes * centre_tokens
    low, high = centre / math.sqrt(span), centre * math.sqrt(span)
    s_low, _ = R.optimal_sparsity(params, sizes, low, cost)
    s_high, _ = R.optimal_sparsity(params, sizes, high, cost)
    return s_high - s_low


def sopt_sizes(runs: pd.DataFrame, fit: dict) -> tuple[np.ndarray, np.ndarray]:
    """Up to three non-zero sizes N spanning the fit's runs, and the geometric-mean tokens of
    its runs: where the change in S_opt is read off."""
    cols = R.fit_columns(fit, "sparsity")
    sel = R.select_fit_runs(runs, fit)
    sizes = np.unique(np.round(sel[cols["n"]].dropna().astype(float), -1))
    sizes = sizes[np.linspace(0, len(sizes) - 1, min(len(sizes), 3)).astype(int)]
    tokens = float(np.exp(np.log(sel[cols["d"]].astype(float)).mean()))
    return sizes, np.full(len(sizes), tokens)


def sopt_trend(runs: pd.DataFrame, fit: dict, span: float = 64.0, n_points: int = 9,
               cost: str = "dense") -> pd.DataFrame:
    """S_opt and the tokens at the optimum over the claim's compute range at its sizes."""
    sizes, tokens = sopt_sizes(runs, fit)
    rows = []
    for n, d in zip(sizes, tokens):
        compute = 6.0 * n * d * np.geomspace(1 / math.sqrt(span), math.sqrt(span), n_points)
        s_opt, d_opt = R.optimal_sparsity(fit["params"], np.full_like(compute, n), compute, cost)
        rows += [{"n_nonzero": float(n), "compute": float(c), "tokens_at_opt": float(t), "s_opt": float(s)}
                 for c, s, t in zip(compute, s_opt, d_opt)]
    return pd.DataFrame(rows)


def optimal_sparsity_rises(runs: pd.DataFrame, fits: dict, min_change: float = 0.05, span: float = 64.0,
                           cost: str = "dense") -> Claim:
    """Paper B: at fixed non-zero N, the S that minimises the fitted L(S, N, D) at fixed
    training compute rises with compute (with data) by more than ``min_change`` over a
    ``span``-fold compute range, at every N. Analyses: the fitted law's change, and the 95%
    bootstrap interval of the change (the fit's bootstrap refits)."""
    claim = Claim("optimal_sparsity", "Optimal sparsity rises with training data at fixed non-zero params (paper B)",
                  "rises (T5/C4: b_S 0.722, b_N 0.245, b_D 0.203)",
                  f"S_opt change > {min_change:g} across {span:g}x compute, at every N", [])
    fit = fits.get("sparsity")
    names = ("fitted law", "bootstrap interval")
    if fit is None or runs.empty:
        claim.analyses = [Analysis(n, NOT_TESTED, "no sparsity-law fit") for n in names]
        return claim
    if not R.fit_usable(fit):
        reason = "the sparsity-law fit is unusable: " + "; ".join(fit["status"]["reasons"])
        claim.analyses = [Analysis(n, UNDERPOWERED, reason) for n in names]
        return claim
    sizes, tokens = sopt_sizes(runs, fit)
    point = sopt_change(fit["params"], sizes, tokens, span, cost)
    samples = (fit.get("bootstrap") or {}).get("samples") or []
    boot = np.array([sopt_change(p, sizes, tokens, span, cost) for p in samples]).reshape(-1, len(sizes))
    intervals = [_percentiles(boot[:, i]) for i in range(len(sizes))]
    claim.detail = pd.DataFrame({"n_nonzero": sizes, "centre_tokens": tokens, "change": point,
                                 "change_low": [i[0] for i in intervals], "change_high": [i[1] for i in intervals]})
    at = ", ".join(f"N={n:.3g}: {c:+.2f}" for n, c in zip(sizes, point))
    claim.analyses.append(Analysis(names[0], REPRODUCED if np.all(point > min_change) else NOT_REPRODUCED,
                                   f"change at {at}", float(point.min())))
    if len(samples) == 0:
        claim.analyses.append(Analysis(names[1], NOT_TESTED, "the fit JSON holds no bootstrap refits"))
        return claim
    lows, highs = np.array([i[0] for i in intervals]), np.array([i[1] for i in intervals])
    few = _too_few_refits(fit)
    if few:
        decision = UNDERPOWERED
    elif np.all(lows > min_change):
        decision = REPRODUCED
    elif np.any(highs <= min_change):
        decision = NOT_REPRODUCED
    else:
        decision = UNDERPOWERED
    claim.analyses.append(Analysis(
        names[1], decision,
        ", ".join(f"N={n:.3g}: [{lo:+.2f}, {hi:+.2f}]" for n, lo, hi in zip(sizes, lows, highs))
        + f" ({len(boot)} refits)" + (f": {few}" if few else ""), float(lows.min()),
        (float(lows.min()), float(highs.max()))))
    return claim


# ---------------------------------------------------------------------------------------
# The synthetic corpus: the fitted irreducible loss is its entropy rate
# ---------------------------------------------------------------------------------------


def synthetic_corpus(fit: dict, entropies: dict[str, float], runs: pd.DataFrame | None = None) -> str:
    """The corpus (with a known entropy rate) that the synthetic fit was made on."""
    if runs is not None and fit.get("query"):
        corpora = [c for c in R.select_fit_runs(runs, fit)["corpus"].unique() if c in entropies]
        if corpora:
            return corpora[0]
    return next(iter(entropies))


def entropy_matches(runs: pd.DataFrame, fits: dict, entropies: dict[str, float], tol: float = 0.05) -> Claim:
    """The Chinchilla fit on the synthetic language puts its irreducible loss E within ``tol``
    of the language's exact entropy rate H, and closer to H than its best run (so the law
    extrapolates). One analysis: the fitted E against H, decided against the band with its
    bootstrap interval's half-width as the error (underpowered where that is wider)."""
    claim = Claim("entropy", "Fitted irreducible loss E matches the synthetic corpus's entropy rate",
                  "E is the data's entropy (Chinchilla reading); no published number",
                  f"abs(E − H) / H ≤ {100 * tol:.0f}%, and E closer to H than the best run", [])
    name = "fitted E against H"
    fit = fits.get("synthetic")
    if fit is None or not entropies:
        claim.analyses = [Analysis(name, NOT_TESTED, "missing: " + ("synthetic fit" if fit is None else
                                                                      "an entropy rate in the data manifests"))]
        return claim
    if not R.fit_usable(fit):
        claim.analyses = [Analysis(name, UNDERPOWERED, "the synthetic fit is unusable: "
                                   + "; ".join(fit["status"]["reasons"]))]
        return claim
    corpus = synthetic_corpus(fit, entropies, runs)
    H, E = entropies[corpus], R.get_param(fit["params"], "E")
    rel = (E - H) / H
    ci = (fit.get("ci") or {}).get("E")
    numbers = f"E = {E:.4f} nats vs H = {H:.4f} nats ({corpus}): {100 * rel:+.1f}%"
    if ci:
        numbers += f"; E 95% CI [{ci[0]:.3f}, {ci[1]:.3f}]"
    best_run = math.nan
    sel = R.select_fit_runs(runs, fit) if fit.get("query") else pd.DataFrame()
    if not sel.empty:
        best_run = float(sel[R.fit_columns(fit, "synthetic")["loss"]].min())
        numbers += f"; best run {best_run:.4f} ({100 * (best_run - H) / H:+.1f}%)"
    band = tol * H
    half_width = (ci[1] - ci[0]) / 2 if ci else math.nan
    few = _too_few_refits(fit)
    if abs(rel) <= tol and np.isfinite(best_run) and abs(E - H) >= abs(best_run - H):
        decision = UNDERPOWERED
        numbers += ": the fit is no closer to H than the best run, so the law adds nothing over the runs"
    elif ci and few:
        decision = UNDERPOWERED
        numbers += f": {few}"
    else:
        # like every other analysis: an error (the interval's half-width) wider than the margin decides nothing
        decision = _against_margin(abs(E - H), half_width, band)
        if decision == UNDERPOWERED and not ci:
            numbers += ": no bootstrap interval of E, so no error to judge it with"
        elif decision == UNDERPOWERED and half_width > band:
            numbers += f": the interval's half-width {half_width:.3f} nats is wider than the ±{band:.3f}-nat band"
        elif decision == UNDERPOWERED:
            numbers += f": E is {100 * abs(rel):.1f}% from H, within its interval of the band"
    claim.analyses = [Analysis(name, decision, numbers, rel, tuple(ci) if ci else (math.nan, math.nan))]
    return claim


# ---------------------------------------------------------------------------------------
# All four
# ---------------------------------------------------------------------------------------


def all_claims(runs: pd.DataFrame, fits: dict, entropies: dict[str, float], prune_margin: float = 0.005,
               unification_rel: float = 0.10, min_sopt_change: float = 0.05, entropy_tolerance: float = 0.05,
               sparse_cost: str = "dense") -> list[Claim]:
    return [when_to_prune(runs, prune_margin),
            average_params_law(runs, fits, unification_rel),
            optimal_sparsity_rises(runs, fits, min_sopt_change, cost=sparse_cost),
            entropy_matches(runs, fits, entropies, entropy_tolerance)]


def verdict_table(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([c.row() for c in claims])


def analysis_table(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([row for c in claims for row in c.analysis_rows()])
