"""The synthetic language: exact entropy rate vs Monte-Carlo, and through the pipeline."""

import json

import numpy as np
import pytest

from sparsescale.data.synthetic import EOT, SyntheticLanguage
from sparsescale.io import InputError, read_json


@pytest.mark.parametrize("V, mix, k", [(64, 0.5, 4), (200, 0.8, 3)])
def test_entropy_rate_matches_monte_carlo(V, mix, k):
    lang = SyntheticLanguage(vocab_size=V, seed=1, mix=mix, successors=k, mean_doc_tokens=64)
    H = lang.entropy_rate()
    mc, se = lang.monte_carlo_entropy(400_000)
    assert abs(mc - H) < 4 * se + 1e-3, (H, mc, se)
    # structure: the second-previous token matters, so H(X|prev) > H > 0, and H1 < unigram
    assert 0.5 < H < lang.entropy_first_order() < lang.unigram_entropy()
    # every conditional distribution (incl. the start one, prev == EOT) sums to one
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, V, 50), rng.integers(0, V, 50)
    b[:5] = EOT
    total = sum(np.exp(lang.log_prob(a, b, np.full(50, c))) for c in range(V))
    assert np.allclose(total, 1.0)


def test_deterministic_documents():
    a = SyntheticLanguage(vocab_size=50, seed=3)
    b = SyntheticLanguage(vocab_size=50, seed=3)
    sa, sb = a.stream(20_000), b.stream(20_000)
    assert np.array_equal(sa, sb)
    assert not np.array_equal(sa, SyntheticLanguage(vocab_size=50, seed=4).stream(20_000))
    assert sa.min() >= 0 and sa.max() < 50 and (sa == EOT).sum() > 10
    assert not np.any((sa[1:] == EOT) & (sa[:-1] == EOT))  # no empty documents


def test_window_loss_bound():
    lang = SyntheticLanguage(vocab_size=40, seed=0)
    assert lang.entropy_rate() < lang.min_window_loss(16) < lang.entropy_first_order()


def test_synthetic_pipeline_entropy_of_shards(tmp_path):
    from sparsescale.data.corpus import build_corpus
    from sparsescale.data.loader import TokenShards
    from sparsescale.data.shards import build_shards, load_tokenizer
    from sparsescale.data.tokenizer import build_tokenizer

    spec = {"source": "synthetic", "n_tokens": 300_000, "vocab_size": 96, "seed": 5, "mean_doc_tokens": 100,
            "val_fraction": 0.1}
    stats = build_corpus(json.dumps(spec), tmp_path / "text")
    assert sum(stats["documents"].values()) > 2_000
    build_tokenizer(spec, tmp_path / "text" / "train.parquet", tmp_path / "tok.json")
    m = build_shards(tmp_path / "tok.json", tmp_path / "text", tmp_path / "tokens")
    assert m["vocab_size"] == 96 and m["eot_id"] == 0
    assert m["entropy_rate_nats"] == stats["entropy_rate_nats"] == read_json(tmp_path / "tokens" / "manifest.json")["entropy_rate_nats"]
    assert 300_000 <= sum(m["tokens"].values()) < 300_000 + 2_000
    # the token stream the model reads has exactly this entropy rate
    lang = SyntheticLanguage(vocab_size=96, seed=5, mean_doc_tokens=100)
    shards = TokenShards(tmp_path / "tokens")
    train = np.asarray(shards.array("train"), dtype=np.int64)
    s = np.concatenate([[EOT, EOT], train])
    lp = lang.log_prob(s[:-2], s[1:-1], s[2:])
    assert abs(-lp.mean() - m["entropy_rate_nats"]) < 4 * lp.std() / np.sqrt(lp.size) + 1e-3
    # word-level round trip
    tok = load_tokenizer(tmp_path / "tok.json")
    assert tok.decode(tok.encode("w1 w5 w95").ids) == "w1 w5 w95"
    assert tok.encode("w1 w5 w95").ids == [1, 5, 95]
    with pytest.raises(InputError, match="wordlevel"):
        build_tokenizer({**spec, "tokenizer": {"kind": "bpe", "vocab_size": 512}}, tmp_path / "text" / "train.parquet",
                        tmp_path / "tok2.json")
    # split disjoint by document index, deterministic
    stats2 = build_corpus(spec, tmp_path / "text2")
    assert stats2["content_sha256"] == stats["content_sha256"] and stats2["documents"] == stats["documents"]
