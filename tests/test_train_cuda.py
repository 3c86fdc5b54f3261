"""The training loop on a CUDA device, the paper profile's path: bf16 autocast and
torch.compile there, exact sparsity, resume after SIGKILL, and outputs that a machine without
a GPU can read.

CI has no GPU, so these tests are skipped there, saying why; on a GPU machine run
``pytest tests/test_train_cuda.py``. They reuse test_train.py's token stream and run specs.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess

import pandas as pd
import pytest
import torch
from test_train import VOCAB, _cli, kill_at_first_checkpoint, make_spec, write_shards

from sparsescale.hardware import peak_flops
from sparsescale.train import run_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (the GPU path's tests)")

STEPS = 400  # long enough for fp32 on the CPU and bf16 on the GPU to approach the stream's floor


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("data") / "tokens")


def test_compiled_bf16_run_prunes_exactly_learns_as_on_cpu_and_saves_for_cpu(shards, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    spec = make_spec("global", tokens=STEPS * 256, every=10, eval_every=100, checkpoint_every=10**6)
    on_cpu = run_training(copy.deepcopy(spec), shards, tmp_path / "cpu")
    spec["training"].update(device="cuda", compile=True)
    got = run_training(spec, shards, tmp_path / "cuda")

    assert got["device"].startswith("cuda:") and got["provenance"]["dtype"] == "bfloat16-autocast"
    # inductor generated kernels (a failed compile would fall back to eager without a word)
    assert any(p.suffix == ".py" for p in (tmp_path / "cache").rglob("*")), "torch.compile generated no kernels"
    n = got["n_prunable"]
    assert abs(got["sparsity"] - 0.5) * n <= 1 and got["n_final"] == on_cpu["n_final"]
    # bf16 rounding changes the trajectory, not what the model learns: the stream's entropy
    # is log 3 nats (3 successors per token), far below log VOCAB
    assert got["final_val_loss"] < math.log(VOCAB) / 2
    assert got["final_val_loss"] == pytest.approx(on_cpu["final_val_loss"], abs=0.05)
    # MFU against the datasheet peak of a known GPU, none for an unknown one
    assert got["peak_flops"] == peak_flops(got["device"])
    assert (got["mfu"] is None) if got["peak_flops"] is None else 0 < got["mfu"] < 1
    # written on the GPU, read where there is none: every tensor in model.pt lives on the CPU
    saved = torch.load(tmp_path / "cuda" / "model.pt", weights_only=True)  # no map_location: as saved
    assert {t.device.type for t in [*saved["model"].values(), *saved["masks"].values()]} == {"cpu"}


def test_resume_after_sigkill_on_cuda_is_identical(shards, tmp_path):
    """A checkpoint is loaded onto the GPU, RNG states included, and the resumed run continues
    the uninterrupted one (eager; both runs on the same device)."""
    spec = make_spec("global", tokens=1000 * 256, every=10, checkpoint_every=100, eval_every=500, device="cuda")
    ref = run_training(copy.deepcopy(spec), shards, tmp_path / "ref")

    out = tmp_path / "killed"
    kill_at_first_checkpoint(_cli(spec, shards, out), out, os.environ.copy(), timeout_s=300)
    assert not (out / "metrics.json").exists()

    done = subprocess.run(_cli(spec, shards, out), env=os.environ.copy(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr
    got = json.loads((out / "metrics.json").read_text())
    assert 0 < got["provenance"]["resumed_from_step"] < got["steps"]
    assert got["final_val_loss"] == ref["final_val_loss"]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "steps.parquet"),
                                  pd.read_parquet(tmp_path / "ref" / "steps.parquet"), check_exact=True)
