"""Training speed: the real loop against a bare torch loop, pruning overhead, compile speed-up.

    python benchmarks/train_speed.py [--quick] [--threads 2] [--sizes 4x128,6x256]

Prints one ``name: value`` line per figure, all measured in this one run:

- ``tokens_per_s_bare_{size}``: a bare reference loop on the same model (plain torch: batch
  from the same loader, forward, backward, grad clip, AdamW step; no logging, pruning, eval
  or checkpoints);
- ``tokens_per_s_train_{size}``: ``sparsescale.train.run_training`` on the same model and
  steps (dense), from its own ``wall_time_s`` (the loop, without process start-up);
- ``train_vs_bare_ratio``: train / bare tokens/s (goal >= 0.95), for the first size;
- ``sparse50_step_overhead`` / ``sparse90_step_overhead``: step time of the training loop at
  a fixed 50% / 90% global sparsity (one-shot at step 0, masks applied every step) over the
  dense loop's, minus 1 (goal <= 0.05);
- ``prune_event_s``: time of one global pruning event (threshold bisection) on the model;
- ``compiled_vs_eager_speedup``: bare-loop step time eager / ``torch.compile``d, after
  warm-up; ``compile_s``: the compile time.

Figures are medians of per-step times (the first two steps of every run dropped) over
``--repeats`` interleaved runs of every configuration, which keeps them stable on a shared
machine. ``--quick`` finishes in under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sparsescale.data.loader import TokenShards
from sparsescale.io import sha256_file
from sparsescale.model import ModelConfig, Transformer
from sparsescale.pruning import pruner_for_model
from sparsescale.train import lr_at, make_optimizer, run_training

VOCAB, SEQ, BATCH = 4096, 128, 16


def make_shards(path: Path, n_train: int = 1_000_000, n_val: int = 20_000) -> None:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        rng.integers(0, VOCAB, size=n, dtype=np.uint16).tofile(path / f"{split}.bin")
    manifest = {
        "source": {"kind": "benchmark"}, "tokenizer_sha256": "", "vocab_size": VOCAB, "eot_id": 0, "dtype": "uint16",
        "tokens": {"train": n_train, "val": n_val},
        "sha256": {f"{s}.bin": sha256_file(path / f"{s}.bin") for s in ("train", "val")}, "entropy_rate_nats": None,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))


def spec_for(size: tuple[int, int], steps: int, method: str, sparsity: float, threads: int) -> dict:
    layers, d = size
    pruning = {"method": "dense"}
    if method != "dense":
        pruning = {"method": method, "shape": "geometric", "final_sparsity": sparsity, "start": 0.0, "end": 0.0,
                   "basis": "steps", "every": 10, "embedding_sparsity": "none"}
    return {
        "run_id": f"bench/{layers}x{d}/{method}{sparsity}", "seed": 0,
        "model": {"d_model": d, "n_layers": layers, "n_heads": max(1, d // 64) * 2 if d >= 128 else 2, "d_ff": 3 * d},
        "budget_spec": {"tokens": steps * SEQ * BATCH}, "pruning": pruning,
        "training": {"seq_len": SEQ, "batch_size": BATCH, "lr": 1e-3, "eval_every": 10**9, "eval_windows": 1,
                     "checkpoint_every": 10**9, "log_every": 10**9, "threads": threads, "device": "cpu"},
    }


def train_step_times(shards_dir: Path, spec: dict, out: Path) -> list[float]:
    """Per-step seconds of ``run_training``'s own loop (first two steps dropped)."""
    stamps: list[float] = []
    run_training(spec, shards_dir, out, step_times=stamps)
    for f in out.iterdir():
        f.unlink()
    return list(np.diff(stamps)[1:])


def bare_step_times(shards: TokenShards, spec: dict, steps: int, compiled: bool = False) -> tuple[list[float], float]:
    """Per-step seconds of a bare loop on the same model (first two steps dropped), and the
    time of the first step (for the compiled loop: the compilation)."""
    m = spec["model"]
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=shards.vocab_size, max_seq_len=SEQ, **m)
    model = Transformer(cfg)
    opt = make_optimizer(model, {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1})
    fwd = torch.compile(model) if compiled else model
    params = list(model.parameters())
    stamps = [time.perf_counter()]
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(i, steps, 1e-3, 1, 0.1)
        x, y = shards.batch("train", seed=0, step=i, batch_size=BATCH, seq_len=SEQ)
        loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        stamps.append(time.perf_counter())
    diffs = list(np.diff(stamps))
    return diffs[2:], diffs[0]


def event_time(size: tuple[int, int], sparsity: float = 0.5) -> float:
    layers, d = size
    model = Transformer(ModelConfig(vocab_size=VOCAB, d_model=d, n_layers=layers, n_heads=2, d_ff=3 * d, max_seq_len=SEQ))
    pruner = pruner_for_model(model, {"method": "global"})
    t0 = time.perf_counter()
    pruner.prune_to(sparsity)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small model, few steps: under a minute")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default=None, help="LAYERSxD_MODEL,... (default 4x128,6x256; quick: 2x64)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)
    logging.getLogger("sparsescale.train").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in (args.sizes or ("2x64" if args.quick else "4x128,6x256")).split(",")]
    steps = args.steps or (12 if args.quick else 40)
    repeats = args.repeats or (2 if args.quick else 3)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_shards(tmp / "tokens")
        shards = TokenShards(tmp / "tokens")
        for si, size in enumerate(sizes):
            name = f"{size[0]}x{size[1]}"
            configs = {
                "bare": None,
                "dense": spec_for(size, steps, "dense", 0.0, args.threads),
            }
            if si == 0:
                configs["sparse50"] = spec_for(size, steps, "global", 0.5, args.threads)
                configs["sparse90"] = spec_for(size, steps, "global", 0.9, args.threads)
            times: dict[str, list[float]] = {k: [] for k in configs}
            bare_step_times(shards, configs["dense"], 3)  # warm the allocator and kernels
            for _ in range(repeats):
                for key, spec in configs.items():
                    if spec is None:
                        times[key] += bare_step_times(shards, configs["dense"], steps)[0]
                    else:
                        times[key] += train_step_times(tmp / "tokens", spec, tmp / "run")
            step_s = {k: float(np.median(v)) for k, v in times.items()}
            tokens = SEQ * BATCH
            out[f"tokens_per_s_bare_{name}"] = tokens / step_s["bare"]
            out[f"tokens_per_s_train_{name}"] = tokens / step_s["dense"]
            if si == 0:
                out["train_vs_bare_ratio"] = step_s["bare"] / step_s["dense"]
                out["tokens_per_s_sparse50"] = tokens / step_s["sparse50"]
                out["tokens_per_s_sparse90"] = tokens / step_s["sparse90"]
                out["sparse50_step_overhead"] = step_s["sparse50"] / step_s["dense"] - 1.0
                out["sparse90_step_overhead"] = step_s["sparse90"] / step_s["dense"] - 1.0
                out["prune_event_s"] = event_time(size)
            else:
                out[f"train_vs_bare_ratio_{name}"] = step_s["bare"] / step_s["dense"]
        if not args.no_compile:
            spec = spec_for(sizes[0], steps, "dense", 0.0, args.threads)
            eager = bare_step_times(shards, spec, steps)[0]
            comp, compile_s = bare_step_times(shards, spec, steps, compiled=True)
            eager += bare_step_times(shards, spec, steps)[0]
            out["compile_s"] = compile_s
            out["tokens_per_s_compiled"] = SEQ * BATCH / float(np.median(comp))
            out["compiled_vs_eager_speedup"] = float(np.median(eager)) / float(np.median(comp))
    for key, value in out.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) and math.isfinite(value) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
