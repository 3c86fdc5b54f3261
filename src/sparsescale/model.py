"""A Llama-style decoder in plain PyTorch, and its parameter accounting.

RMSNorm (pre-norm), rotary position embeddings, SwiGLU MLP, no biases anywhere, an untied
LM head, causal attention through ``F.scaled_dot_product_attention``.

Parameter accounting (what the scaling laws use):
- *prunable* N: every linear weight, attention (q, k, v, o), MLP (gate, up, down) and the
  LM head: ``n_layers * (4 d^2 + 3 d d_ff) + d * vocab``;
- *embedding*: the token embedding, ``vocab * d`` (never counted in N; pruned only with
  ``embedding_sparsity: sqrt``);
- *norm*: the RMSNorm gains, ``(2 n_layers + 1) d``;
- *total*: all of the above.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for key in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{key}: must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.n_heads: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"model.n_heads: head dimension {self.d_model // self.n_heads} must be even (rotary)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


def prunable_shapes(cfg: ModelConfig) -> list[tuple[str, tuple[int, int]]]:
    """(weight name, (out, in)) of every prunable linear, in ``prunable_linears`` order, from
    the config alone: planning a 468M-parameter run needs no model in memory."""
    d, f = cfg.d_model, cfg.d_ff
    shapes = []
    for i in range(cfg.n_layers):
        shapes += [(f"blocks.{i}.attn.{w}.weight", (d, d)) for w in ("wq", "wk", "wv", "wo")]
        shapes += [(f"blocks.{i}.mlp.w_gate.weight", (f, d)), (f"blocks.{i}.mlp.w_up.weight", (f, d)),
                   (f"blocks.{i}.mlp.w_down.weight", (d, f))]
    return shapes + [("lm_head.weight", (cfg.vocab_size, d))]


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts from the shapes alone (no model built)."""
    d, layers, vocab = cfg.d_model, cfg.n_layers, cfg.vocab_size
    prunable = sum(rows * cols for _, (rows, cols) in prunable_shapes(cfg))
    embedding = vocab * d
    norm = (2 * layers + 1) * d
    return {
        "n_prunable": prunable,
        "n_head": d * vocab,
        "n_embedding": embedding,
        "n_norm": norm,
        "n_total": prunable + embedding + norm,
    }


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in fp32 (matters under bf16 autocast), return in the input dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rotary_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [max_seq_len, head_dim] for the half-split ("rotate_half") form."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, Dh]; cos/sin: [T, Dh]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim
        d = cfg.d_model
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        q = apply_rotary(q, cos, sin).to(v.dtype)
        k = apply_rotary(k, cos, sin).to(v.dtype)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, 0.02) for weights; the residual outputs (wo, w_down) scaled by 1/sqrt(2 L)."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("wo.weight", "w_down.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.cfg.n_layers))
            else:
                p.normal_(0.0, std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy if ``targets`` is given, else the logits [B, T, V]."""
        t = idx.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.tok_emb(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def prunable_linears(model: Transformer) -> list[tuple[str, nn.Linear]]:
    """Every linear layer incl. the LM head, in a fixed order: (qualified weight name, module)."""
    return [(f"{name}.weight", m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def param_counts(model: Transformer) -> dict[str, int]:
    """Counts from the built model (agrees with ``count_params`` on its config)."""
    linears = prunable_linears(model)
    prunable = sum(m.weight.numel() for _, m in linears)
    head = model.lm_head.weight.numel()
    embedding = model.tok_emb.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    return {
        "n_prunable": prunable,
        "n_head": head,
        "n_embedding": embedding,
        "n_norm": total - prunable - embedding,
        "n_total": total,
    }


def flops_per_token(cfg: ModelConfig, seq_len: int, n_prunable: int | None = None) -> float:
    """Training FLOPs per token: 6 N (prunable, incl. head) + attention scores 6 L T d (causal average)."""
    n = count_params(cfg)["n_prunable"] if n_prunable is None else n_prunable
    return 6.0 * n + 6.0 * cfg.n_layers * seq_len * cfg.d_model
