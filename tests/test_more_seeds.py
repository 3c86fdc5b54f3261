"""`sparsescale more-seeds`: the seeds an underpowered when-to-prune group still needs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sparsescale.cli import main
from sparsescale.more_seeds import plan

WINDOWS = {"g-s50-0to75": (0.0, 0.75), "g-s50-25to75": (0.25, 0.75), "g-s50-50to100": (0.5, 1.0)}


def _group(scale="s1", seeds=(10, 11, 12)) -> dict:
    return {"experiment": "grid", "corpus": "c", "scale": scale, "budget": "b", "final_sparsity": 0.5,
            "schedules": list(WINDOWS), "seeds": list(seeds)}


def _runs(gaps: list[float], scale="s1") -> pd.DataFrame:
    """One group at three seeds: the best window at 5.0 + 0.1 x seed (a shared seed offset),
    25%->75% above it by ``gaps[seed]``, 50%->100% 0.2 above it."""
    rows = []
    for name, (start, end) in WINDOWS.items():
        for seed, gap in enumerate(gaps):
            loss = 5.0 + 0.1 * seed + {"g-s50-0to75": 0.0, "g-s50-25to75": gap, "g-s50-50to100": 0.2}[name]
            rows.append({"run_id": f"c/{scale}/b/{name}/seed{seed}", "corpus": "c", "scale": scale, "budget": "b",
                         "schedule": name, "seed": seed, "method": "global", "shape": "geometric",
                         "target_sparsity": 0.5, "start": start, "end": end, "final_val_loss": loss})
    return pd.DataFrame(rows)


def test_a_group_short_of_the_target_gets_the_next_seeds_of_every_schedule():
    """Per-seed gaps 0.02, 0.03, 0.04 (scatter 0.01) against a target s.e. of 0.5% x 5.1 / 3
    = 0.0085: (0.01 / 0.0085)^2 = 1.38, so 3 seeds already do. With a scatter of 0.02 it is
    5.5: 6 seeds, 3 more."""
    assert plan(_runs([0.02, 0.03, 0.04]), [_group()])["runs"] == []
    result = plan(_runs([0.00, 0.02, 0.04]), [_group()])
    decided = result["groups"][0]
    assert decided["seeds"] == 3 and decided["seeds_needed"] == 6
    assert decided["target_se"] == pytest.approx(0.005 * 5.1 / 3)
    assert decided["seeds_added"] == [10, 11, 12] and not decided["short_of_target"]
    assert {(r["schedule"], r["seed"]) for r in result["runs"]} == {(s, n) for s in WINDOWS for n in (10, 11, 12)}
    assert all(r["corpus"] == "c" and r["scale"] == "s1" and r["budget"] == "b" for r in result["runs"])


def test_seeds_run_out_before_the_target_and_say_so():
    result = plan(_runs([0.00, 0.06, 0.12]), [_group(seeds=(7,))])
    decided = result["groups"][0]
    assert decided["seeds_needed"] > 4 and decided["seeds_added"] == [7] and decided["short_of_target"]
    assert len(result["runs"]) == len(WINDOWS)


def test_groups_without_a_scatter_add_nothing_and_say_why():
    one_seed = _runs([0.0, 0.5, 1.0], scale="s2").query("seed == 0")
    result = plan(pd.concat([_runs([0.02, 0.03, 0.04]), one_seed]), [_group(), _group("s2"), _group("s9")])
    assert result["runs"] == []
    assert [g.get("why") for g in result["groups"]] == [
        None, "one seed: no scatter to size it from", "no when-to-prune analysis of this group"]


def _write_metrics(root, runs: pd.DataFrame) -> list[str]:
    paths = []
    for row in runs.to_dict("records"):
        run_dir = root / row["run_id"]
        run_dir.mkdir(parents=True)
        metrics = {**row, "n_final": 1e5, "n_avg": 1e5, "tokens": 4e5, "compute": 2.4e11}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        pd.DataFrame({"step": [1], "val_loss": [row["final_val_loss"]]}).to_parquet(run_dir / "steps.parquet")
        paths.append(str(run_dir / "metrics.json"))
    return paths


def test_the_command_writes_the_plan_of_the_runs_it_read(tmp_path, capsys):
    runs = _runs([0.00, 0.02, 0.04])
    metrics = _write_metrics(tmp_path / "runs", runs)
    out = tmp_path / "design" / "more-seeds.json"
    assert main(["more-seeds", "--groups", json.dumps([_group()]), "--metrics", *metrics, "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(plan(runs, [_group()])))
    assert main(["more-seeds", "--groups", "{not json", "--metrics", *metrics, "--out", str(out)]) == 2
    assert "--groups: not valid JSON" in capsys.readouterr().err
