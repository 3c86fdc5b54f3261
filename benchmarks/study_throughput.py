"""Throughput on the default study's own shapes, and what pays for it (issue 13).

    python benchmarks/study_throughput.py [--quick] [--config config/config.yaml] [--scales s1,s4]

Every figure is measured in this one run, on the study's models (``models:`` of the config,
at the vocabulary of its ``stdlib`` corpus), batch and sequence length, with
``sparsescale train`` itself as a subprocess, as Snakemake runs it:

- ``tokens_per_s_{scale}``: training-loop tokens/s of one job with one thread (the
  study's setting), from the run's own ``train_tokens_per_s``;
- ``job_overhead_s_{scale}``: the job's wall time outside the training loop (process
  start, imports, data checks, model build, the final evaluation on every validation token,
  writing outputs), and ``job_overhead_share_{scale}_tpp20``: its share of a 20-tokens-per-
  parameter run of that scale;
- ``compile_speedup_{scale}``: steady-state tokens/s with ``training.compile`` over eager
  (from two compiled jobs of different lengths, so compilation is left out);
  ``compile_first_job_s_{scale}`` / ``compile_cached_job_s_{scale}``: the wall time a compiled
  job spends compiling, with an empty and with a warm persistent compile cache
  (``TORCHINDUCTOR_CACHE_DIR``); ``compile_vs_eager_job_{scale}_tpp20``: the projected wall
  time of a 20-tokens-per-parameter job compiled (warm cache) over eager (< 1: compile pays);
- ``vec_isa_probe_s``: what inductor's vector-ISA probes cost a compiled job at start-up
  (``sparsescale train`` trusts the CPU's flags instead); ``teardown_s``: what the
  interpreter's teardown at exit costs a training job (``python -m sparsescale`` skips it),
  from the faster of two jobs each way (one with ``--quick``);
- ``two_jobs_vs_two_threads_{scale}``: total tokens/s of two one-thread jobs side by side over
  one job with two threads (> 1: run jobs in parallel, the study's setting);
- ``batch_{b}x{t}_vs_16x128_{scale}``: tokens/s of other batch shapes with the same tokens per
  step.

``--quick`` (under a minute) measures the smallest and largest scale with short jobs and
skips the compile and batch-shape lines. Numbers move with the machine's load: compare lines
of one run, never across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sparsescale import config as study
from sparsescale.data.shards import write_token_dir
from sparsescale.model import ModelConfig, count_params


# the CLI with the interpreter's normal teardown at exit (``python -m sparsescale`` skips it)
FULL_EXIT = ["-c", "from sparsescale.cli import main; raise SystemExit(main())"]


def train_job(shards: Path, out: Path, model: dict, tokens: int, threads: int = 1, batch: int = 16,
              seq: int = 128, compile_: bool = False, cache: Path | None = None, full_exit: bool = False) -> dict:
    """One ``sparsescale train`` subprocess; its metrics plus the process's wall seconds."""
    spec = {"seed": 0, "model": model, "budget_spec": {"tokens": tokens}, "pruning": {"method": "dense"},
            "training": {"seq_len": seq, "batch_size": batch, "eval_every": 10**9, "checkpoint_every": 10**9,
                         "log_every": 10**9, "threads": threads, "compile": compile_, "device": "cpu"}}
    env = dict(os.environ)
    if cache is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    started = time.perf_counter()
    subprocess.run([sys.executable, *(FULL_EXIT if full_exit else ["-m", "sparsescale"]), "train", "--spec", json.dumps(spec), "--data", str(shards),
                    "--out-dir", str(out), "--threads", str(threads)], check=True, capture_output=True, env=env)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {**metrics, "process_s": wall, "loop_s": metrics["tokens"] / metrics["train_tokens_per_s"]}


def vec_isa_probe_s() -> float:
    """Seconds inductor spends per process choosing the CPU's vector ISA by building and
    loading probe libraries (its cache warm), which ``sparsescale train`` skips."""
    probe = ("import time; from torch._inductor import cpu_vec_isa; t = time.perf_counter(); "
             "cpu_vec_isa.pick_vec_isa(); print(time.perf_counter() - t)")
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_VEC_ISA_OK"}
    runs = [float(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                                 env=env).stdout) for _ in range(2)]
    return runs[-1]  # the first may build the probes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--scales", default=None, help="comma-separated rungs (default: all; --quick: smallest and largest)")
    args = ap.parse_args()

    cfg = study.load_config(args.config)
    vocab = int(cfg["corpora"]["stdlib"]["tokenizer"]["vocab_size"])
    val_tokens = 400_000  # about the default study's validation split
    models = cfg["models"]
    sizes = {name: count_params(ModelConfig(vocab_size=vocab, max_seq_len=128, **m))["n_prunable"]
             for name, m in models.items() if name.startswith("s")}
    order = sorted(sizes, key=sizes.get)
    scales = args.scales.split(",") if args.scales else ([order[0], order[-1]] if args.quick else order)
    steps = 60 if args.quick else 300
    tokens = steps * 16 * 128
    print(f"vocab: {vocab}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        shards = tmp / "tokens"
        write_token_dir(shards, {"train": rng.integers(1, vocab, 2_000_000, dtype=np.uint16),
                                 "val": rng.integers(1, vocab, val_tokens if not args.quick else 100_000,
                                                     dtype=np.uint16)}, vocab_size=vocab, eot_id=0)
        runs = iter(range(10**6))

        def job(scale: str, **kw) -> dict:
            return train_job(shards, tmp / f"run{next(runs)}", models[scale], kw.pop("tokens", tokens), **kw)

        for scale in scales:
            eager = job(scale)
            print(f"tokens_per_s_{scale}: {eager['train_tokens_per_s']:.0f}")
            overhead = eager["process_s"] - eager["loop_s"]
            print(f"job_overhead_s_{scale}: {overhead:.2f}")
            study_tokens = 20 * sizes[scale]
            share = overhead / (overhead + study_tokens / eager["train_tokens_per_s"])
            print(f"job_overhead_share_{scale}_tpp20: {share:.3f}")
            with ThreadPoolExecutor(2) as pool:  # two one-thread jobs side by side
                pair = list(pool.map(lambda _: job(scale), range(2)))
                both = sum(p["tokens"] for p in pair) / max(p["loop_s"] for p in pair)
            two_threads = job(scale, threads=2)
            print(f"two_jobs_vs_two_threads_{scale}: {both / two_threads['train_tokens_per_s']:.2f}")
            if scale == scales[0]:  # per process, whatever the scale
                print(f"vec_isa_probe_s: {vec_isa_probe_s():.2f}")
                tries = 1 if args.quick else 2
                full = min(job(scale, full_exit=True)["process_s"] for _ in range(tries))
                quick = min(job(scale)["process_s"] for _ in range(tries))
                print(f"teardown_s: {full - quick:.2f}")
            if args.quick:
                continue
            cache = tmp / f"inductor-{scale}"
            first = job(scale, compile_=True, cache=cache)
            cached = job(scale, compile_=True, cache=cache)
            longer = job(scale, compile_=True, cache=cache, tokens=3 * tokens)
            rate = 2 * tokens / (longer["process_s"] - cached["process_s"])  # steady state, compile left out
            eager_job = eager["process_s"] - tokens / eager["train_tokens_per_s"]  # what is not training steps
            compiling = {k: j["process_s"] - tokens / rate - eager_job for k, j in (("first", first), ("cached", cached))}
            print(f"compile_speedup_{scale}: {rate / eager['train_tokens_per_s']:.2f}")
            print(f"compile_first_job_s_{scale}: {compiling['first']:.1f}")
            print(f"compile_cached_job_s_{scale}: {compiling['cached']:.1f}")
            eager_tpp20 = eager_job + study_tokens / eager["train_tokens_per_s"]
            print(f"compile_vs_eager_job_{scale}_tpp20: "
                  f"{(eager_job + compiling['cached'] + study_tokens / rate) / eager_tpp20:.2f}")
            for batch, seq in ((32, 64), (8, 256)):
                other = job(scale, batch=batch, seq=seq)
                print(f"batch_{batch}x{seq}_vs_16x128_{scale}: "
                      f"{other['train_tokens_per_s'] / eager['train_tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
