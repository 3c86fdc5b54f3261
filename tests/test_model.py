"""The Llama-style decoder: shapes, parameter accounting, causality, rotary, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from sparsescale.model import (
    ModelConfig,
    Transformer,
    apply_rotary,
    count_params,
    param_counts,
    prunable_linears,
    prunable_shapes,
    rotary_tables,
)

torch.set_num_threads(1)


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_ff=96, max_seq_len=16)
    base.update(kw)
    return ModelConfig(**base)


def test_counts_against_hand_computed_shapes():
    cfg = tiny()
    # per layer: q,k,v,o 4 * 32*32 = 4096; gate, up, down 3 * 32*96 = 9216
    per_layer = 4 * 32 * 32 + 3 * 32 * 96
    assert per_layer == 13312
    head = 32 * 64
    expected = {
        "n_prunable": 2 * 13312 + head,  # 28672
        "n_head": 2048,
        "n_embedding": 64 * 32,
        "n_norm": (2 * 2 + 1) * 32,
        "n_total": 2 * 13312 + 2048 + 2048 + 160,
    }
    assert expected["n_prunable"] == 28672 and expected["n_total"] == 30880
    assert count_params(cfg) == expected
    model = Transformer(cfg)
    assert param_counts(model) == expected
    assert sum(p.numel() for p in model.parameters()) == expected["n_total"]


def test_paper_rung_counts():
    # paper A's smallest rung: d 512, 6 layers, SwiGLU 2048, vocab 32000
    c = count_params(ModelConfig(vocab_size=32000, d_model=512, n_layers=6, n_heads=8, d_ff=2048))
    assert c["n_prunable"] == 6 * (4 * 512**2 + 3 * 512 * 2048) + 512 * 32000
    assert c["n_embedding"] == 512 * 32000


def test_prunable_shapes_match_the_built_model():
    cfg = tiny(n_layers=3, d_ff=80, vocab_size=72)
    built = [(name, tuple(m.weight.shape)) for name, m in prunable_linears(Transformer(cfg))]
    assert prunable_shapes(cfg) == built


def test_prunable_linears_cover_every_linear_incl_head_and_no_biases():
    model = Transformer(tiny())
    names = [n for n, _ in prunable_linears(model)]
    assert len(names) == 2 * 7 + 1
    assert names[-1] == "lm_head.weight"
    assert "tok_emb.weight" not in names
    for _, m in prunable_linears(model):
        assert m.bias is None
    # untied head
    assert model.lm_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()


def test_forward_shapes_and_initial_loss():
    torch.manual_seed(0)
    cfg = tiny()
    model = Transformer(cfg)
    x = torch.randint(0, 64, (3, 16))
    logits = model(x)
    assert logits.shape == (3, 16, 64)
    loss = model(x, x)
    assert abs(loss.item() - math.log(64)) < 0.3
    with pytest.raises(ValueError):
        model(torch.randint(0, 64, (1, 17)))


def test_causal():
    torch.manual_seed(0)
    model = Transformer(tiny())
    x = torch.randint(0, 64, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 64
    a, b = model(x), model(y)
    assert torch.equal(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_rotary_preserves_norm_and_is_relative():
    cos, sin = rotary_tables(8, 32, 10000.0)
    q = torch.randn(1, 1, 1, 8)
    k = torch.randn(1, 1, 1, 8)
    qs = apply_rotary(q.expand(1, 1, 32, 8), cos, sin)
    ks = apply_rotary(k.expand(1, 1, 32, 8), cos, sin)
    assert torch.allclose(qs.norm(dim=-1), q.norm(dim=-1).expand(1, 1, 32), atol=1e-5)
    # <q_m, k_n> depends only on m - n
    d1 = (qs[0, 0, 5] * ks[0, 0, 2]).sum()
    d2 = (qs[0, 0, 20] * ks[0, 0, 17]).sum()
    assert torch.allclose(d1, d2, atol=1e-5)


def test_deterministic_from_seed():
    torch.manual_seed(3)
    a = Transformer(tiny())
    torch.manual_seed(3)
    b = Transformer(tiny())
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na


@pytest.mark.parametrize(
    "kw",
    [dict(d_model=30, n_heads=4), dict(d_model=24, n_heads=8), dict(n_layers=0), dict(vocab_size=True)],
)
def test_config_validation(kw):
    with pytest.raises(ValueError):
        tiny(**kw)
