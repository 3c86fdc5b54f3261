"""The training loop: one run from a spec, with pruning, checkpoints/resume and the step log.

``run_training(spec, data_dir, out_dir)`` trains the spec's model on the token shards and
writes, atomically, into ``out_dir``: ``steps.parquet``, ``config.json``, ``model.pt`` and
last ``metrics.json`` (see docs/ARCHITECTURE.md). ``checkpoint.pt`` is written every
``checkpoint_every`` steps and, when present at start, the run resumes from it; it is
removed once the run has finished. Both .pt files hold tensors and plain containers with a
digest of their content (``sparsescale.checkpoint``): one that is unreadable, modified, of
an older version or written for another spec is refused by name, never resumed.

Reading order: ``run_training`` (the whole run on one screen), ``train`` (the loop),
``optimisation_step``; then set-up, resume/save and the end of a run. The spec's keys,
ranges and defaults: ``run_spec.schema.yaml``.

Order of one step ``t`` (0-based): pruning event at boundary ``t`` if any (new masks, Adam
moments of pruned weights zeroed) -> lr(t) -> forward/backward on batch (seed, t) -> grads
of pruned weights zeroed -> grad-norm clip -> AdamW step (zero gradient and zero moments
leave a pruned weight exactly zero; the end-of-run check verifies it). An event at
boundary ``T`` (end of training) is applied after the last step, before the final eval.

Determinism: the model is initialised from ``torch.manual_seed(seed)``, batch ``t`` depends
only on (seed, t), there is no dropout, and a checkpoint holds everything the remaining
steps read (weights, AdamW state, masks, step, the step log, RNG states), so a resumed run
is bit-identical to an uninterrupted one on CPU, and on a CUDA GPU in eager mode
(tests/test_train_cuda.py, checked on an H200).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsescale.checkpoint import CheckpointError, load_verified, save_verified
from sparsescale.io import InputError, get_logger, write_json, write_parquet
from sparsescale.hardware import mfu, peak_flops
from sparsescale.model import ModelConfig, Transformer, flops_per_token, param_counts
from sparsescale.provenance import git_state
from sparsescale.pruning import Schedule, build_schedule, pruner_for_model
from sparsescale.run_spec import validate_spec

log = get_logger("sparsescale.train")

# training keys that do not change the numbers a run produces (may differ on resume)
RUNTIME_KEYS = ("checkpoint_every", "log_every", "device", "threads", "compile", "peak_flops", "micro_batch_size")
CHECKPOINT = "checkpoint.pt"
RESTART = "delete it to restart the run from step 0"


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the run stops and writes no final metrics."""


# ----------------------------------------------------------------------------- helpers


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, min_lr_fraction: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``lr`` to ``min_lr_fraction * lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay)
    floor = lr * min_lr_fraction
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, training: dict) -> torch.optim.AdamW:
    """AdamW, weight decay on matrices (linears, embedding) only, not on norm gains.

    The fused kernel on every device: on CPU the multi-tensor (``foreach``) path is 3x slower
    and its ``sqrt`` pass slows down ~6x on the exact zeros that pruned weights leave in
    ``exp_avg_sq`` (benchmarks/train_speed.py). Pruned weights stay exactly zero under it.
    """
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": training["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=training["lr"], betas=tuple(training["betas"]), eps=training["eps"], fused=True)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("spec.training.device: 'cuda' requested but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@torch.no_grad()
def evaluate(model: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Mean next-token loss over fixed windows (all windows have the same length)."""
    return evaluate_precisely(model, xs, ys, batch_size, device)["loss"]


@torch.no_grad()
def evaluate_precisely(model: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor, batch_size: int,
                       device: torch.device) -> dict:
    """Mean next-token loss over fixed windows and its standard errors.

    ``se_token``: from the scatter of per-token losses (tokens taken as independent);
    ``se_window``: from the scatter of per-window means, which also counts that tokens of
    one window (one document) are alike, so it is the larger and more cautious of the two.
    """
    was_training = model.training
    model.eval()
    window_means = []
    total, total_sq, count = 0.0, 0.0, 0
    for i in range(0, xs.shape[0], batch_size):
        x = xs[i : i + batch_size].to(device, non_blocking=True)
        y = ys[i : i + batch_size].to(device, non_blocking=True)
        with _autocast(device):
            logits = model(x)
        losses = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").double()
        total += float(losses.sum())
        total_sq += float((losses * losses).sum())
        count += losses.numel()
        window_means.append(losses.view(x.shape[0], -1).mean(dim=1).cpu())
    model.train(was_training)
    mean = total / count
    per_window = torch.cat(window_means)
    n_windows = per_window.numel()
    token_var = max(total_sq / count - mean * mean, 0.0) * count / max(count - 1, 1)
    return {"loss": mean, "tokens": count, "windows": n_windows, "se_token": math.sqrt(token_var / count),
            "se_window": float(per_window.std() / math.sqrt(n_windows)) if n_windows > 1 else float("nan")}


def _quick_cpu_compile_start() -> None:
    """Cut inductor's per-process start-up for short one-thread CPU jobs, which reuse a warm
    compile cache (benchmarks/study_throughput.py, ``vec_isa_probe_s``): trust the CPU's
    flags for its vector ISA instead of building and loading a probe library in a child
    Python per ISA on every start, and compile in-process instead of starting a worker pool
    that would only compete with the job beside it. An explicit TORCHINDUCTOR_VEC_ISA_OK or
    TORCHINDUCTOR_COMPILE_THREADS wins."""
    from torch._inductor import config as inductor

    if "TORCHINDUCTOR_VEC_ISA_OK" not in os.environ:
        inductor.cpp.vec_isa_ok = True
    if "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ:
        inductor.compile_threads = 1


def _compile_cache_per_isa(device: torch.device) -> None:
    """Give each vector ISA its own folder of inductor's persistent cache. Its keys do not tell
    ISAs apart: here a cache written under AVX2 and read under AVX-512 aborted the job in
    malloc, and the reverse trained NaN from the first step (torch 2.13). A results/ folder
    that a mixed cluster shares, or that moves to another machine, would do the same."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    isa = torch.backends.cpu.get_cpu_capability()
    if device.type == "cpu":  # the ISA inductor writes kernels for (AMX, AVX-512, ...), picked as it picks it
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        isa += f"-{pick_vec_isa()}"
    folder = "isa-" + re.sub(r"[^a-z0-9_]+", "-", isa.lower()).strip("-")
    root = cache_dir()
    if os.path.basename(root).startswith("isa-"):  # set by an earlier run in this process
        root = os.path.dirname(root)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(root, folder)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("sparsescale", "torch", "numpy", "pandas", "pyarrow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


class _Dist:
    """torchrun / DDP context: rank-sharded batches, rank 0 writes; a no-op without WORLD_SIZE>1."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank, self.local_rank = 0, 0
        if self.world > 1:
            import torch.distributed as dist

            self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            use_cuda = device_name != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
            self.rank = dist.get_rank()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        dev = resolve_device(name)
        if dev.type == "cuda" and self.world > 1:
            return torch.device("cuda", self.local_rank)
        return dev

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.world
        return t

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """One run, set up: its spec, device, data, model, pruner, optimizer and step counts."""

    spec: dict
    out_dir: Path
    data_dir: str
    init_from: str | None
    dist: _Dist
    device: torch.device
    shards: Any  # sparsescale.data.loader.TokenShards
    cfg: ModelConfig
    raw: Transformer  # the model itself; `wrap_model` wraps it for DDP and torch.compile
    params: list[torch.nn.Parameter]
    counts: dict
    pruner: Any  # sparsescale.pruning.Pruner
    optimizer: torch.optim.AdamW
    schedule: Schedule
    budget_tokens: float
    total_steps: int
    warmup_steps: int
    micro_rows: int  # sequences in one forward/backward pass
    accum_steps: int  # passes per optimizer step (gradient accumulation)
    rank_rows: slice  # this rank's sequences of each batch

    @property
    def tr(self) -> dict:
        return self.spec["training"]

    @property
    def tokens_per_step(self) -> int:
        return self.tr["batch_size"] * self.tr["seq_len"]

    @property
    def n_prunable(self) -> int:
        return self.counts["n_prunable"]

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    @property
    def target_sparsity(self) -> float:
        pr = self.spec["pruning"]
        return pr["final_sparsity"] if pr["method"] != "dense" else 0.0


class StepLog:
    """The step log, one row per step. A step's loss stays on the device until ``flush``
    (on a GPU, one synchronisation for many steps); a non-finite loss stops the run there."""

    def __init__(self, run: Run, rows: list[dict], start_step: int, elapsed_before: float, resumed_from: int | None):
        self.run, self.rows = run, rows
        self.start_step, self.elapsed_before, self.resumed_from = start_step, elapsed_before, resumed_from
        self.last_ckpt = None if resumed_from is None else (resumed_from, run.ckpt_path)
        self.compute = rows[-1]["compute"] if rows else 0.0
        self.pending: list[tuple[int, torch.Tensor, float, int]] = []

    def add(self, step: int, loss: torch.Tensor, lr: float, n_nonzero: int) -> None:
        self.pending.append((step, loss.detach(), lr, n_nonzero))

    def flush(self) -> None:
        if not self.pending:
            return
        tokens_per_step, n_prunable = self.run.tokens_per_step, self.run.n_prunable
        losses = self.run.dist.mean(torch.stack([p[1] for p in self.pending]).float()).tolist()
        for (step, _, lr, n_nonzero), loss in zip(self.pending, losses):
            if not math.isfinite(loss):
                where = f"{self.last_ckpt[1]} (step {self.last_ckpt[0]})" if self.last_ckpt else "none (no checkpoint written yet)"
                raise TrainingDiverged(f"non-finite training loss ({loss}) at step {step + 1}; last good checkpoint: {where}")
            self.compute += 6.0 * n_nonzero * tokens_per_step
            tokens = (step + 1) * tokens_per_step
            self.rows.append(
                {"step": step + 1, "tokens": tokens, "lr": lr, "train_loss": loss, "val_loss": float("nan"),
                 "density": n_nonzero / n_prunable, "n_nonzero": n_nonzero, "compute": self.compute,
                 "n_avg": self.compute / (6.0 * tokens)}
            )
        self.pending.clear()


def run_training(
    spec: dict,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    init_from: str | os.PathLike | None = None,
    threads: int | None = None,
    step_times: list[float] | None = None,
) -> dict | None:
    """Train one run; returns the metrics (rank 0) or None (other DDP ranks).

    ``step_times`` (benchmarks): if given, ``time.perf_counter()`` is appended after every
    step, so per-step times of the real loop can be measured.
    """
    spec = validate_spec(spec)
    if threads is not None:
        spec["training"]["threads"] = int(threads)
    dist = _Dist(spec["training"]["device"])
    try:
        run = set_up(spec, data_dir, Path(out_dir), init_from, dist)
        step_log = resume_or_init(run)
        model = wrap_model(run)
        curve_windows, final_windows = eval_windows(run)
        t0 = time.perf_counter()
        step_s = train(run, model, step_log, curve_windows, step_times)
        final_eval = final_evaluation(run, step_log.rows, curve_windows, final_windows)
        wall_s = step_log.elapsed_before + time.perf_counter() - t0
        if not dist.main:
            return None
        metrics = run_metrics(run, step_log, final_eval, step_s, wall_s)
        write_outputs(run, step_log.rows, metrics)
        run.ckpt_path.unlink(missing_ok=True)
        log.info(
            "done: final val loss %.4f, sparsity %.4f (target %.4f), N_final %d, N_avg %.0f, %.0f tokens/s (training steps), "
            "MFU %s, %.1f s",
            metrics["final_val_loss"], metrics["sparsity"], run.target_sparsity, metrics["n_final"], metrics["n_avg"],
            metrics["train_tokens_per_s"] or 0,
            "n/a (no peak known for this device)" if metrics["mfu"] is None else f"{metrics['mfu']:.1%}", wall_s,
        )
        return metrics
    finally:
        dist.close()


def train(run: Run, model: torch.nn.Module, step_log: StepLog, curve_windows: tuple, step_times: list | None) -> float:
    """The training loop, from the step log's start to the last step; returns the seconds spent
    in training steps (evaluation and checkpoints inside the loop left out)."""
    tr, pruner, total_steps = run.tr, run.pruner, run.total_steps
    events = dict(run.schedule.events)
    n_nonzero = pruner.n_nonzero_prunable()
    flush_each_step = run.device.type == "cpu"
    t0 = time.perf_counter()
    t_log, tok_log = t0, 0
    side_s = 0.0  # evaluation and checkpoint time inside the loop, left out of throughput
    step = step_log.start_step
    while step < total_steps:
        if step in events:
            pruner.prune_to(events[step], run.optimizer)
            n_nonzero = pruner.n_nonzero_prunable()
        lr = lr_at(step, total_steps, tr["lr"], run.warmup_steps, tr["min_lr_fraction"])
        loss = optimisation_step(run, model, step, lr)
        step_log.add(step, loss, lr, n_nonzero)
        step += 1
        if step_times is not None:
            step_times.append(time.perf_counter())

        is_eval = step % tr["eval_every"] == 0 and step < total_steps
        is_ckpt = step % tr["checkpoint_every"] == 0 and step < total_steps
        is_log = step % tr["log_every"] == 0
        if flush_each_step or is_eval or is_ckpt or is_log:
            step_log.flush()
        if is_eval:
            t_eval = time.perf_counter()  # flush() synchronised the device, so this times eval alone
            step_log.rows[-1]["val_loss"] = evaluate(run.raw, *curve_windows, run.micro_rows, run.device)
            side_s += time.perf_counter() - t_eval
        if is_log and run.dist.main:
            now, tokens = time.perf_counter(), (step - step_log.start_step) * run.tokens_per_step
            log.info(
                "step %d/%d loss %.4f%s lr %.2e density %.4f tok/s %.0f",
                step, total_steps, step_log.rows[-1]["train_loss"],
                f" val {step_log.rows[-1]['val_loss']:.4f}" if is_eval else "", lr, n_nonzero / run.n_prunable,
                (tokens - tok_log) / max(now - t_log, 1e-9),
            )
            t_log, tok_log = now, tokens
        if is_ckpt:
            t_ckpt = time.perf_counter()
            if run.dist.main:
                save_checkpoint(run, step, step_log.rows, step_log.elapsed_before + time.perf_counter() - t0)
            step_log.last_ckpt = (step, run.ckpt_path)
            side_s += time.perf_counter() - t_ckpt
    step_log.flush()
    return time.perf_counter() - t0 - side_s


def optimisation_step(run: Run, model: torch.nn.Module, step: int, lr: float) -> torch.Tensor:
    """One AdamW step at ``lr`` on batch (seed, step), its gradient the mean over the batch's
    micro-batches; pruned weights get no gradient. Returns the batch's loss, on the device."""
    tr, device = run.tr, run.device
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    x, y = run.shards.batch("train", seed=run.spec["seed"], step=step, batch_size=tr["batch_size"], seq_len=tr["seq_len"])
    if run.dist.world > 1:
        x, y = x[run.rank_rows], y[run.rank_rows]
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    loss = torch.zeros((), device=device)
    for i in range(run.accum_steps):
        rows = slice(i * run.micro_rows, (i + 1) * run.micro_rows)
        # DDP all-reduces gradients once per step, on the last micro-batch
        last = i == run.accum_steps - 1 or run.dist.world == 1
        with contextlib.nullcontext() if last else model.no_sync():
            with _autocast(device):
                loss_i = model(x[rows], y[rows]) / run.accum_steps
            loss_i.backward()
        loss += loss_i.detach()
    run.pruner.mask_grads()
    if tr["grad_clip"] is not None:
        torch.nn.utils.clip_grad_norm_(run.params, tr["grad_clip"], foreach=True)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss


# ----------------------------------------------------------------------------- set-up


def set_up(spec: dict, data_dir: str | os.PathLike, out_dir: Path, init_from: str | os.PathLike | None,
           dist: _Dist) -> Run:
    """Device, data, the seeded model, pruner, optimizer and step counts; checks what the spec
    asks against the data, the model and the number of ranks."""
    from sparsescale.data.loader import TokenShards

    tr, pr = spec["training"], spec["pruning"]
    device = dist.device(tr["device"])
    if device.type == "cpu":
        torch.set_num_threads(tr["threads"])
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if tr["batch_size"] % dist.world:
        raise InputError(f"spec.training.batch_size: {tr['batch_size']} is not divisible by WORLD_SIZE {dist.world}")
    local_rows = tr["batch_size"] // dist.world
    micro_rows = tr["micro_batch_size"] or local_rows
    if local_rows % micro_rows:
        raise InputError(
            f"spec.training.micro_batch_size: {micro_rows} does not divide the per-device batch "
            f"{local_rows} (batch_size {tr['batch_size']} / WORLD_SIZE {dist.world})"
        )
    if pr["init"] == "dense" and init_from is None and not (out_dir / CHECKPOINT).is_file():
        raise InputError("spec.pruning.init: 'dense' needs --init-from MODEL_PT (the trained dense model)")

    shards = TokenShards(data_dir, verify=True)
    cfg = ModelConfig(vocab_size=shards.vocab_size, max_seq_len=tr["seq_len"],
                      **{k: spec["model"][k] for k in ("d_model", "n_layers", "n_heads", "d_ff")})
    torch.manual_seed(spec["seed"])
    np.random.seed(spec["seed"])
    random.seed(spec["seed"])
    raw = Transformer(cfg).to(device)
    counts = param_counts(raw)
    budget_tokens, total_steps = budget_steps(spec["budget_spec"], counts["n_prunable"], tr["batch_size"] * tr["seq_len"])
    try:
        schedule = build_schedule(pr, total_steps)
    except ValueError as err:
        raise InputError(f"spec.pruning: {err}") from err
    if pr["method"] == "nm":
        bad = [n for n, m in raw.named_modules() if isinstance(m, torch.nn.Linear) and m.in_features % pr["m"]]
        if bad:
            raise InputError(f"spec.pruning.m: {pr['m']} does not divide the input width of {bad[0]}")
    return Run(
        spec=spec, out_dir=out_dir, data_dir=str(data_dir), init_from=None if init_from is None else str(init_from),
        dist=dist, device=device, shards=shards, cfg=cfg, raw=raw, params=list(raw.parameters()), counts=counts,
        pruner=pruner_for_model(raw, pr), optimizer=make_optimizer(raw, tr), schedule=schedule,
        budget_tokens=budget_tokens, total_steps=total_steps, warmup_steps=round(tr["warmup_fraction"] * total_steps),
        micro_rows=micro_rows, accum_steps=local_rows // micro_rows,
        rank_rows=slice(dist.rank * local_rows, (dist.rank + 1) * local_rows),
    )


def wrap_model(run: Run) -> torch.nn.Module:
    """The model the steps call: DDP across ranks, then torch.compile, as the spec asks."""
    model: torch.nn.Module = run.raw
    if run.dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(run.raw, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if run.tr["compile"]:
        import torch._dynamo as dynamo

        # a machine where inductor cannot build its kernels (no C++ compiler) trains eagerly
        dynamo.config.suppress_errors = True
        if run.device.type == "cpu":
            _quick_cpu_compile_start()
        _compile_cache_per_isa(run.device)
        model = torch.compile(model)
    return model


def eval_windows(run: Run) -> tuple[tuple, tuple]:
    """The validation windows of the loss curve, and those of the final loss: a large fixed
    set (the whole split by default), the same tokens for every run of the corpus, so
    schedules compare on identical text."""
    tr, seq_len = run.tr, run.tr["seq_len"]
    curve = run.shards.fixed_windows("val", tr["eval_windows"], seq_len, seed=0)
    n_final = run.shards.num_tokens("val") if tr["final_eval_tokens"] is None else -(-tr["final_eval_tokens"] // seq_len)
    final = run.shards.fixed_windows("val", n_final, seq_len, seed=0)
    if run.dist.main:
        log.info(
            "run %s: N=%d prunable, %d embedding, %d total; %d steps x %d tokens; %d pruning events (%s)",
            run.spec.get("run_id"), run.n_prunable, run.counts["n_embedding"], run.counts["n_total"], run.total_steps,
            run.tokens_per_step, len(run.schedule.events), run.spec["pruning"]["method"],
        )
    return curve, final


# ----------------------------------------------------------------------------- resume and save


def resume_or_init(run: Run) -> StepLog:
    """Resume from the run's checkpoint if there is one, else start from ``--init-from``'s
    weights or the seeded initialisation; returns the step log to continue."""
    rows, start_step, elapsed_before, resumed_from = [], 0, 0.0, None
    for stale in run.out_dir.glob(f".{CHECKPOINT}.*.tmp") if run.dist.main else ():
        stale.unlink(missing_ok=True)  # left by a killed checkpoint write
    if run.ckpt_path.is_file():
        ckpt = load_checkpoint(run)
        rows = ckpt["rows"]
        start_step = resumed_from = int(ckpt["step"])
        elapsed_before = float(ckpt["elapsed_s"])
        log.info("resuming from %s at step %d of %d", run.ckpt_path, start_step, run.total_steps)
    elif run.init_from is not None:
        load_init(run, Path(run.init_from))
        log.info("initialised from %s", run.init_from)
    run.pruner.mask_weights()
    return StepLog(run, rows, start_step, elapsed_before, resumed_from)


def _fingerprint(spec: dict, init_from: str | None) -> str:
    """What a checkpoint must agree with to be resumed (everything that changes the numbers)."""
    training = {k: v for k, v in spec["training"].items() if k not in RUNTIME_KEYS}
    key = {k: spec[k] for k in ("seed", "model", "budget_spec", "pruning")}
    key["training"] = training
    key["init_from"] = bool(init_from)
    return json.dumps(key, sort_keys=True)


def save_checkpoint(run: Run, step: int, rows: list[dict], elapsed_s: float) -> None:
    """Everything the remaining steps read: weights, AdamW state, masks, the step log, RNG states."""
    save_verified(run.ckpt_path, {
        "step": step, "model": run.raw.state_dict(), "optimizer": run.optimizer.state_dict(),
        "pruner": run.pruner.state_dict(), "rows": rows, "rng": _rng_state(),
        "fingerprint": _fingerprint(run.spec, run.init_from), "elapsed_s": elapsed_s,
    })


def load_checkpoint(run: Run) -> dict:
    """Load the run's checkpoint into its model, optimizer, pruner and RNGs; refuse one that
    cannot be verified or was written for another spec."""
    ckpt = load_verified(run.ckpt_path, RESTART, map_location=run.device)
    if ckpt.get("fingerprint") != _fingerprint(run.spec, run.init_from):
        raise CheckpointError(f"{run.ckpt_path}: written for a different spec; {RESTART}")
    run.raw.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.pruner.load_state_dict(ckpt["pruner"])
    _set_rng_state(ckpt["rng"])
    return ckpt


def _rng_state() -> dict:
    # numpy's state as plain values: a checkpoint holds tensors and plain containers only
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, cached_gaussian],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    # the checkpoint was loaded onto the training device; generators take their states on the CPU
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def load_init(run: Run, path: Path) -> None:
    """Start from the weights of a trained dense run's ``model.pt`` (``--init-from``)."""
    if not path.is_file():
        raise InputError(f"--init-from: {path} not found")
    state = load_verified(path, f"rerun the dense run that writes it (delete {path} first)", map_location=run.device)
    if "model" not in state:
        raise InputError(f"--init-from: {path} is not a sparsescale model.pt (no 'model' entry)")
    saved = state.get("model_config", {})
    for key in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff"):
        if key in saved and saved[key] != getattr(run.cfg, key):
            raise InputError(f"--init-from: {path} has model {key}={saved[key]}, this run needs {getattr(run.cfg, key)}")
    try:
        run.raw.load_state_dict(state["model"])
    except RuntimeError as err:
        raise InputError(f"--init-from: {path} does not fit this model ({err})") from err


# ----------------------------------------------------------------------------- the end of a run


def final_evaluation(run: Run, rows: list[dict], curve_windows: tuple, final_windows: tuple) -> dict:
    """The pruning event at the end of training if any, then the final loss (with its standard
    errors) and the curve's last point; checks the sparsity reached."""
    events = dict(run.schedule.events)
    if run.total_steps in events:
        run.pruner.prune_to(events[run.total_steps], run.optimizer)
    # forward only: on a CPU, larger batches than training's run faster
    final_eval = evaluate_precisely(run.raw, *final_windows, run.micro_rows * (4 if run.device.type == "cpu" else 1),
                                    run.device)
    if not math.isfinite(final_eval["loss"]):
        raise TrainingDiverged(f"non-finite final validation loss ({final_eval['loss']}) at step {run.total_steps}")
    rows[-1]["val_loss"] = evaluate(run.raw, *curve_windows, run.micro_rows, run.device)  # the curve stays on its windows
    errors = run.pruner.check(run.target_sparsity) if run.pruner.active else []
    if errors:
        raise RuntimeError("achieved sparsity is off target by more than one weight: " + "; ".join(errors))
    return final_eval


def run_metrics(run: Run, step_log: StepLog, final_eval: dict, step_s: float, wall_s: float) -> dict:
    """metrics.json: the run's losses, sizes, compute, speed and provenance."""
    spec, pr, rows, device = run.spec, run.spec["pruning"], step_log.rows, run.device
    n_final = run.pruner.n_nonzero_prunable()
    tokens = run.total_steps * run.tokens_per_step
    device_name = _device_name(device)
    trained = run.total_steps - step_log.start_step
    train_tokens_per_s = trained * run.tokens_per_step / step_s if step_s > 0 else None
    model_flops_per_token = flops_per_token(run.cfg, run.tr["seq_len"])
    model_flops_per_s = None if train_tokens_per_s is None else train_tokens_per_s * model_flops_per_token
    peak = peak_flops(device_name, run.tr["peak_flops"])
    has_events = bool(run.schedule.events)
    return {
        "run_id": spec["run_id"], "corpus": spec["corpus"], "scale": spec["scale"], "budget": spec["budget"],
        "schedule": spec["schedule"], "seed": spec["seed"], "method": pr["method"], "shape": pr["shape"],
        "target_sparsity": run.target_sparsity, "start": pr["start"], "end": pr["end"],
        "start_step": run.schedule.start_step if has_events else None,
        "end_step": run.schedule.end_step if has_events else None,
        "final_val_loss": final_eval["loss"], "final_val_loss_se": final_eval["se_token"],
        "final_val_loss_se_window": final_eval["se_window"], "final_val_tokens": final_eval["tokens"],
        "final_train_loss": rows[-1]["train_loss"],
        "n_prunable": run.n_prunable, "n_final": n_final, "n_avg": rows[-1]["n_avg"],
        "n_embedding": run.counts["n_embedding"], "n_embedding_nonzero": _embedding_nonzero(run.pruner, run.counts),
        "n_total": run.counts["n_total"], "tokens": tokens, "budget_tokens": run.budget_tokens, "steps": run.total_steps,
        "compute": rows[-1]["compute"], "sparsity": 1.0 - n_final / run.n_prunable,
        "mean_density": float(np.array([r["density"] for r in rows]).mean()),
        "epochs": run.shards.epochs("train", tokens), "wall_time_s": wall_s, "tokens_per_s": tokens / wall_s if wall_s > 0 else None,
        "train_tokens_per_s": train_tokens_per_s, "model_flops_per_token": model_flops_per_token,
        "model_flops_per_s": model_flops_per_s, "peak_flops": peak,
        "mfu": None if model_flops_per_s is None else mfu(model_flops_per_s, peak, run.dist.world),
        "device": device_name, "sparsity_per_layer": run.pruner.sparsity_per_layer(),
        "schedule_events": run.schedule.to_dict(), "spec": spec, "versions": _versions(),
        "provenance": {
            "host": socket.gethostname(), "git": git_state(Path(__file__).resolve().parent),
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "world_size": run.dist.world, "resumed_from_step": step_log.resumed_from, "init_from": run.init_from,
            "data_dir": run.data_dir, "data_sha256": run.shards.manifest.get("sha256"), "argv": ["sparsescale", *sys.argv[1:]],
            "compile": run.tr["compile"], "dtype": "bfloat16-autocast" if device.type == "cuda" else "float32",
            # the CPU kernels' vector ISA: floats differ in the last bits between ISAs
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
    }


def write_outputs(run: Run, rows: list[dict], metrics: dict) -> None:
    """steps.parquet, config.json, model.pt and, last, metrics.json (each written atomically)."""
    import pandas as pd

    run.out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["step", "tokens", "lr", "train_loss", "val_loss", "density", "n_nonzero", "compute", "n_avg"])
    frame = frame.astype({"step": "int64", "tokens": "int64", "n_nonzero": "int64"})
    write_parquet(run.out_dir / "steps.parquet", frame)
    write_json(run.out_dir / "config.json", run.spec)  # the resolved spec (usable again as --spec)
    save_verified(run.out_dir / "model.pt", {
        "model": {k: v.detach().cpu() for k, v in run.raw.state_dict().items()},
        "masks": run.pruner.state_dict()["masks"], "model_config": run.cfg.to_dict(), "spec": run.spec,
    })
    write_json(run.out_dir / "metrics.json", metrics)


def _embedding_nonzero(pruner, counts: dict) -> int:
    mk = pruner.masks.get("tok_emb.weight")
    return counts["n_embedding"] if mk is None else int(torch.count_nonzero(mk))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def schedule_preview(spec: dict, n_prunable: int) -> Schedule:
    """The pruning events a spec gives for a model with ``n_prunable`` weights (no training)."""
    spec = validate_spec(spec)
    tr = spec["training"]
    _, total_steps = budget_steps(spec["budget_spec"], n_prunable, tr["batch_size"] * tr["seq_len"])
    return build_schedule(spec["pruning"], total_steps)


def budget_steps(budget_spec: dict, n_prunable: int, tokens_per_step: int) -> tuple[float, int]:
    """The budget in tokens (absolute, or tokens per prunable parameter of the dense model) and
    the optimizer steps that cover it: at least one, so a run trains ``steps * tokens_per_step``."""
    budget_tokens = budget_spec["tokens"] if "tokens" in budget_spec else budget_spec["tokens_per_param"] * n_prunable
    return budget_tokens, max(1, math.ceil(budget_tokens / tokens_per_step))
