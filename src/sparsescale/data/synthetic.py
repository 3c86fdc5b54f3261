"""A synthetic language with an exactly computable entropy rate.

Tokens: id 0 is the end-of-document token (EOT), ids ``1..V-1`` are symbols written as
words ``w1 .. w{V-1}`` (one word-level token each). The stream is an order-2 Markov chain
in which EOT is part of the chain:

- after an EOT the next symbol is drawn from a Zipf start distribution ``P0`` (documents
  are never empty and, because this does not depend on anything before the EOT,
  documents are i.i.d.: the stream is a renewal process);
- otherwise, with context ``(a, b)`` (``a`` may be EOT), the next token is EOT with
  probability ``p_eot = 1 / mean_doc_tokens``, else a draw from the mixture
  ``mix * P1(.|b) + (1 - mix) * P2(.|a)``, where ``P1`` (bigram rules) and ``P2``
  (skip-gram rules) give every symbol ``successors`` random successors with Zipf weights.

A model must combine the two previous tokens to reach the entropy rate (a bigram model
stays well above it), so the language is learnable but not trivially.

Entropy rate: ``H = sum_c pi(c) H(P(.|c))`` over contexts ``c = (a, b)`` with ``pi`` the
stationary distribution of the context chain, found by power iteration on the sparse
transition matrix (all contexts ``(x, EOT)`` behave alike and are merged into one state).
Because documents are i.i.d. and every document (train or val) ends with its EOT, the
concatenated documents of either split are a realisation of this same process, so ``H``
is the per-token entropy of exactly the token stream the model sees. A window of ``T``
predictions starting at a random offset has minimal expected loss
``(H1 + (T - 1) * H) / T`` with ``H1 = H(X_t | X_{t-1})`` (the first prediction has one
token of context), see ``min_window_loss``.

Documents are generated many at a time (one numpy step advances ``batch`` documents), so
generation is fast and deterministic from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

EOT = 0
MAX_VOCAB = 1024  # V^2 contexts in the stationary solve; 1024 -> 1M contexts, ~10M transitions


@dataclass
class SyntheticLanguage:
    vocab_size: int = 256
    seed: int = 0
    successors: int = 4
    mix: float = 0.5
    zipf_exponent: float = 1.0
    mean_doc_tokens: float = 256.0
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        from sparsescale.io import InputError

        V, k = int(self.vocab_size), int(self.successors)
        if not 3 <= V <= MAX_VOCAB:
            raise InputError(f"synthetic 'vocab_size' must be in [3, {MAX_VOCAB}] (EOT + symbols), got {V}")
        if not 1 <= k <= V - 1:
            raise InputError(f"synthetic 'successors' must be in [1, vocab_size - 1 = {V - 1}], got {k}")
        if not 0.0 <= float(self.mix) <= 1.0:
            raise InputError(f"synthetic 'mix' must be in [0, 1], got {self.mix}")
        if not float(self.zipf_exponent) >= 0.0:
            raise InputError(f"synthetic 'zipf_exponent' must be >= 0, got {self.zipf_exponent}")
        if not float(self.mean_doc_tokens) > 1.0:
            raise InputError(f"synthetic 'mean_doc_tokens' must be > 1, got {self.mean_doc_tokens}")
        self.V, self.k = V, k
        self.p_eot = 1.0 / float(self.mean_doc_tokens)
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), 0x5EED]))
        S = V - 1  # symbols 1..V-1
        zipf = 1.0 / np.arange(1, k + 1, dtype=np.float64) ** float(self.zipf_exponent)
        zipf /= zipf.sum()

        def rules(n_rows: int) -> np.ndarray:
            # successors of each row: k distinct random symbols (ids 1..S), Zipf weights by rank
            keys = rng.random((n_rows, S))
            return (np.argpartition(keys, k - 1, axis=1)[:, :k] + 1).astype(np.int64)

        # P1 rows indexed by b in 0..V-1 (row 0 unused: b == EOT uses P0); P2 rows by a (a may be EOT)
        self.succ1 = rules(V)
        self.succ2 = rules(V)
        self.w = zipf
        start = 1.0 / np.arange(1, S + 1, dtype=np.float64) ** float(self.zipf_exponent)
        self.p0 = np.zeros(V)
        self.p0[1 + rng.permutation(S)] = start / start.sum()

    # ------------------------------------------------------------------ rows
    def rows(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Next-token candidates ``ids [n, 2k+1]`` and weights (may repeat ids) for contexts
        ``(a, b)`` with ``b != EOT``."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        n, k = a.shape[0], self.k
        ids = np.empty((n, 2 * k + 1), dtype=np.int64)
        ids[:, :k] = self.succ1[b]
        ids[:, k : 2 * k] = self.succ2[a]
        ids[:, 2 * k] = EOT
        q = 1.0 - self.p_eot
        w = np.empty(2 * k + 1)
        w[:k] = q * self.mix * self.w
        w[k : 2 * k] = q * (1.0 - self.mix) * self.w
        w[2 * k] = self.p_eot
        return ids, np.broadcast_to(w, ids.shape)

    @staticmethod
    def _merged(ids: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Total probability of each entry's id within its row (merges repeated ids)."""
        return (w[:, None, :] * (ids[:, :, None] == ids[:, None, :])).sum(axis=2)

    def log_prob(self, prev2: np.ndarray, prev1: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """log P(nxt | prev2, prev1), vectorised (prev1 == EOT uses the start distribution)."""
        prev2, prev1, nxt = (np.asarray(x, dtype=np.int64) for x in (prev2, prev1, nxt))
        p = np.empty(nxt.shape, dtype=np.float64)
        start = prev1 == EOT
        p[start] = self.p0[nxt[start]]
        m = ~start
        ids, w = self.rows(prev2[m], prev1[m])
        p[m] = (w * (ids == nxt[m][:, None])).sum(axis=1)
        with np.errstate(divide="ignore"):
            return np.log(p)  # -inf for impossible tokens

    # --------------------------------------------------------------- entropy
    def _context_entropies(self, chunk: int = 1 << 16) -> np.ndarray:
        """H(P(.|a,b)) for all contexts, shape [V, V] (row a, column b); column 0 = start."""
        V = self.V
        H = np.empty((V, V))
        p0 = self.p0[self.p0 > 0]
        H[:, 0] = -(p0 * np.log(p0)).sum()
        a_all = np.repeat(np.arange(V), V - 1)
        b_all = np.tile(np.arange(1, V), V)
        flat = np.empty(a_all.shape[0])
        for s in range(0, a_all.shape[0], chunk):
            ids, w = self.rows(a_all[s : s + chunk], b_all[s : s + chunk])
            flat[s : s + chunk] = -(w * np.log(self._merged(ids, w))).sum(axis=1)
        H[:, 1:] = flat.reshape(V, V - 1)
        return H

    def stationary(self, tol: float = 1e-13, max_iter: int = 100_000) -> np.ndarray:
        """Stationary distribution over contexts (a, b), shape [V, V]; all (a, EOT) merged in
        column 0 row 0 (i.e. pi[0, 0] holds the mass of 'previous token is EOT')."""
        if "pi" in self._cache:
            return self._cache["pi"]
        import scipy.sparse as sp

        V, k = self.V, self.k
        # states: s = a * V + b for b != EOT; state 0 (a=0, b=0) = "previous token was EOT"
        a = np.repeat(np.arange(V), V - 1)
        b = np.tile(np.arange(1, V), V)
        src = a * V + b
        ids, w = self.rows(a, b)
        dst = np.where(ids == EOT, 0, b[:, None] * V + ids)
        rows_ = np.repeat(src, ids.shape[1])
        cols = dst.ravel()
        vals = w.ravel()
        # from the EOT state: next context (EOT, s) with prob P0(s)
        syms = np.arange(1, V)
        rows_ = np.concatenate([rows_, np.zeros(V - 1, dtype=np.int64)])
        cols = np.concatenate([cols, syms])  # state (a=0, b=s) = 0 * V + s
        vals = np.concatenate([vals, self.p0[1:]])
        T = sp.csr_matrix((vals, (rows_, cols)), shape=(V * V, V * V))
        TT = T.T.tocsr()
        pi = np.zeros(V * V)
        pi[0] = 1.0
        for it in range(max_iter):
            # average consecutive iterates: removes periodicity, same fixed point
            new = 0.5 * (pi + TT @ pi)
            new /= new.sum()
            if np.abs(new - pi).sum() < tol:
                pi = new
                break
            pi = new
        else:
            raise RuntimeError(f"stationary distribution did not converge in {max_iter} iterations")
        self._cache["pi_iterations"] = it + 1
        self._cache["pi"] = pi.reshape(V, V)
        return self._cache["pi"]

    def entropy_rate(self) -> float:
        """Exact entropy rate of the token stream in nats per token (EOT included)."""
        if "H" not in self._cache:
            pi = self.stationary()
            Hc = self._context_entropies()
            self._cache["H"] = float((pi * Hc).sum())
        return self._cache["H"]

    def entropy_first_order(self) -> float:
        """H(X_t | X_{t-1}) under the stationary distribution (nats)."""
        if "H1" not in self._cache:
            pi = self.stationary()
            V = self.V
            p_b = pi.sum(axis=0)  # marginal of the previous token b (b=0: EOT)
            total = 0.0
            p0 = self.p0[self.p0 > 0]
            total += p_b[0] * -(p0 * np.log(p0)).sum()
            for b in range(1, V):
                if p_b[b] <= 0:
                    continue
                a = np.arange(V)
                ids, w = self.rows(a, np.full(V, b))
                cond = pi[:, b] / p_b[b]  # P(a | b)
                probs = np.zeros(V)
                np.add.at(probs, ids.ravel(), (w * cond[:, None]).ravel())
                probs = probs[probs > 0]
                total += p_b[b] * -(probs * np.log(probs)).sum()
            self._cache["H1"] = float(total)
        return self._cache["H1"]

    def min_window_loss(self, seq_len: int) -> float:
        """Best achievable mean loss over a random window of ``seq_len`` predictions."""
        return (self.entropy_first_order() + (seq_len - 1) * self.entropy_rate()) / seq_len

    # -------------------------------------------------------------- sampling
    def documents(self, seed: int | None = None, slots: int = 1024, wave_tokens: int = 1 << 20) -> Iterator[np.ndarray]:
        """Endless i.i.d. documents (int arrays of symbol ids, without the trailing EOT).

        EOT does not depend on the content (probability ``p_eot`` after every symbol), so
        each document's length is drawn first (``1 + Geometric``) and its symbols then come
        from the chain conditioned on "not EOT". A wave of documents (about ``wave_tokens``
        tokens) is packed into ``slots`` parallel streams and sampled one numpy step per
        position; documents are yielded in the order their lengths were drawn, so the
        sequence is i.i.d. and deterministic from the seed.
        """
        import heapq

        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed if seed is None else seed), 0xD0C5]))
        cdf0 = np.cumsum(self.p0)
        cdf0 /= cdf0[-1]
        cdfw = np.cumsum(self.w)
        cdfw /= cdfw[-1]
        k = self.k
        while True:
            lengths = []
            total = 0
            while total < wave_tokens:
                chunk = rng.geometric(self.p_eot, size=1024)  # symbols per document, >= 1
                lengths.extend(chunk.tolist())
                total += int(chunk.sum()) + chunk.size
            # pack documents into slots (longest-processing-time-like greedy, in order)
            heap = [(0, s) for s in range(slots)]
            place = []  # (slot, offset) per document
            for n in lengths:
                load, s = heapq.heappop(heap)
                place.append((s, load))
                heapq.heappush(heap, (load + n, s))
            steps = max(h[0] for h in heap)
            kind = np.full((steps, slots), 2, dtype=np.int8)  # 0 start, 1 mid, 2 pad
            for (s, off), n in zip(place, lengths):
                kind[off, s] = 0
                kind[off + 1 : off + n, s] = 1
            tokens = np.zeros((steps, slots), dtype=np.int64)
            prev2 = np.zeros(slots, dtype=np.int64)
            prev1 = np.zeros(slots, dtype=np.int64)
            for t in range(steps):
                kt = kind[t]
                u = rng.random((2, slots))
                nxt = np.zeros(slots, dtype=np.int64)
                st = kt == 0
                nxt[st] = np.searchsorted(cdf0, u[0, st], side="right")
                md = kt == 1
                if md.any():
                    j = np.minimum(np.searchsorted(cdfw, u[1, md], side="right"), k - 1)
                    first = u[0, md] < self.mix
                    nxt[md] = np.where(first, self.succ1[prev1[md], j], self.succ2[prev2[md], j])
                # a start resets the context to (EOT, symbol)
                prev2 = np.where(st, 0, prev1)
                prev1 = nxt
                tokens[t] = nxt
            for (s, off), n in zip(place, lengths):
                yield tokens[off : off + n, s].copy()

    def stream(self, n_tokens: int, seed: int | None = None) -> np.ndarray:
        """The first ``n_tokens`` of the stream: documents each followed by EOT, starting
        after an EOT (for Monte-Carlo checks)."""
        out, n = [], 0
        for doc in self.documents(seed=seed):
            out.append(doc)
            out.append(np.zeros(1, dtype=np.int64))
            n += doc.size + 1
            if n >= n_tokens:
                break
        return np.concatenate(out)[:n_tokens]

    def monte_carlo_entropy(self, n_tokens: int, seed: int | None = None) -> tuple[float, float]:
        """(-mean log p, its standard error) over a sampled stream of ``n_tokens``."""
        s = np.concatenate([[EOT, EOT], self.stream(n_tokens + 0, seed=seed)])
        lp = self.log_prob(s[:-2], s[1:-1], s[2:])
        return float(-lp.mean()), float(lp.std() / np.sqrt(lp.size))

    def describe(self) -> dict:
        return {
            "vocab_size": self.V,
            "symbols": self.V - 1,
            "eot_id": EOT,
            "seed": int(self.seed),
            "successors": self.k,
            "mix": float(self.mix),
            "zipf_exponent": float(self.zipf_exponent),
            "mean_doc_tokens": float(self.mean_doc_tokens),
            "entropy_rate_nats": self.entropy_rate(),
            "entropy_first_order_nats": self.entropy_first_order(),
            "unigram_entropy_nats": self.unigram_entropy(),
            "stationary_iterations": self._cache.get("pi_iterations"),
        }

    def unigram_entropy(self) -> float:
        p = self.stationary().sum(axis=0)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())


def symbol_names(vocab_size: int) -> list[str]:
    """Word for each symbol id 1..V-1 (index 0 is the EOT placeholder)."""
    return ["<|endoftext|>"] + [f"w{i}" for i in range(1, vocab_size)]
