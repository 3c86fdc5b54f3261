"""Pruning schedules (math), selectors (exact counts, ties, patterns) and masks under AdamW."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsescale.model import ModelConfig, Transformer, prunable_linears, prunable_shapes
from sparsescale.pruning import (
    Pruner,
    Schedule,
    build_schedule,
    cubic_sparsity,
    event_boundaries,
    event_sparsities,
    geometric_fraction,
    geometric_mean_density,
    magnitude_score,
    planned_nonzero,
    prune_smallest,
    pruner_for_model,
    pruning_groups,
    solve_compute_boundaries,
    sparsity_per_step,
    target_count,
)
from sparsescale.train import make_optimizer

torch.set_num_threads(1)


def tiny_model(seed: int = 0, vocab: int = 64) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=2, d_ff=96, max_seq_len=16))


# ----------------------------------------------------------------------------- schedule math


@pytest.mark.parametrize("s,n", [(0.5, 10), (0.8, 7), (0.9, 1), (0.2, 50)])
def test_geometric_fraction(s, n):
    p = geometric_fraction(s, n)
    assert p == pytest.approx(1 - (1 - s) ** (1 / n), rel=1e-12)
    assert (1 - p) ** n == pytest.approx(1 - s, rel=1e-12)
    # the event sparsities remove the same fraction of survivors every time
    sp = event_sparsities("geometric", s, list(range(n)))
    dens = np.array([1.0] + [1 - x for x in sp])
    assert np.allclose(dens[1:] / dens[:-1], 1 - p, rtol=1e-10)
    assert sp[-1] == s


def test_geometric_mean_density_formula_and_discrete_limit():
    assert geometric_mean_density(0.5) == pytest.approx(0.5 / math.log(2))
    assert geometric_mean_density(1.0) == 1.0
    # a fine discrete geometric prune from 1 to d over [a, b]: mean density -> (1-d)/ln(1/d)
    d, T = 0.2, 4000
    events = list(zip(event_boundaries(0, T, 1), event_sparsities("geometric", 1 - d, event_boundaries(0, T, 1))))
    dens = 1 - sparsity_per_step(events, T)
    assert dens.mean() == pytest.approx(geometric_mean_density(d), abs=1e-3)
    # and the formula is not the arithmetic mean (the test can tell them apart)
    assert abs(geometric_mean_density(d) - (1 + d) / 2) > 0.05


def test_event_boundaries_and_cubic():
    assert event_boundaries(10, 50, 10) == [10, 20, 30, 40, 50]
    assert event_boundaries(10, 55, 10) == [10, 20, 30, 40, 50, 55]
    assert event_boundaries(7, 7, 10) == [7]
    sp = event_sparsities("cubic", 0.5, [0, 25, 50, 75, 100])
    assert sp[0] == 0.0 and sp[-1] == 0.5
    assert sp[2] == pytest.approx(0.5 * (1 - 0.5**3))
    assert cubic_sparsity(0.8, 0.25) == pytest.approx(0.8 * (1 - 0.75**3))
    assert all(a <= b for a, b in zip(sp, sp[1:]))


@pytest.mark.parametrize("shape", ["geometric", "cubic"])
@pytest.mark.parametrize("s,start,end", [(0.5, 0.25, 0.75), (0.8, 0.0, 0.5), (0.9, 0.5, 1.0), (0.6, 0.3, 0.3)])
def test_compute_fraction_boundaries(shape, s, start, end):
    T = 2000
    a, b = solve_compute_boundaries(shape, s, start, end, 10, T)
    sched = build_schedule(
        {"method": "global", "shape": shape, "final_sparsity": s, "start": start, "end": end, "basis": "compute", "every": 10},
        T,
    )
    assert (sched.start_step, sched.end_step) == (a, b)
    dens = sched.density_per_step()
    cum = np.concatenate([[0.0], np.cumsum(dens)]) / dens.sum()
    # the solved boundaries sit at the requested compute fractions (within one step's compute)
    one_step = 1.0 / dens.sum()
    assert abs(cum[a] - start) <= one_step
    assert abs(cum[b] - end) <= one_step
    assert sched.events[-1] == (b, s)
    if 0 < start < end < 1:
        # sparse steps are cheaper, so compute fractions fall earlier in steps than step fractions
        assert a <= round(start * T) and b < round(end * T)


def test_steps_basis_and_dense_schedule():
    sched = build_schedule(
        {"method": "uniform", "shape": "cubic", "final_sparsity": 0.5, "start": 0.25, "end": 0.75, "basis": "steps", "every": 100},
        1000,
    )
    assert [b for b, _ in sched.events] == [250, 350, 450, 550, 650, 750]
    assert sched.events[-1][1] == 0.5
    assert build_schedule({"method": "dense"}, 100).events == []
    assert Schedule(total_steps=5).density_per_step().tolist() == [1.0] * 5


# ----------------------------------------------------------------------------- selectors


def _quantise(model: Transformer, levels: int = 7) -> None:
    """Make magnitudes collide a lot, to exercise tie-breaking."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p * levels / p.abs().max()))


def _pruned(masks) -> int:
    return sum(int(m.numel() - torch.count_nonzero(m)) for m in masks)


@pytest.mark.parametrize("ties", [False, True])
def test_global_exact_and_matches_reference(ties):
    model = tiny_model()
    if ties:
        _quantise(model)
    weights = [m.weight.detach().clone() for _, m in prunable_linears(model)]
    pruner = pruner_for_model(model, {"method": "global"})
    total = sum(w.numel() for w in weights)
    previous = None
    for s in (0.1, 0.37, 0.5, 0.8123):
        pruner.prune_to(s)
        masks = [pruner.masks[n] for n, _ in prunable_linears(model)]
        assert _pruned(masks) == target_count(s, total)
        assert pruner.check(s) == []
        if previous is not None:  # no regrowth
            for old, new in zip(previous, masks):
                assert bool((new <= old).all())
        previous = [m.clone() for m in masks]
    if not ties:
        # reference: one concatenated stable sort of |w| (what the bisection avoids doing)
        flat = torch.cat([w.abs().flatten() for w in weights])
        order = torch.argsort(flat, stable=True)
        ref = torch.ones_like(flat)
        ref[order[: target_count(0.1, total)]] = 0  # first event on fresh weights
        model2 = tiny_model()
        p2 = pruner_for_model(model2, {"method": "global"})
        p2.prune_to(0.1)
        got = torch.cat([p2.masks[n].flatten() for n, _ in prunable_linears(model2)])
        assert torch.equal(got, ref)


def test_global_never_concatenates(monkeypatch):
    model = tiny_model()
    pruner = pruner_for_model(model, {"method": "global"})
    largest = max(m.weight.numel() for _, m in prunable_linears(model))
    real_cat = torch.cat

    def guarded(tensors, *a, **k):
        assert sum(t.numel() for t in tensors) <= largest, "global selector concatenated weights"
        return real_cat(tensors, *a, **k)

    monkeypatch.setattr(torch, "cat", guarded)
    pruner.prune_to(0.6)
    assert pruner.check(0.6) == []


@pytest.mark.parametrize("ties", [False, True])
def test_uniform_exact_per_layer(ties):
    model = tiny_model()
    if ties:
        _quantise(model, 3)
    pruner = pruner_for_model(model, {"method": "uniform"})
    for s in (0.3, 0.55, 0.9):
        pruner.prune_to(s)
    for name, m in prunable_linears(model):
        mk = pruner.masks[name]
        assert int(mk.numel() - torch.count_nonzero(mk)) == target_count(0.9, mk.numel()), name
        # the kept weights are the largest of that layer
        w = m.weight.detach().abs()
        assert float(w[mk == 0].max()) <= float(w[mk != 0].min())
    assert pruner.check(0.9) == []
    assert pruner.check(0.5) != []  # the check can fail


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4)])
def test_nm_pattern_gradual(n, m):
    model = tiny_model()
    pruner = pruner_for_model(model, {"method": "nm", "n": n, "m": m})
    final = 1 - n / m
    for s in (final * 0.3, final * 0.7, final):
        pruner.prune_to(s)
        for name, _ in prunable_linears(model):
            mk = pruner.masks[name]
            per_group = (mk != 0).view(mk.shape[0], -1, m).sum(-1)
            assert int(per_group.min()) >= n  # never below n survivors in a group
            assert int(mk.numel() - torch.count_nonzero(mk)) == target_count(s, mk.numel())
    for name, lin in prunable_linears(model):
        mk = pruner.masks[name]
        assert bool(((mk != 0).view(mk.shape[0], -1, m).sum(-1) == n).all())
        # in every group the survivors are the n largest magnitudes
        w = lin.weight.detach().abs().view(mk.shape[0], -1, m)
        kept_min = torch.where(mk.view_as(w) != 0, w, torch.inf).min(-1).values
        pruned_max = torch.where(mk.view_as(w) == 0, w, -torch.inf).max(-1).values
        assert bool((pruned_max <= kept_min).all())
    assert pruner.check(final) == []


def test_sqrt_embedding_sparsity():
    model = tiny_model()
    pruner = pruner_for_model(model, {"method": "global", "embedding_sparsity": "sqrt"})
    s = 0.75
    pruner.prune_to(s)
    se = 1 - math.sqrt(1 - s)
    for name in ("tok_emb.weight", "lm_head.weight"):
        mk = pruner.masks[name]
        assert int(mk.numel() - torch.count_nonzero(mk)) == target_count(se, mk.numel())
    body = [pruner.masks[n] for n, _ in prunable_linears(model) if n != "lm_head.weight"]
    assert _pruned(body) == target_count(s, sum(b.numel() for b in body))
    assert pruner.check(s) == []


@pytest.mark.parametrize("spec", [{"method": "global"}, {"method": "uniform"}, {"method": "nm", "n": 1, "m": 4},
                                  {"method": "uniform", "embedding_sparsity": "sqrt"},
                                  {"method": "global", "embedding_sparsity": "sqrt"}, {"method": "dense"}])
def test_planned_nonzero_is_what_the_pruner_reaches(spec):
    """The planner's count from layer sizes alone equals a real pruner's after each event."""
    model = tiny_model(vocab=72)  # a head whose size makes per-layer rounding differ from global
    pruner = pruner_for_model(model, spec)
    shapes = prunable_shapes(model.cfg)
    sizes = {name: rows * cols for name, (rows, cols) in shapes}
    names = [name for name, _ in shapes]
    groups = pruning_groups(names, "lm_head.weight", "tok_emb.weight", spec["method"],
                            spec.get("embedding_sparsity", "none"))
    final = 0.75 if spec["method"] == "nm" else 0.83
    for s in (0.0, 0.137, 0.5, final):
        if spec["method"] != "dense":
            pruner.prune_to(s)
        assert planned_nonzero(sizes, names, groups, s) == pruner.n_nonzero_prunable()


def test_prune_smallest_exact_with_all_ties():
    w = [torch.ones(10), torch.ones(7)]
    masks = [torch.ones(10), torch.ones(7)]
    prune_smallest([magnitude_score(a, b) for a, b in zip(w, masks)], masks, 12)
    # ties broken in layer order, then index order
    assert masks[0].sum() == 0 and masks[1].tolist() == [0, 0, 1, 1, 1, 1, 1]


# ----------------------------------------------------------------------------- masks under AdamW


@pytest.mark.parametrize("method", ["global", "uniform", "nm"])
def test_masks_hold_after_optimizer_steps(method):
    """As in training: gradients masked every step, weights and moments only at the event;
    the optimizer alone keeps pruned weights exactly zero."""
    model = tiny_model()
    spec = {"method": method, "n": 2, "m": 4, "embedding_sparsity": "sqrt" if method == "uniform" else "none"}
    pruner = pruner_for_model(model, spec)
    opt = make_optimizer(model, {"lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1})
    x = torch.randint(0, 64, (4, 16))

    def step():
        model(x, x.roll(1, 1)).backward()
        pruner.mask_grads()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0, foreach=True)
        opt.step()
        opt.zero_grad()

    for _ in range(3):
        step()  # Adam moments become non-zero everywhere
    pruner.prune_to(0.5, opt)
    for _ in range(5):
        step()
    for name, mk in pruner.masks.items():
        p = pruner.params[name]
        off = mk == 0
        assert bool(off.any())
        assert bool((p.detach()[off] == 0).all()), name
        st = opt.state[p]
        assert bool((st["exp_avg"][off] == 0).all()) and bool((st["exp_avg_sq"][off] == 0).all()), name
        assert bool((p.detach()[~off] != 0).any())
    assert pruner.check(0.5) == []


def test_check_reports_a_pruned_weight_that_is_not_zero():
    model = tiny_model()
    pruner = pruner_for_model(model, {"method": "global"})
    pruner.prune_to(0.5)
    assert pruner.check(0.5) == []
    name, mk = next(iter(pruner.masks.items()))
    with torch.no_grad():
        pruner.params[name].view(-1)[torch.nonzero(mk.view(-1) == 0)[:3, 0]] = 1e-3
    assert pruner.check(0.5) == [f"{name}: 3 pruned weights are not zero"]


def test_pruner_state_roundtrip():
    model = tiny_model()
    pruner = pruner_for_model(model, {"method": "global"})
    pruner.prune_to(0.4)
    state = pruner.state_dict()
    model2 = tiny_model(seed=1)
    p2 = pruner_for_model(model2, {"method": "global"})
    p2.load_state_dict(state)
    for k in pruner.masks:
        assert torch.equal(pruner.masks[k], p2.masks[k])
    assert isinstance(Pruner, type)
