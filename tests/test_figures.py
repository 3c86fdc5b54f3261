"""The analysis behind the figures and verdicts: paired schedule comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparsescale import figures as F

WINDOWS = [(0.0, 0.75), (0.25, 0.75), (0.5, 0.75), (0.0, 1.0)]


def grid_runs(true_loss: dict, seeds: int, seed_sd: float, pair_sd: float, rng_seed: int = 0) -> pd.DataFrame:
    """Global geometric runs of one group: loss = schedule effect + a shared per-seed offset
    (same init and batches for every schedule of a seed) + a small per-run residual."""
    rng = np.random.default_rng(rng_seed)
    offsets = rng.normal(0, seed_sd, seeds)
    rows = []
    for (start, end), loss in true_loss.items():
        for seed in range(seeds):
            rows.append({"corpus": "c", "budget": "b", "scale": "s1", "target_sparsity": 0.8, "method": "global",
                         "shape": "geometric", "start": start, "end": end, "seed": seed,
                         "final_val_loss": loss + offsets[seed] + rng.normal(0, pair_sd)})
    return pd.DataFrame(rows)


def test_paired_gap_sees_through_seed_to_seed_spread():
    """Seeds differ by ~0.1 nats, schedules by 0.05: pairing by seed still calls 25%-75% clearly worse."""
    true = dict(zip(WINDOWS, [5.00, 5.05, 5.02, 5.08]))
    runs = grid_runs(true, seeds=4, seed_sd=0.1, pair_sd=0.002)
    row = F.claim_25_75(runs, margin=0.002).iloc[0]
    assert row["best_schedule"] == F.window_label(0.0, 0.75)
    assert row["gap"] == pytest.approx(0.05, abs=0.006)
    assert row["gap_se"] < 0.004 < row["seed_std"]  # the pooled paired scatter, not the seed spread
    assert row["within"] == False  # noqa: E712 and row["rank"] == 3
    assert F.verdict_when_to_prune(runs, margin=0.002)["verdict"] == F.NOT_REPRODUCED


def test_paired_gap_inside_the_margin_and_unclear_cases():
    true = dict(zip(WINDOWS, [5.00, 5.004, 5.02, 5.08]))
    runs = grid_runs(true, seeds=3, seed_sd=0.1, pair_sd=0.001)
    row = F.claim_25_75(runs, margin=0.002).iloc[0]
    assert row["within"] == True and row["gap"] <= row["margin_abs"]  # noqa: E712
    assert F.verdict_when_to_prune(runs, margin=0.002)["verdict"] == F.REPRODUCED
    # beyond the margin on average, but the seeds disagree (gaps 0.00 and 0.06): neither verdict
    per_seed = {(0.0, 0.75): [5.00, 5.00], (0.25, 0.75): [5.00, 5.06], (0.5, 0.75): [5.05, 5.05]}
    noisy = pd.DataFrame([{"corpus": "c", "budget": "b", "scale": "s1", "target_sparsity": 0.5, "method": "global",
                           "shape": "geometric", "start": st, "end": en, "seed": seed, "final_val_loss": loss}
                          for (st, en), losses in per_seed.items() for seed, loss in enumerate(losses)])
    row = F.claim_25_75(noisy, margin=0.002).iloc[0]
    assert row["gap"] == pytest.approx(0.03) and row["gap_se"] > 0.01
    assert row["margin_abs"] < row["gap"] < row["margin_abs"] + 2 * row["gap_se"] and row["within"] is None
    assert F.verdict_when_to_prune(noisy, margin=0.002)["verdict"] == F.INCONCLUSIVE


def test_one_seed_beyond_the_margin_counts_as_worse():
    runs = grid_runs(dict(zip(WINDOWS, [5.00, 5.05, 5.02, 5.08])), seeds=1, seed_sd=0.0, pair_sd=0.0)
    row = F.claim_25_75(runs, margin=0.002).iloc[0]
    assert np.isnan(row["gap_se"]) and row["within"] == False  # noqa: E712 and row["gap"] == pytest.approx(0.05)


@pytest.mark.parametrize(
    "E,best_run,verdict",
    [(1.95, 2.00, F.REPRODUCED),  # within 5% and closer to H than any run
     (1.97, 1.95, F.INCONCLUSIVE),  # within 5%, but a run is already closer: the law added nothing
     (1.50, 2.00, F.NOT_REPRODUCED)],
)
def test_entropy_verdict_needs_the_law_to_extrapolate(E, best_run, verdict):
    H = 1.92
    runs = pd.DataFrame({"corpus": ["syn", "syn", "text"], "final_val_loss": [best_run + 0.1, best_run, 1.0]})
    fit = {"query": "corpus == 'syn'", "law": "chinchilla", "params": {"E": E, "A": 1, "B": 1, "alpha": 1, "beta": 1},
           "ci": {"E": [E - 0.01, E + 0.01]}}
    got = F.verdict_entropy({"synthetic": fit}, {"syn": H}, runs)
    assert got["verdict"] == verdict
    assert f"best run {best_run:.4f}" in got["ours"]
