"""Pruning: schedules (how much, when) kept apart from selectors (which weights), and masks.

Schedules
---------
An *event* happens at a step boundary ``b`` (0 <= b <= total_steps): after ``b`` optimizer
steps and before step ``b`` (0-based) trains. Events fall at ``start_step, start_step +
every, ...`` and always at ``end_step`` (the last one, which lands exactly on the target).

- ``geometric`` (paper A): ``n`` events each remove the same fraction
  ``p = 1 - (1 - s)^(1/n)`` of the surviving weights, so after event ``k`` (1-based) the
  density is ``(1 - s)^(k/n)``. The first event is at ``start_step``.
- ``cubic`` (paper B, Zhu & Gupta): ``s_t = s (1 - (1 - progress)^3)`` with progress
  linear from 0 at ``start_step`` to 1 at ``end_step``.

With ``basis: steps`` the boundaries are ``round(start * T)`` and ``round(end * T)``. With
``basis: compute`` start and end are fractions of the run's total training compute, where
a step costs compute proportional to the density it trains at; since compute depends on
the schedule, the boundaries are solved by fixed-point iteration on the integer step
boundaries (``solve_compute_boundaries``).

Selectors
---------
All selectors prune the ``k`` smallest-scoring *live* weights of a group (no regrowth:
already-pruned weights stay pruned), with exact tie-breaking, so the pruned count is
exactly ``round(s * size)``:

- ``global``: one magnitude threshold over every prunable linear incl. the LM head. The
  threshold is found by bisection on the float32 bit pattern of the magnitude (monotone
  for non-negative floats, at most 32 passes); every pass counts ``|w| <= v`` layer by
  layer, so no tensor larger than one layer is ever allocated: nothing is concatenated.
  Ties at the threshold are broken in layer order, then flat index order.
- ``uniform``: the same procedure per layer, each layer at the same sparsity.
- ``nm``: n:m semi-structured along the input dimension. Within every group of ``m``
  consecutive weights only the ``m - n`` smallest are candidates; at each event the layer's
  ``round(s * size)`` smallest candidates are pruned. At the final sparsity ``1 - n/m``
  every candidate is pruned, which is exactly the n:m pattern. Intermediate events prune
  unstructured within that constraint (no group ever drops below ``n`` survivors).
- ``embedding_sparsity: sqrt`` (paper B): the token embedding and the LM head are pruned
  per layer (magnitude) at ``1 - sqrt(1 - s_t)``; the other linears follow the method.

Masks live in the parameters' dtype and device and are applied in place
(``torch._foreach_mul_``): to gradients before every optimizer step, and to weights and
Adam's moments at every event. A pruned weight then has a zero gradient and zero moments,
so AdamW (decoupled decay of zero, an update of 0 / eps) leaves it exactly zero without a
second pass over the weights every step; ``check`` verifies it. Masks are recomputed only
at events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

METHODS = ("dense", "global", "uniform", "nm")
SHAPES = ("geometric", "cubic")
BASES = ("compute", "steps")
EMBEDDING_SPARSITY = ("none", "sqrt")


# ----------------------------------------------------------------------------- schedule math


def geometric_fraction(final_sparsity: float, n_events: int) -> float:
    """Fraction of surviving weights each of ``n_events`` geometric events removes."""
    if n_events < 1:
        raise ValueError("n_events must be >= 1")
    return 1.0 - (1.0 - final_sparsity) ** (1.0 / n_events)


def geometric_mean_density(final_density: float) -> float:
    """Mean density over a continuous geometric prune from 1 to ``final_density``: (1-d)/ln(1/d)."""
    if final_density >= 1.0:
        return 1.0
    if final_density <= 0.0:
        return 0.0
    return (1.0 - final_density) / math.log(1.0 / final_density)


def cubic_sparsity(final_sparsity: float, progress: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return final_sparsity * (1.0 - (1.0 - progress) ** 3)


def event_boundaries(start_step: int, end_step: int, every: int) -> list[int]:
    """Event step boundaries: start, start+every, ..., and end (always the last)."""
    if end_step < start_step:
        raise ValueError(f"end_step {end_step} < start_step {start_step}")
    out = list(range(start_step, end_step, every))
    if not out or out[-1] != end_step:
        out.append(end_step)
    return out


def event_sparsities(shape: str, final_sparsity: float, boundaries: list[int]) -> list[float]:
    """Target sparsity after each event; the last is exactly ``final_sparsity``."""
    n = len(boundaries)
    if shape == "geometric":
        out = [1.0 - (1.0 - final_sparsity) ** (k / n) for k in range(1, n + 1)]
    elif shape == "cubic":
        a, b = boundaries[0], boundaries[-1]
        out = [cubic_sparsity(final_sparsity, 1.0 if b == a else (e - a) / (b - a)) for e in boundaries]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    out[-1] = final_sparsity
    return out


@dataclass
class Schedule:
    """Pruning events of one run: ``events[i] = (boundary, target_sparsity)``."""

    total_steps: int
    start_step: int = 0
    end_step: int = 0
    events: list[tuple[int, float]] = field(default_factory=list)

    def event_at(self, boundary: int) -> float | None:
        """Target sparsity of the event at ``boundary``, or None."""
        for b, s in self.events:
            if b == boundary:
                return s
        return None

    def sparsity_per_step(self) -> np.ndarray:
        """Nominal sparsity each step (0-based) trains at."""
        return sparsity_per_step(self.events, self.total_steps)

    def density_per_step(self) -> np.ndarray:
        return 1.0 - self.sparsity_per_step()

    def compute_fraction(self, boundary: int) -> float:
        dens = self.density_per_step()
        total = dens.sum()
        return float(dens[:boundary].sum() / total) if total > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "total_steps": self.total_steps,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "events": [[int(b), float(s)] for b, s in self.events],
        }


def sparsity_per_step(events: list[tuple[int, float]], total_steps: int) -> np.ndarray:
    """Each step trains at the sparsity of the last event at or before it (0 before the first);
    one search over the ascending boundaries, so a 50k-step schedule of 500 events is cheap."""
    if not events:
        return np.zeros(total_steps, dtype=np.float64)
    bounds = np.array([b for b, _ in events])
    levels = np.concatenate([[0.0], [s for _, s in events]])
    return levels[np.searchsorted(bounds, np.arange(total_steps), side="right")].astype(np.float64)


def _events(shape: str, final_sparsity: float, a: int, b: int, every: int) -> list[tuple[int, float]]:
    bounds = event_boundaries(a, b, every)
    return list(zip(bounds, event_sparsities(shape, final_sparsity, bounds)))


def solve_compute_boundaries(
    shape: str, final_sparsity: float, start: float, end: float, every: int, total_steps: int, max_iter: int = 100
) -> tuple[int, int]:
    """Integer step boundaries (a, b) whose compute fractions are closest to (start, end).

    A step's compute is proportional to its density, and the densities depend on (a, b):
    iterate (a, b) <- (steps where the cumulative compute fraction is nearest start / end)
    to a fixed point, then polish over a small neighbourhood; keep the best residual seen.
    """
    T = total_steps
    if T < 1:
        raise ValueError("total_steps must be >= 1")

    def fractions(a: int, b: int) -> np.ndarray:
        dens = 1.0 - sparsity_per_step(_events(shape, final_sparsity, a, b, every), T)
        cum = np.concatenate([[0.0], np.cumsum(dens)])
        return cum / cum[-1]

    def nearest(frac: np.ndarray, target: float) -> int:
        i = int(np.searchsorted(frac, target))
        cands = [j for j in (i - 1, i) if 0 <= j <= T]
        return min(cands, key=lambda j: (abs(frac[j] - target), j))

    def residual(a: int, b: int) -> float:
        f = fractions(a, b)
        return abs(f[a] - start) + abs(f[b] - end)

    a, b = round(start * T), round(end * T)
    seen: dict[tuple[int, int], float] = {}
    for _ in range(max_iter):
        if (a, b) in seen:
            break
        f = fractions(a, b)
        seen[(a, b)] = abs(f[a] - start) + abs(f[b] - end)
        na = nearest(f, start)
        nb = max(nearest(f, end), na)
        a, b = na, nb
    best = min(seen, key=lambda ab: (seen[ab], ab))
    a0, b0 = best
    for da in (-2, -1, 0, 1, 2):
        for db in (-2, -1, 0, 1, 2):
            a, b = a0 + da, b0 + db
            if 0 <= a <= b <= T and (a, b) not in seen:
                seen[(a, b)] = residual(a, b)
    return min(seen, key=lambda ab: (seen[ab], ab))


def build_schedule(pruning: dict, total_steps: int) -> Schedule:
    """The run's schedule from a validated pruning spec."""
    if pruning["method"] == "dense" or not pruning.get("final_sparsity"):
        return Schedule(total_steps=total_steps)
    s = float(pruning["final_sparsity"])
    shape, every = pruning["shape"], int(pruning["every"])
    if pruning["basis"] == "steps":
        a, b = round(pruning["start"] * total_steps), round(pruning["end"] * total_steps)
    else:
        a, b = solve_compute_boundaries(shape, s, pruning["start"], pruning["end"], every, total_steps)
    return Schedule(total_steps=total_steps, start_step=a, end_step=b, events=_events(shape, s, a, b, every))


# ----------------------------------------------------------------------------- selectors


def target_count(sparsity: float, size: int) -> int:
    """Number of weights pruned at ``sparsity`` (round half up, exact for representable s)."""
    return int(math.floor(sparsity * size + 0.5))


def _float_from_bits(bits: int) -> float:
    return float(torch.tensor(bits, dtype=torch.int32).view(torch.float32))


def _bits_from_float(x: float) -> int:
    return int(torch.tensor(x, dtype=torch.float32).view(torch.int32))


ScoreFn = Callable[[], torch.Tensor]


@torch.no_grad()
def prune_smallest(scores: list[ScoreFn], masks: list[torch.Tensor], k_add: int) -> None:
    """Prune (set mask 0 for) the ``k_add`` live entries with the smallest score, exactly.

    ``scores[i]()`` returns layer i's non-negative scores with +inf wherever the entry must
    not be pruned (already pruned, or not a candidate); it is called once per bisection pass
    so that only one layer's scores exist at a time. ``masks`` are updated in place.
    Ties at the threshold are pruned in layer order, then flat index order.
    """
    if k_add <= 0:
        return
    available = 0
    hi_val = 0.0
    for fn in scores:
        sc = fn()
        finite = torch.isfinite(sc)
        n = int(finite.sum())
        available += n
        if n:
            hi_val = max(hi_val, float(sc[finite].max()))
        del sc, finite
    if k_add > available:
        raise ValueError(f"cannot prune {k_add} weights: only {available} candidates")

    def count_le(v: float) -> int:
        return sum(int(torch.count_nonzero(fn() <= v)) for fn in scores)

    # smallest v (as a float32 bit pattern) with count(score <= v) >= k_add
    lo, hi = 0, _bits_from_float(hi_val)
    if count_le(_float_from_bits(lo)) >= k_add:
        hi = lo
    while hi - lo > 1:  # invariant: count(<= lo) < k_add <= count(<= hi)
        mid = (lo + hi) // 2
        if count_le(_float_from_bits(mid)) >= k_add:
            hi = mid
        else:
            lo = mid
    v = _float_from_bits(hi)
    remaining = k_add
    for fn, mask in zip(scores, masks):
        sc = fn()
        below = sc < v
        n_below = int(below.sum())
        mask.view(-1)[below.view(-1)] = 0
        remaining -= n_below
        del below
    for fn, mask in zip(scores, masks):
        if remaining <= 0:
            break
        sc = fn()
        ties = torch.nonzero((sc == v).view(-1)).view(-1)[:remaining]
        mask.view(-1)[ties] = 0
        remaining -= ties.numel()
    assert remaining == 0, remaining


def magnitude_score(weight: torch.Tensor, mask: torch.Tensor) -> ScoreFn:
    inf = torch.tensor(float("inf"), dtype=torch.float32, device=weight.device)

    def fn() -> torch.Tensor:
        return torch.where(mask != 0, weight.detach().float().abs(), inf)

    return fn


def nm_score(weight: torch.Tensor, mask: torch.Tensor, n: int, m: int) -> ScoreFn:
    """Magnitude, restricted to the m-n smallest (pruned first) of every m along the input dim."""
    out_f, in_f = weight.shape
    if in_f % m:
        raise ValueError(f"n:m pruning needs in_features ({in_f}) divisible by m ({m})")
    w = weight.detach().float().abs().view(out_f, in_f // m, m)
    alive = (mask != 0).view(out_f, in_f // m, m)
    ranked = torch.where(alive, w, torch.full_like(w, -1.0))
    order = torch.argsort(ranked, dim=-1, stable=True)
    candidate = torch.zeros_like(alive)
    candidate.scatter_(-1, order[..., : m - n], True)
    score = torch.where(candidate & alive, w, torch.full_like(w, float("inf"))).view(out_f, in_f)
    del w, alive, ranked, order, candidate
    return lambda: score


# ----------------------------------------------------------------------------- pruner


@dataclass
class _Group:
    """Layers pruned together at one sparsity by one selector."""

    names: list[str]
    kind: str  # "global" | "uniform" | "nm"
    sqrt: bool = False  # at 1 - sqrt(1 - s) (embedding / head under embedding_sparsity: sqrt)


def pruning_groups(linear_names: list[str], head_name: str, embedding_name: str | None, method: str,
                   embedding_sparsity: str = "none") -> list[_Group]:
    """The groups a method prunes together: ``global`` one group over every linear, ``uniform``
    and ``nm`` one per linear; ``embedding_sparsity: sqrt`` moves the head (and adds the
    embedding) into per-layer groups at 1 - sqrt(1 - s)."""
    if method == "dense":
        return []
    body = [x for x in linear_names if not (embedding_sparsity == "sqrt" and x == head_name)]
    groups = [_Group(body, "global")] if method == "global" else [_Group([x], method) for x in body]
    if embedding_sparsity == "sqrt":
        groups.append(_Group([head_name], "uniform", sqrt=True))
        if embedding_name is not None:
            groups.append(_Group([embedding_name], "uniform", sqrt=True))
    return groups


def planned_nonzero(sizes: dict[str, int], linear_names: list[str], groups: list[_Group], sparsity: float) -> int:
    """Non-zero prunable (linear) weights once ``Pruner.prune_to(sparsity)`` has run from a
    dense start: every group then has exactly ``target_count`` of its weights pruned, so the
    count follows from the layer sizes alone (planning; no weights needed)."""
    linear = set(linear_names)
    nonzero = sum(sizes[x] for x in linear_names)
    for g in groups:
        if g.names[0] in linear:
            nonzero -= target_count(Pruner.group_sparsity(g, sparsity), sum(sizes[x] for x in g.names))
    return nonzero


class Pruner:
    """Masks for a model's prunable weights, the events that update them, and their accounting.

    ``params`` maps weight name -> parameter (prunable linears incl. head, then optionally the
    embedding). Only weights under some group get a mask.
    """

    def __init__(
        self,
        params: dict[str, torch.nn.Parameter],
        linear_names: list[str],
        head_name: str,
        embedding_name: str | None,
        method: str,
        n: int | None = None,
        m: int | None = None,
        embedding_sparsity: str = "none",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown pruning method {method!r}")
        self.params = params
        self.linear_names = list(linear_names)
        self.method, self.n, self.m = method, n, m
        self.groups = pruning_groups(linear_names, head_name, embedding_name, method, embedding_sparsity)
        names = [x for g in self.groups for x in g.names]
        self.masks: dict[str, torch.Tensor] = {x: torch.ones_like(params[x], memory_format=torch.contiguous_format) for x in names}
        self._weights = [params[x] for x in names]
        self._masks = [self.masks[x] for x in names]
        self.current_sparsity = 0.0

    @property
    def active(self) -> bool:
        return bool(self.masks)

    # -- in place, no allocation: weights at events and on load, gradients every step
    @torch.no_grad()
    def mask_weights(self) -> None:
        if self._masks:
            torch._foreach_mul_(self._weights, self._masks)

    @torch.no_grad()
    def mask_grads(self) -> None:
        if not self._masks:
            return
        grads, masks = [], []
        for p, mk in zip(self._weights, self._masks):
            if p.grad is not None:
                grads.append(p.grad)
                masks.append(mk)
        if grads:
            torch._foreach_mul_(grads, masks)

    @torch.no_grad()
    def mask_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        for p, mk in zip(self._weights, self._masks):
            state = optimizer.state.get(p)
            if not state:
                continue
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"):
                buf = state.get(key)
                if isinstance(buf, torch.Tensor) and buf.shape == mk.shape:
                    buf.mul_(mk)

    # -- events
    @staticmethod
    def group_sparsity(group: _Group, s: float) -> float:
        return 1.0 - math.sqrt(1.0 - s) if group.sqrt else s

    @torch.no_grad()
    def prune_to(self, sparsity: float, optimizer: torch.optim.Optimizer | None = None) -> None:
        """One event: every group to its target at ``sparsity``, then mask weights/moments."""
        for g in self.groups:
            s = self.group_sparsity(g, sparsity)
            ws = [self.params[x] for x in g.names]
            ms = [self.masks[x] for x in g.names]
            size = sum(w.numel() for w in ws)
            already = sum(int(mk.numel() - torch.count_nonzero(mk)) for mk in ms)
            k_add = target_count(s, size) - already
            if k_add <= 0:
                continue
            if g.kind == "nm" and not g.sqrt:
                scores = [nm_score(w, mk, self.n, self.m) for w, mk in zip(ws, ms)]
            else:
                scores = [magnitude_score(w, mk) for w, mk in zip(ws, ms)]
            prune_smallest(scores, ms, k_add)
        self.current_sparsity = sparsity
        self.mask_weights()
        if optimizer is not None:
            self.mask_optimizer_state(optimizer)

    # -- accounting
    def nonzero_counts(self) -> dict[str, int]:
        """Non-zero (unmasked) count per masked weight (exact, from the masks)."""
        return {x: int(torch.count_nonzero(mk)) for x, mk in self.masks.items()}

    def n_nonzero_prunable(self) -> int:
        total = 0
        for x in self.linear_names:
            mk = self.masks.get(x)
            total += self.params[x].numel() if mk is None else int(torch.count_nonzero(mk))
        return total

    def sparsity_per_layer(self) -> dict[str, float]:
        out = {}
        for x, p in self.params.items():
            mk = self.masks.get(x)
            out[x] = 0.0 if mk is None else 1.0 - int(torch.count_nonzero(mk)) / p.numel()
        return out

    def check(self, sparsity: float) -> list[str]:
        """Errors where a group is more than one weight off its target at ``sparsity``, or
        a pruned weight is not zero.

        ``global`` groups are checked as a whole; per-layer groups layer by layer; ``nm``
        layers also for the exact pattern (n non-zeros in every m) at the final sparsity.
        """
        errors = []
        for x, mk in self.masks.items():
            n_live = int(torch.count_nonzero(self.params[x].detach()[mk == 0]))
            if n_live:
                errors.append(f"{x}: {n_live} pruned weights are not zero")
        for g in self.groups:
            s = self.group_sparsity(g, sparsity)
            size = sum(self.params[x].numel() for x in g.names)
            pruned = sum(int(self.masks[x].numel() - torch.count_nonzero(self.masks[x])) for x in g.names)
            if abs(pruned - s * size) > 1.0:
                errors.append(f"{'+'.join(g.names) if len(g.names) < 4 else g.kind}: pruned {pruned} of {size}, target {s * size:.1f}")
            if g.kind == "nm" and not g.sqrt and abs(sparsity - (1 - self.n / self.m)) < 1e-12:
                for x in g.names:
                    mk = self.masks[x]
                    per_group = (mk != 0).view(mk.shape[0], -1, self.m).sum(-1)
                    if not bool((per_group == self.n).all()):
                        errors.append(f"{x}: not a {self.n}:{self.m} pattern")
        return errors

    def state_dict(self) -> dict:
        return {"masks": {x: mk.detach().bool().cpu() for x, mk in self.masks.items()}, "current_sparsity": self.current_sparsity}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for x, mk in state["masks"].items():
            if x not in self.masks:
                raise KeyError(f"mask for unknown weight {x}")
            self.masks[x].copy_(mk.to(self.masks[x].dtype))
        self.current_sparsity = float(state.get("current_sparsity", 0.0))


def pruner_for_model(model, pruning: dict) -> Pruner:
    """A ``Pruner`` over a ``sparsescale.model.Transformer``'s weights for a pruning spec."""
    from sparsescale.model import prunable_linears

    linears = prunable_linears(model)
    params = {name: m.weight for name, m in linears}
    params["tok_emb.weight"] = model.tok_emb.weight
    return Pruner(
        params,
        [name for name, _ in linears],
        head_name="lm_head.weight",
        embedding_name="tok_emb.weight",
        method=pruning["method"],
        n=pruning.get("n"),
        m=pruning.get("m"),
        embedding_sparsity=pruning.get("embedding_sparsity") or "none",
    )

