"""``sparsescale fit``: the JSON contract, column options, drops, bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from sparsescale.io import InputError
from sparsescale.laws.cli import add_commands
from sparsescale.laws.synthetic import runs_table

CHIN_TRUE = {"E": 1.8, "A": 400.0, "B": 1000.0, "alpha": 0.34, "beta": 0.30}


def run(argv):
    parser = argparse.ArgumentParser(prog="sparsescale")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_import_is_light():
    code = "import sys, sparsescale.laws.cli; print('scipy' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_fit_without_workers_where_there_is_no_affinity_mask(tmp_path, monkeypatch):
    """macOS and Windows have no ``os.sched_getaffinity``: the default ``--workers`` falls back
    to the CPU count, and the fit is the one a single worker gives."""
    import os

    frame = runs_table("average-params", CHIN_TRUE, seed=0)
    data = tmp_path / "runs.csv"
    frame.to_csv(data, index=False)
    common = ["fit", "--law", "average-params", "--data", str(data), "--bootstrap", "4", "--kfold", "0",
              "--n-refine", "8"]
    assert run([*common, "--workers", "1", "--out", str(tmp_path / "one.json")]) == 0
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert run([*common, "--out", str(tmp_path / "default.json")]) == 0
    one, default = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "default"))
    assert default["params"] == one["params"] and default["ci"] == one["ci"]


def test_fit_average_params_csv(tmp_path):
    frame = runs_table("average-params", CHIN_TRUE, seed=0)
    data = tmp_path / "runs.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "fits" / "avg.json"
    rc = run(["fit", "--law", "average-params", "--data", str(data), "--out", str(out),
              "--bootstrap", "10", "--heldout-refits", "10", "--kfold", "3", "--seed", "1", "--n-refine", "16",
              "--drop-highest-loss", "1", "--min-n", "3e6"])
    assert rc == 0
    fit = json.loads(out.read_text())
    for key in ("law", "params", "fit_loss", "n_points", "ci", "heldout", "columns", "query",
                "dropped", "winning_start", "units", "derived"):
        assert key in fit, key
    assert fit["law"] == "average-params" and fit["columns"]["N"] == "n_avg"
    assert set(fit["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert set(fit["ci"]) == set(fit["params"]) and all(len(v) == 2 for v in fit["ci"].values())
    small = int((frame["n_avg"] < 3e6).sum())
    assert len(fit["dropped"]) == small + 1 and fit["n_points"] == len(frame) - small - 1
    assert fit["heldout"]["kfold"]["k"] == 3 and fit["heldout"]["kfold"]["mae"] > 0
    loso = fit["heldout"]["leave_one_scale_out"]
    assert loso["held_out_scale"] == "s4"
    # --heldout-refits refits the held-out fits: each refit's predictions for the held-out runs
    for held in (loso, fit["heldout"]["kfold"]):
        assert held["refits"]["n_boot"] == 10 and len(held["refits"]["predicted"]) == 10
        assert all(p is None or len(p) == len(held["predictions"]) for p in held["refits"]["predicted"])
    rows = fit["derived"]["compute_optimal"]
    assert len(rows) == 4 and all(r["n_opt"] > 0 and r["d_opt"] > 0 for r in rows)
    assert "G" in fit["derived"]["ci"]
    samples = fit["bootstrap"]["samples"]  # the refits, for intervals on any later prediction
    assert len(samples) == 10 - fit["bootstrap"]["n_failed"] and set(samples[0]) == set(fit["params"])
    lo, hi = fit["ci"]["alpha"]
    assert lo <= sorted(s["alpha"] for s in samples)[len(samples) // 2] <= hi
    (n_lo, n_hi), (d_lo, d_hi) = fit["data_range"]["N"], fit["data_range"]["D"]
    assert 3e6 <= n_lo < n_hi == frame["n_avg"].max() and frame["tokens"].min() <= d_lo < d_hi <= frame["tokens"].max()
    assert abs(fit["params"]["alpha"] - CHIN_TRUE["alpha"]) < 0.08
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, no temp left


def test_fit_chinchilla_query_and_columns(tmp_path):
    frame = runs_table("chinchilla", CHIN_TRUE, seed=2).rename(
        columns={"n_final": "params", "tokens": "toks", "final_val_loss": "loss"})
    data = tmp_path / "runs.parquet"
    frame.to_parquet(data, index=False)
    out = tmp_path / "fit.json"
    run(["fit", "--law", "chinchilla", "--data", str(data), "--out", str(out), "--n-col", "params",
         "--d-col", "toks", "--loss-col", "loss", "--query", "method == 'dense'",
         "--bootstrap", "0", "--kfold", "0", "--n-refine", "16", "--compute", "1e16", "1e18"])
    fit = json.loads(out.read_text())
    assert fit["query"] == "method == 'dense'" and fit["n_points"] == int((frame["method"] == "dense").sum())
    assert fit["columns"] == {"N": "params", "D": "toks", "loss": "loss", "scale": "scale"}
    assert fit["ci"] == {} and fit["heldout"]["kfold"] is None
    assert [r["compute"] for r in fit["derived"]["compute_optimal"]] == [1e16, 1e18]


def test_fit_sparsity(tmp_path):
    frame = runs_table("sparsity", seed=3)
    data = tmp_path / "runs.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "sp.json"
    run(["fit", "--law", "sparsity", "--data", str(data), "--out", str(out), "--bootstrap", "5",
         "--kfold", "3", "--starts", "10"])
    fit = json.loads(out.read_text())
    # the fit's own refits, but by default none of its held-out fits
    assert len(fit["bootstrap"]["samples"]) == 5 - fit["bootstrap"]["n_failed"]
    assert fit["heldout"]["kfold"]["predictions"] and not any("refits" in b for b in fit["heldout"].values())
    assert set(fit["params"]) == {"a_S", "b_S", "c_S", "b_N", "a_D", "b_D", "c"}
    assert fit["columns"]["S"] == "sparsity" and fit["units"]["a_D"] == "tokens"
    opt = fit["derived"]["optimal_sparsity"]
    assert len(opt) == 9 and all(0 <= r["s_opt"] <= 0.99 for r in opt)
    assert "definition" in fit["derived"]
    assert abs(fit["params"]["b_N"] - 0.3) < 0.06
    json.dumps(fit, allow_nan=False)  # standard JSON


@pytest.mark.parametrize("mutate,argv,pattern", [
    (lambda f: f.drop(columns=["tokens"]), [], "tokens"),
    (lambda f: f.assign(final_val_loss=np.where(f.index == 7, np.nan, f.final_val_loss)), [], "row 7"),
    (lambda f: f, ["--query", "not_a_column > 1"], "--query"),
    (lambda f: f, ["--query", "n_final < 0"], "no rows"),
    (lambda f: f.head(3), [], "3 data points"),
    (lambda f: f, ["--heldout-refits", "-1"], "--heldout-refits must be 0 or more, got -1"),
    (lambda f: f.assign(sparsity=np.where(f.index == 2, 1.0, f.sparsity)), ["--law", "sparsity"], "row 2"),
])
def test_cli_bad_input(tmp_path, mutate, argv, pattern):
    data = tmp_path / "runs.csv"
    mutate(runs_table("chinchilla", CHIN_TRUE, seed=0)).to_csv(data, index=False)
    out = tmp_path / "fit.json"
    law = [] if "--law" in argv else ["--law", "chinchilla"]
    with pytest.raises(InputError, match=pattern):
        run(["fit", *law, "--data", str(data), "--out", str(out), "--bootstrap", "0", "--kfold", "0",
             "--n-refine", "4", *argv])
    assert not out.exists()


def test_cli_missing_file_and_format(tmp_path):
    with pytest.raises(InputError, match="not found"):
        run(["fit", "--law", "chinchilla", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.json")])
    bad = tmp_path / "runs.xlsx"
    bad.write_text("x")
    with pytest.raises(InputError, match="unsupported"):
        run(["fit", "--law", "chinchilla", "--data", str(bad), "--out", str(tmp_path / "o.json")])
