"""Training speed on one CUDA GPU at the papers' shapes: what the paper profile's jobs reach.

    python benchmarks/gpu_train_speed.py [--quick] [--config config/paper.yaml] [--sizes 58M,162M] [--steps 8]

For each model of the config's ``models:``, with its ``training:`` block (sequence length,
batch, micro-batch, bf16 autocast, ``compile``), ``sparsescale.train.run_training`` itself
trains a dense run on random tokens of the papers' Llama-2 vocabulary (``--vocab``, 32,000)
and stamps every step. Prints, all measured in this one run:

- ``tokens_per_s_{size}``: steady-state training tokens/s, the median over the steps after
  the first two;
- ``mfu_{size}``: that rate times the dense model's FLOPs per token over the GPU's datasheet
  bf16 peak, both from the run's ``metrics.json`` (``model_flops_per_token``, ``peak_flops``);
- ``to_first_step_s_{size}``: from the call to the end of the first step (model build, data
  checks and compilation);
- ``compiled_vs_eager_{size}``: steady-state step time eager over compiled (> 1: compile
  pays), not with ``--quick``.

``--quick``: the smallest model, 6 steps (38-44 s on an H200). The
planner's default MFU (``sparsescale plan``, 0.4) is a guess where no run has measured one;
these lines are what to give it (``--mfu``) for this GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from sparsescale.data.shards import write_token_dir
from sparsescale.hardware import mfu
from sparsescale.model import ModelConfig, count_params
from sparsescale.train import run_training


def steady_step_s(spec: dict, shards: Path, out: Path) -> tuple[float, float, dict]:
    """(median step seconds after the first two, seconds to the end of the first step, metrics)."""
    stamps: list[float] = []
    started = time.perf_counter()
    metrics = run_training(spec, shards, out, step_times=stamps)
    return float(statistics.median(np.diff(stamps)[1:])), stamps[0] - started, metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the smallest model, 6 steps")
    ap.add_argument("--config", default="config/paper.yaml", help="a study config with models: and training:")
    ap.add_argument("--sizes", default=None, help="comma-separated models (default: all; --quick: the smallest)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 10; --quick 6)")
    ap.add_argument("--vocab", type=int, default=32_000, help="vocabulary size (the papers' Llama-2 tokenizer)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_train_speed: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2

    study = yaml.safe_load(Path(args.config).read_text())
    models, training = study["models"], study["training"]
    seq_len = int(training["seq_len"])
    sizes = {name: count_params(ModelConfig(vocab_size=args.vocab, max_seq_len=seq_len, **m))["n_prunable"]
             for name, m in models.items()}
    order = sorted(sizes, key=sizes.get)
    names = args.sizes.split(",") if args.sizes else (order[:1] if args.quick else order)
    unknown = sorted(set(names) - set(models))
    if unknown:
        print(f"gpu_train_speed: --sizes: {unknown} not in {args.config} models: {order}", file=sys.stderr)
        return 2
    steps = args.steps or (6 if args.quick else 10)
    tokens_per_step = int(training["batch_size"]) * seq_len
    device = f"cuda:{torch.cuda.get_device_name()}"
    print(f"device: {device}")
    print(f"tokens_per_step: {tokens_per_step}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        shards = tmp / "tokens"
        write_token_dir(shards, {"train": rng.integers(1, args.vocab, 8_000_000, dtype=np.uint16),
                                 "val": rng.integers(1, args.vocab, 400_000, dtype=np.uint16)},
                        vocab_size=args.vocab, eot_id=0)
        for name in names:
            spec = {"seed": 0, "model": models[name], "budget_spec": {"tokens": steps * tokens_per_step},
                    "pruning": {"method": "dense"},
                    "training": {**training, "device": "cuda", "eval_every": 10**9, "checkpoint_every": 10**9,
                                 "log_every": 10**9, "final_eval_tokens": seq_len * 16}}
            step_s, first_s, metrics = steady_step_s(spec, shards, tmp / f"{name}-compiled")
            rate = tokens_per_step / step_s
            print(f"tokens_per_s_{name}: {rate:.0f}")
            print(f"mfu_{name}: {mfu(rate * metrics['model_flops_per_token'], metrics['peak_flops']) or float('nan'):.3f}")
            print(f"to_first_step_s_{name}: {first_s:.1f}")
            if spec["training"].get("compile") and not args.quick:
                spec["training"]["compile"] = False
                eager_s, _, _ = steady_step_s(spec, shards, tmp / f"{name}-eager")
                print(f"compiled_vs_eager_{name}: {eager_s / step_s:.2f}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
