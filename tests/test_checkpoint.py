"""Checkpoints and model files: a damaged, modified, foreign or old-format file is refused by
name, with what to do, before anything in it runs and before any training step."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsescale import model as model_mod
from sparsescale.io import InputError
from sparsescale.train import run_training
from test_train import make_spec, write_shards

torch.set_num_threads(1)

SPEC = make_spec("global", tokens=60 * 256, every=5, checkpoint_every=20, eval_every=100)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("data") / "tokens")


@pytest.fixture(scope="module")
def stopped_run(shards, tmp_path_factory) -> Path:
    """A run stopped at step 25 of 60: its folder holds the checkpoint of step 20."""
    out = tmp_path_factory.mktemp("stopped")
    real, calls = model_mod.Transformer.forward, [0]

    def stop_at_step_25(self, idx, targets=None):
        if targets is not None and self.training:
            calls[0] += 1
            if calls[0] == 25:
                raise Interrupted
        return real(self, idx, targets)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_mod.Transformer, "forward", stop_at_step_25)
        with pytest.raises(Interrupted):
            run_training(SPEC, shards, out)
    assert (out / "checkpoint.pt").is_file() and not (out / "metrics.json").exists()
    return out


@pytest.fixture
def run_dir(stopped_run, tmp_path) -> Path:
    shutil.copytree(stopped_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def steps_trained(monkeypatch) -> list[int]:
    """Counts the training forward passes that run from here on."""
    real, calls = model_mod.Transformer.forward, []

    def counted(self, idx, targets=None):
        if targets is not None and self.training:
            calls.append(1)
        return real(self, idx, targets)

    monkeypatch.setattr(model_mod.Transformer, "forward", counted)
    return calls


def assert_refused(run_dir: Path, shards: Path, steps_trained: list[int], match: str, spec: dict = SPEC) -> None:
    with pytest.raises(InputError, match=match) as err:
        run_training(spec, shards, run_dir)
    assert str(run_dir / "checkpoint.pt") in str(err.value)
    assert "delete it to restart the run" in str(err.value)
    assert steps_trained == [] and not (run_dir / "metrics.json").exists()


def test_an_intact_checkpoint_resumes(run_dir, shards, steps_trained):
    m = run_training(SPEC, shards, run_dir)
    assert m["provenance"]["resumed_from_step"] == 20 and len(steps_trained) == 40


def test_one_flipped_byte_is_refused(run_dir, shards, steps_trained):
    path = run_dir / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:  # a torch file is a zip: flip a byte of the largest tensor's data
        largest = max(zf.infolist(), key=lambda info: info.file_size)
        data = zf.read(largest)
    at = raw.find(data) + len(data) // 2
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    assert_refused(run_dir, shards, steps_trained, "does not match its sha256")


def test_a_truncated_checkpoint_is_refused(run_dir, shards, steps_trained, capsys):
    from sparsescale.train_cli import main

    path = run_dir / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_refused(run_dir, shards, steps_trained, "unreadable, truncated or damaged")
    # the command line says it in one line and exits 2, as for any bad input
    assert main(["--spec", json.dumps(SPEC), "--data", str(shards), "--out-dir", str(run_dir)]) == 2
    assert capsys.readouterr().err.startswith(f"sparsescale train: error: {path}: unreadable, truncated or damaged")


class _OpensAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")  # what unpickling would run


def test_a_pickled_object_is_refused_without_running(run_dir, shards, steps_trained):
    marker = run_dir / "unpickling-ran"
    torch.save({"format": 2, "step": 20, "payload": _OpensAFile(marker)}, run_dir / "checkpoint.pt")
    assert_refused(run_dir, shards, steps_trained, "holds objects other than tensors and plain containers")
    assert not marker.exists()


def test_an_old_format_checkpoint_is_refused_as_unverifiable(run_dir, shards, steps_trained):
    # format 1 pickled numpy's RNG state: never loaded unsafely, named as an older version's
    torch.save({"format": 1, "step": 20, "rng": {"numpy": np.random.get_state()}}, run_dir / "checkpoint.pt")
    assert_refused(run_dir, shards, steps_trained, "older version")


def test_a_checkpoint_for_another_spec_is_refused(run_dir, shards, steps_trained):
    other = make_spec("global", tokens=60 * 256, every=5, checkpoint_every=20, eval_every=100, lr=0.02)
    assert_refused(run_dir, shards, steps_trained, "different spec", spec=other)


@pytest.fixture(scope="module")
def dense_model(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dense")
    run_training(make_spec("dense", tokens=2_560), shards, out)
    return out / "model.pt"


def test_init_from_a_modified_or_old_model_pt_is_refused(dense_model, shards, tmp_path):
    spec = make_spec("uniform", tokens=2_560, start=0.0, end=0.5, basis="steps", init="dense")
    model = tmp_path / "model.pt"
    state = torch.load(dense_model, weights_only=True)
    state["model"]["tok_emb.weight"][0, 0] += 1.0
    torch.save(state, model)
    with pytest.raises(InputError, match=re.escape(f"{model}: content does not match its sha256") + ".*rerun the dense run"):
        run_training(spec, shards, tmp_path / "modified", init_from=model)
    del state["sha256"], state["format"]  # the layout before the digest
    torch.save(state, model)
    with pytest.raises(InputError, match=re.escape(f"{model}: written by an older version")):
        run_training(spec, shards, tmp_path / "old", init_from=model)
    assert run_training(spec, shards, tmp_path / "intact", init_from=dense_model)["provenance"]["init_from"]


def test_content_digest_sees_every_part_and_refuses_other_objects(tmp_path):
    from sparsescale.checkpoint import content_sha256, save_verified

    base = {"w": torch.zeros(2, 3), "rows": [{"loss": 1.5}], "rng": (3, (1, 2), None)}
    digest = content_sha256(base)
    changed = [
        {**base, "w": torch.zeros(3, 2)},  # shape
        {**base, "w": torch.zeros(2, 3, dtype=torch.float64)},  # dtype
        {**base, "w": torch.tensor([[0.0, 0, 0], [0, 0, 1e-30]])},  # one value
        {**base, "rows": [{"loss": 1.5000000000000002}]},  # the last bit of a float
        {**base, "rng": [3, (1, 2), None]},  # a tuple is not a list
    ]
    assert all(content_sha256(c) != digest for c in changed)
    assert content_sha256({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in base.items()}) == digest
    with pytest.raises(TypeError, match="ndarray"):
        save_verified(tmp_path / "x.pt", {"rng": np.zeros(3)})
    assert not (tmp_path / "x.pt").exists()
