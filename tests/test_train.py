"""The training loop: outputs per the contract, exact sparsity, resume after SIGKILL, divergence."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sparsescale.checkpoint import load_verified
from sparsescale.io import InputError, sha256_file
from sparsescale.train import TrainingDiverged, lr_at, run_training, validate_spec

torch.set_num_threads(1)

VOCAB = 64
VAL_TOKENS = 4_000
STEP_COLUMNS = ["step", "tokens", "lr", "train_loss", "val_loss", "density", "n_nonzero", "compute", "n_avg"]


def write_shards(path: Path, vocab: int = VOCAB, n_train: int = 60_000, n_val: int = VAL_TOKENS, seed: int = 0) -> Path:
    """A learnable token stream (order-1 Markov, 3 successors per token) as shards + manifest."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    successors = rng.integers(1, vocab, size=(vocab, 3))
    for split, n in (("train", n_train), ("val", n_val)):
        picks = rng.integers(0, 3, size=n)
        out = np.empty(n, dtype=np.uint16)
        tok = 1
        for i in range(n):
            tok = successors[tok, picks[i]]
            out[i] = tok
        out.tofile(path / f"{split}.bin")
    manifest = {
        "source": {"kind": "test"}, "tokenizer_sha256": "", "vocab_size": vocab, "eot_id": 0, "dtype": "uint16",
        "tokens": {"train": n_train, "val": n_val},
        "sha256": {f"{s}.bin": sha256_file(path / f"{s}.bin") for s in ("train", "val")},
        "entropy_rate_nats": None,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("data") / "tokens")


def make_spec(method: str = "global", tokens: int = 24_576, **over) -> dict:
    pruning = {"method": "dense"}
    if method != "dense":
        pruning = {
            "method": method, "shape": "geometric", "final_sparsity": 0.5, "start": 0.25, "end": 0.75,
            "basis": "compute", "every": 5, "n": None, "m": None, "embedding_sparsity": "none", "init": "scratch",
        }
    spec = {
        "run_id": f"test/s0/b/{method}/seed0", "corpus": "test", "scale": "s0", "budget": "b", "schedule": method,
        "seed": 0,
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64},
        "budget_spec": {"tokens": tokens},
        "pruning": pruning,
        "training": {
            "seq_len": 32, "batch_size": 8, "lr": 0.01, "warmup_fraction": 0.1, "min_lr_fraction": 0.1,
            "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8, "grad_clip": 1.0, "eval_every": 20,
            "eval_windows": 8, "checkpoint_every": 20, "log_every": 50, "compile": False, "device": "cpu", "threads": 1,
        },
    }
    for key, value in over.items():
        if key in spec["pruning"] and method != "dense":
            spec["pruning"][key] = value
        elif key in spec["training"]:
            spec["training"][key] = value
        else:
            spec[key] = value
    return spec


# ----------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    "mutate,key",
    [
        (lambda s: s.pop("model"), "model"),
        (lambda s: s["model"].pop("d_ff"), "d_ff"),
        (lambda s: s["training"].update(batch_size=0), "batch_size"),
        (lambda s: s["training"].update(lr_typo=1), "lr_typo"),
        (lambda s: s["pruning"].update(method="magic"), "method"),
        (lambda s: s["pruning"].pop("final_sparsity"), "final_sparsity"),
        (lambda s: s["pruning"].update(end=0.1), "end"),
        (lambda s: s["pruning"].update(method="nm", n=4, m=2), "n/m"),
        (lambda s: s.update(budget_spec={"tokens": 1, "tokens_per_param": 2}), "budget_spec"),
        (lambda s: s["model"].update(n_heads=3), "n_heads"),
        (lambda s: s["training"].update(peak_flops=0), "peak_flops"),
        (lambda s: s["training"].update(seq_len=32.0), "seq_len"),  # a JSON integer, not a float
        (lambda s: s["training"].update(lr=float("nan")), "lr"),
        (lambda s: s.update(seed=True), "seed"),
        (lambda s: s["pruning"].update(shape=None), "shape"),  # null only in a dense run's resolved spec
        (lambda s: (s["pruning"].pop("end"), s["pruning"].update(duration=0.9)), "duration"),
        (lambda s: s["training"].update(final_eval_tokens=5), "final_eval_tokens"),
    ],
)
def test_spec_errors_name_the_key(mutate, key):
    spec = make_spec()
    mutate(spec)
    with pytest.raises(InputError, match=key.replace("/", ".")):
        validate_spec(spec)


def test_spec_schema_names_what_the_pruner_knows():
    from sparsescale.pruning import BASES, EMBEDDING_SPARSITY, METHODS, SHAPES
    from sparsescale.run_spec import load_schema

    pruning = load_schema()["properties"]["pruning"]["properties"]
    assert pruning["method"]["enum"] == list(METHODS)
    assert [v for v in pruning["shape"]["enum"] if v] == list(SHAPES)
    assert [v for v in pruning["basis"]["enum"] if v] == list(BASES)
    assert pruning["embedding_sparsity"]["enum"] == list(EMBEDDING_SPARSITY)


def test_spec_defaults_and_nm():
    spec = make_spec("nm", n=2, m=4, final_sparsity=None)
    del spec["training"]["eps"]
    out = validate_spec(spec)
    assert out["pruning"]["final_sparsity"] == 0.5 and out["training"]["eps"] == 1e-8
    assert spec["training"].get("eps") is None  # input not mutated


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10, 0.1) == pytest.approx(0.55)
    assert lr_at(99, 100, 1.0, 10, 0.1) == pytest.approx(0.1, abs=1e-3)


# ----------------------------------------------------------------------------- runs


def test_global_run_outputs(shards, tmp_path):
    spec = make_spec("global", tokens=24_000)  # not a multiple of 256 tokens per step
    m = run_training(spec, shards, tmp_path)
    steps_n = math.ceil(24_000 / 256)
    frame = pd.read_parquet(tmp_path / "steps.parquet")
    assert list(frame.columns) == STEP_COLUMNS
    assert len(frame) == steps_n and frame["step"].tolist() == list(range(1, steps_n + 1))
    assert (frame["tokens"] == frame["step"] * 256).all()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "run_id corpus scale budget schedule seed method shape target_sparsity start end final_val_loss n_prunable "
        "n_final n_avg n_embedding n_total tokens compute sparsity mean_density epochs wall_time_s tokens_per_s device "
        "sparsity_per_layer spec versions provenance"
    ).split():
        assert key in on_disk, key
    n = m["n_prunable"]
    assert n == 4 * 32 * 32 + 3 * 32 * 64 + 32 * VOCAB
    assert abs(m["sparsity"] * n - 0.5 * n) <= 1 and m["n_final"] == n - round(0.5 * n)
    assert m["tokens"] == steps_n * 256 and m["steps"] == steps_n
    # compute and N_avg from the per-step non-zero counts
    expected_c = 6.0 * np.cumsum(frame["n_nonzero"].to_numpy() * 256.0)
    assert np.allclose(frame["compute"], expected_c)
    assert np.allclose(frame["n_avg"], expected_c / (6 * frame["tokens"]))
    assert m["compute"] == pytest.approx(expected_c[-1]) and m["n_avg"] == pytest.approx(frame["n_avg"].iloc[-1])
    assert (frame["density"] == frame["n_nonzero"] / n).all()
    assert frame["density"].iloc[0] == 1.0 and frame["n_nonzero"].is_monotonic_decreasing
    # val loss only at eval steps and the last one
    evals = frame.loc[frame["val_loss"].notna(), "step"].tolist()
    assert evals == [20, 40, 60, 80, steps_n]
    # the final loss is measured on every window of the validation split, with its standard error
    seq_len = m["spec"]["training"]["seq_len"]
    assert m["final_val_tokens"] == (VAL_TOKENS // (seq_len + 1)) * seq_len
    assert m["final_val_loss"] < math.log(VOCAB) and abs(m["final_val_loss"] - frame["val_loss"].iloc[-1]) < 0.2
    assert 0 < m["final_val_loss_se"] < 0.05 and 0 < m["final_val_loss_se_window"] < 0.2
    assert m["epochs"] == pytest.approx(steps_n * 256 / 60_000)
    # compute-basis schedule: pruning starts near 25% of compute
    c = frame["compute"].to_numpy()
    start = m["start_step"]
    assert abs(c[start - 1] / c[-1] - 0.25) < 0.03
    assert not (tmp_path / "checkpoint.pt").exists()
    saved = load_verified(tmp_path / "model.pt", "")
    assert set(saved) >= {"model", "masks", "model_config", "spec"}
    assert validate_spec(json.loads((tmp_path / "config.json").read_text())) == m["spec"]


@pytest.mark.parametrize(
    "method,extra",
    [
        ("uniform", {"shape": "cubic", "basis": "steps", "embedding_sparsity": "sqrt", "final_sparsity": 0.8}),
        ("nm", {"n": 1, "m": 4, "final_sparsity": None, "end": 1.0}),
        ("global", {"final_sparsity": 0.9, "start": 0.0, "end": 0.0}),
    ],
)
def test_exact_final_sparsity_per_method(shards, tmp_path, method, extra):
    spec = make_spec(method, tokens=8_192, **extra)
    m = run_training(spec, shards, tmp_path)
    target = m["target_sparsity"]
    per_layer = m["sparsity_per_layer"]
    model = load_verified(tmp_path / "model.pt", "")
    if method == "uniform":
        se = 1 - math.sqrt(1 - target)
        for name, s in per_layer.items():
            numel = model["model"][name].numel()
            want = se if name in ("tok_emb.weight", "lm_head.weight") else target
            assert abs(s * numel - want * numel) <= 1, name
    elif method == "nm":
        assert target == 0.75
        for name, mk in model["masks"].items():
            assert bool((mk.view(mk.shape[0], -1, 4).sum(-1) == 1).all()), name
            assert (model["model"][name][~mk] == 0).all()
    else:
        assert abs(m["sparsity"] - 0.9) * m["n_prunable"] <= 1
        assert abs(m["mean_density"] - 0.1) * m["n_prunable"] <= 1  # one-shot at step 0


def test_tokens_per_param_budget_and_dense(shards, tmp_path):
    spec = make_spec("dense", tokens=0)
    spec["budget_spec"] = {"tokens_per_param": 0.5}
    m = run_training(spec, shards, tmp_path)
    assert m["budget_tokens"] == pytest.approx(0.5 * m["n_prunable"])
    assert m["steps"] == math.ceil(0.5 * m["n_prunable"] / 256)
    assert m["sparsity"] == 0.0 and m["n_avg"] == m["n_prunable"] and m["mean_density"] == 1.0
    assert validate_spec(m["spec"]) == m["spec"]  # a dense run's resolved spec, nulls and all, is a spec again


def test_throughput_and_mfu_accounting(shards, tmp_path):
    """MFU = (training-step tokens/s x dense model FLOPs per token) / peak; the peak is per device."""
    from sparsescale.model import ModelConfig, flops_per_token

    spec = make_spec("global")
    spec["training"]["peak_flops"] = 2e9
    m = run_training(spec, shards, tmp_path)
    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=32)
    assert m["model_flops_per_token"] == flops_per_token(cfg, 32)  # dense shapes: masks save no kernel FLOPs
    assert m["model_flops_per_s"] == pytest.approx(m["train_tokens_per_s"] * m["model_flops_per_token"])
    assert m["peak_flops"] == 2e9 and m["mfu"] == pytest.approx(m["model_flops_per_s"] / 2e9)
    # evaluation and checkpoints are left out of the training-step rate, not of the wall-clock one
    assert m["train_tokens_per_s"] > m["tokens_per_s"]
    assert run_training(make_spec("dense"), shards, tmp_path / "cpu")["mfu"] is None  # no peak known for a CPU


@pytest.mark.parametrize(
    "name,peak",
    [("cuda:NVIDIA H100 80GB HBM3", 989e12), ("cuda:NVIDIA H100 PCIe", 756e12), ("cuda:NVIDIA H200", 989e12),
     ("cuda:NVIDIA A100-SXM4-80GB", 312e12), ("cuda:Some Future GPU", None), ("cpu:x86_64", None)],
)
def test_peak_flops_by_device_name(name, peak):
    from sparsescale.hardware import mfu, peak_flops

    assert peak_flops(name) == peak
    assert peak_flops(name, override=1e12) == 1e12
    assert mfu(4e14, 1e15, devices=2) == pytest.approx(0.2)


def test_dense_start_init_from(shards, tmp_path):
    dense = run_training(make_spec("dense", tokens=12_800), shards, tmp_path / "dense")
    spec = make_spec("uniform", tokens=5_120, start=0.0, end=0.5, basis="steps", init="dense")
    with pytest.raises(InputError, match="init-from"):
        run_training(spec, shards, tmp_path / "pruned")
    m = run_training(spec, shards, tmp_path / "pruned", init_from=tmp_path / "dense" / "model.pt")
    frame = pd.read_parquet(tmp_path / "pruned" / "steps.parquet")
    # starts from the trained weights, not from scratch
    assert frame["train_loss"].iloc[0] < dense["final_val_loss"] + 0.3 < math.log(VOCAB)
    assert abs(m["sparsity"] - 0.5) * m["n_prunable"] <= 1
    wrong = make_spec("uniform", tokens=5_120, init="dense")
    wrong["model"]["d_ff"] = 32
    with pytest.raises(InputError, match="d_ff"):
        run_training(wrong, shards, tmp_path / "wrong", init_from=tmp_path / "dense" / "model.pt")


def test_divergence_stops_without_metrics(shards, tmp_path):
    spec = make_spec("global", lr=1e6, grad_clip=None, warmup_fraction=0.0)
    with pytest.raises(TrainingDiverged, match=r"step \d+"):
        run_training(spec, shards, tmp_path)
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "steps.parquet").exists()


def test_injected_nan_names_step_and_checkpoint(shards, tmp_path, monkeypatch):
    from sparsescale import model as model_mod

    real = model_mod.Transformer.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None):
        out = real(self, idx, targets)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] == 27:
                return out * float("nan")
        return out

    monkeypatch.setattr(model_mod.Transformer, "forward", poisoned)
    with pytest.raises(TrainingDiverged) as err:
        run_training(make_spec("global"), shards, tmp_path)
    msg = str(err.value)
    assert "step 27" in msg and "checkpoint.pt (step 20)" in msg
    assert not (tmp_path / "metrics.json").exists()
    ckpt = load_verified(tmp_path / "checkpoint.pt", "")
    assert ckpt["step"] == 20


def _cli(spec: dict, shards: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sparsescale.train_cli", "--spec", json.dumps(spec), "--data", str(shards), "--out-dir", str(out)]


def kill_at_first_checkpoint(cmd: list[str], out: Path, env: dict, timeout_s: float = 120) -> None:
    """Start a training CLI and SIGKILL it as soon as its first checkpoint is on disk."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout_s
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_resume_after_sigkill_is_identical(shards, tmp_path):
    spec = make_spec("global", tokens=400 * 256, every=10, checkpoint_every=25, eval_every=100)
    ref = run_training(copy.deepcopy(spec), shards, tmp_path / "ref")

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kill_at_first_checkpoint(_cli(spec, shards, out), out, env)
    assert not (out / "metrics.json").exists()

    done = subprocess.run(_cli(spec, shards, out), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr
    got = json.loads((out / "metrics.json").read_text())
    assert 0 < got["provenance"]["resumed_from_step"] < got["steps"]
    assert got["final_val_loss"] == ref["final_val_loss"]
    assert got["final_train_loss"] == ref["final_train_loss"]
    a = pd.read_parquet(out / "steps.parquet")
    b = pd.read_parquet(tmp_path / "ref" / "steps.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_cli_bad_spec_exits_2(shards, tmp_path):
    spec = make_spec("global")
    spec["pruning"]["shape"] = "linear"
    from sparsescale.train_cli import main

    assert main(["--spec", json.dumps(spec), "--data", str(shards), "--out-dir", str(tmp_path)]) == 2
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(make_spec("dense", tokens=2_560)))
    assert main(["--spec", str(path), "--data", str(shards), "--out-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "metrics.json").exists()


def test_module_entry_exits_fast_with_outputs_logs_and_codes(shards, tmp_path):
    """``python -m sparsescale`` skips the interpreter's teardown: the exit code, the flushed
    log and the written outputs must be those of a normal exit."""
    spec = make_spec("global", tokens=80 * 256, every=10)
    ref = run_training(copy.deepcopy(spec), shards, tmp_path / "ref")
    cmd = [sys.executable, "-m", "sparsescale", "train", "--spec", json.dumps(spec), "--data", str(shards)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, "--out-dir", str(tmp_path / "run")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.rstrip().splitlines()[-1].split("sparsescale.train: ")[1].startswith("done: final val loss")
    got = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert got["final_val_loss"] == ref["final_val_loss"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "steps.parquet"),
                                  pd.read_parquet(tmp_path / "ref" / "steps.parquet"), check_exact=True)
    bad = copy.deepcopy(spec)
    bad["pruning"]["shape"] = "linear"
    failed = subprocess.run([sys.executable, "-m", "sparsescale", "train", "--spec", json.dumps(bad), "--data",
                             str(shards), "--out-dir", str(tmp_path / "bad")], env=env, capture_output=True, text=True)
    assert failed.returncode == 2
    assert "spec.pruning.shape" in failed.stderr


@pytest.mark.parametrize("env", [{}, {"TORCHINDUCTOR_VEC_ISA_OK": "0", "TORCHINDUCTOR_COMPILE_THREADS": "2"}])
def test_quick_cpu_compile_start_keeps_explicit_settings(monkeypatch, env):
    from torch._inductor import config as inductor

    from sparsescale.train import _quick_cpu_compile_start

    for key in ("TORCHINDUCTOR_VEC_ISA_OK", "TORCHINDUCTOR_COMPILE_THREADS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with inductor.patch({"cpp.vec_isa_ok": None, "compile_threads": 7}):  # restored afterwards
        _quick_cpu_compile_start()
        assert inductor.cpp.vec_isa_ok is (None if env else True)
        assert inductor.compile_threads == (7 if env else 1)


@pytest.mark.trains
def test_compile_caches_of_two_vector_isas_stay_apart(shards, tmp_path):
    """Inductor's cache keys do not tell vector ISAs apart: one cache shared by an AVX2 job and
    an AVX-512 job aborted the second in malloc, and trained NaN in the reverse order. With a
    folder per ISA, every order trains the same run. Two ISAs meet on every CPU with SIMD
    dispatch: the plain one (ATEN_CPU_CAPABILITY=default, inductor's non-vector kernels) and
    the CPU's own."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this CPU has one vector ISA for torch: there is nothing to keep apart")
    try:
        get_cpp_compiler()
    except Exception as err:  # noqa: BLE001 -- inductor's own "no compiler" error types vary by platform
        pytest.skip(f"inductor finds no C++ compiler here, so nothing is compiled or cached ({err})")
    spec = make_spec("global", tokens=40 * 256, every=10, compile=True)
    cache = tmp_path / "cache"
    runs = []
    for i, capability in enumerate(("default", None, "default")):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(cache)}
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        done = subprocess.run(_cli(spec, shards, tmp_path / f"run{i}"), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads((tmp_path / f"run{i}" / "metrics.json").read_text()))
    losses = [r["final_val_loss"] for r in runs]
    assert np.isfinite(losses).all() and losses == pytest.approx([losses[0]] * 3, rel=1e-4)
    capabilities = {r["provenance"]["cpu_capability"] for r in runs}
    folders = sorted(cache.glob("isa-*"))
    assert len(capabilities) == 2 and len(folders) == 2, sorted(p.name for p in cache.iterdir())
    assert all(any(folder.rglob("*.py")) for folder in folders)  # each ISA's kernels were compiled there
    assert not (cache / "fxgraph").exists()  # every compiled graph lies in an ISA's folder


def test_gradient_accumulation_matches_one_batch(shards, tmp_path):
    """Micro-batches of 2 summed over 4 backward passes give the 8-sequence step (fp rounding aside)."""
    spec = make_spec("global", tokens=40 * 256, every=5, eval_every=100)
    ref = run_training(copy.deepcopy(spec), shards, tmp_path / "ref")
    spec["training"]["micro_batch_size"] = 2
    got = run_training(copy.deepcopy(spec), shards, tmp_path / "micro")
    assert got["sparsity"] == ref["sparsity"]
    assert got["final_val_loss"] == pytest.approx(ref["final_val_loss"], rel=1e-4)
    a = pd.read_parquet(tmp_path / "micro" / "steps.parquet")["train_loss"]
    b = pd.read_parquet(tmp_path / "ref" / "steps.parquet")["train_loss"]
    np.testing.assert_allclose(a, b, rtol=1e-4)
    spec["training"]["micro_batch_size"] = 3
    with pytest.raises(InputError, match="micro_batch_size: 3 does not divide the per-device batch 8"):
        run_training(spec, shards, tmp_path / "bad")


def test_curve_evaluation_runs_in_micro_batches(shards, tmp_path, monkeypatch):
    """A batch too large for the device in training is too large in evaluation: on the paper
    profile's 58M model, 200 curve windows of 2048 tokens in one batch peaked at 122 GiB of an
    H200 (more than an 80 GB H100 holds), in micro-batches of 16 at 9.8 GiB."""
    from sparsescale import train

    rows = []
    real = train.evaluate

    def spy(model, xs, ys, batch_size, device):
        rows.append(batch_size)
        return real(model, xs, ys, batch_size, device)

    monkeypatch.setattr(train, "evaluate", spy)
    spec = make_spec("global", tokens=40 * 256, every=5, eval_every=20)
    spec["training"]["micro_batch_size"] = 2
    run_training(spec, shards, tmp_path)
    assert rows == [2, 2]  # at step 20 and at the end (batch_size is 8)


@pytest.mark.parametrize("micro_batch_size", [None, 2])
def test_ddp_under_torchrun_on_cpu_matches_one_process(shards, tmp_path, micro_batch_size):
    """Two gloo ranks split each batch (and accumulate micro-batches without syncing until the
    last); the averaged gradients give the one-process run."""
    spec = make_spec("global", tokens=40 * 256, every=5, eval_every=100)
    ref = run_training(copy.deepcopy(spec), shards, tmp_path / "ref")
    spec["training"]["micro_batch_size"] = micro_batch_size
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "sparsescale.train_cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # both ranks are on this machine: gloo talks over loopback, not over whatever address the
    # hostname resolves to (unreachable on some containers and VPN-connected laptops)
    loopback = next((name for _, name in socket.if_nameindex() if name.startswith("lo")), None)
    if loopback:
        env["GLOO_SOCKET_IFNAME"] = loopback
    done = subprocess.run(cmd + _cli(spec, shards, tmp_path / "ddp")[3:], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert got["provenance"]["world_size"] == 2
    assert got["sparsity"] == ref["sparsity"]
    assert got["final_val_loss"] == pytest.approx(ref["final_val_loss"], rel=1e-4)
