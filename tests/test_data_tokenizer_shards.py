"""Tokenizer, shards, manifest and the three CLI commands on a small embedded corpus."""

import argparse
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from sparsescale.data import cli as data_cli
from sparsescale.data.loader import TokenShards
from sparsescale.data.shards import load_tokenizer
from sparsescale.io import InputError, read_json, sha256_file

SPEC = {"source": "embedded", "val_fraction": 0.2, "max_documents": 30,
        "tokenizer": {"kind": "bpe", "vocab_size": 512}}


def run(argv):
    """The data subcommands through their own parser (as `sparsescale` would run them)."""
    parser = argparse.ArgumentParser(prog="sparsescale")
    sub = parser.add_subparsers(dest="command", required=True)
    data_cli.add_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("stdlib")
    spec = json.dumps(SPEC)
    assert run(["corpus", "--spec", spec, "--out-dir", str(root / "text")]) == 0
    assert run(["tokenizer", "--spec", spec, "--text", str(root / "text" / "train.parquet"),
                "--out", str(root / "tokenizer.json")]) == 0
    assert run(["shards", "--tokenizer", str(root / "tokenizer.json"), "--text-dir", str(root / "text"),
                "--out-dir", str(root / "tokens"), "--batch-docs", "7"]) == 0
    return root


def test_round_trip(built):
    tok = load_tokenizer(built / "tokenizer.json")
    assert tok.get_vocab_size() == 512 and tok.token_to_id("<|endoftext|>") == 0
    texts = pq.read_table(built / "text" / "val.parquet").column("text").to_pylist()
    texts += ["héllo wörld ✓ \t\n  tabs and   spaces\r\n", "\x00\x01 bytes 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]
    for t in texts:
        assert tok.decode(tok.encode(t).ids) == t


def test_manifest_and_shards(built):
    m = read_json(built / "tokens" / "manifest.json")
    stats = read_json(built / "text" / "stats.json")
    assert m["source"] == stats["source"] and m["dtype"] == "uint16" and m["eot_id"] == 0
    assert m["tokenizer_sha256"] == sha256_file(built / "tokenizer.json")
    assert m["documents"] == stats["documents"]
    for split in ("train", "val"):
        assert m["sha256"][f"{split}.bin"] == sha256_file(built / "tokens" / f"{split}.bin")
        arr = np.fromfile(built / "tokens" / f"{split}.bin", dtype=np.uint16)
        assert arr.size == m["tokens"][split]
        assert (arr == 0).sum() == stats["documents"][split] and arr[-1] == 0
    # the unigram entropy: of the training split's token frequencies, between 0 and log(vocab)
    freq = np.bincount(np.fromfile(built / "tokens" / "train.bin", dtype=np.uint16)) / m["tokens"]["train"]
    freq = freq[freq > 0]
    assert m["unigram_entropy_nats"] == pytest.approx(float(-(freq * np.log(freq)).sum()), rel=1e-12)
    assert 0 < m["unigram_entropy_nats"] < np.log(m["vocab_size"])
    # shard = concatenation of encode(doc) + EOT over the parquet's documents
    tok = load_tokenizer(built / "tokenizer.json")
    docs = pq.read_table(built / "text" / "val.parquet").column("text").to_pylist()
    expect = np.concatenate([np.array(tok.encode(d).ids + [0]) for d in docs])
    assert np.array_equal(np.fromfile(built / "tokens" / "val.bin", dtype=np.uint16), expect)
    s = TokenShards(built / "tokens")
    assert s.num_tokens("train") == m["tokens"]["train"]


def test_vocab_larger_than_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("ab ab ab ab\n" * 5)
    (tmp_path / "b.txt").write_text("cd cd cd\n" * 5)
    (tmp_path / "c.txt").write_text("ef\n" * 5)
    spec = {"source": "local", "paths": str(tmp_path / "*.txt"), "val_fraction": 0.4,
            "tokenizer": {"kind": "bpe", "vocab_size": 5000}}
    from sparsescale.data.corpus import build_corpus
    from sparsescale.data.tokenizer import build_tokenizer

    build_corpus(spec, tmp_path / "text")
    with pytest.raises(InputError, match="'vocab_size': 5000 is larger than"):
        build_tokenizer(spec, tmp_path / "text" / "train.parquet", tmp_path / "tok.json")
    assert not (tmp_path / "tok.json").exists()
    with pytest.raises(InputError, match="'vocab_size' must be an integer >= 257"):
        build_tokenizer({**spec, "tokenizer": {"kind": "bpe", "vocab_size": 100}}, tmp_path / "text" / "train.parquet",
                        tmp_path / "tok.json")
    with pytest.raises(InputError, match="train split not found"):
        build_tokenizer(spec, tmp_path / "nope.parquet", tmp_path / "tok.json")


def test_pretrained_and_overflow(built, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    big = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    big.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    big.save(str(tmp_path / "big.json"))
    spec = {**SPEC, "tokenizer": {"kind": "pretrained", "path": str(tmp_path / "big.json"), "name": "example/big"}}
    run(["tokenizer", "--spec", json.dumps(spec), "--text", "unused", "--out", str(tmp_path / "tok.json")])
    tok = load_tokenizer(tmp_path / "tok.json")
    assert tok.token_to_id("<|endoftext|>") == 70_000  # added by the pipeline
    text = tmp_path / "text"
    text.mkdir()
    import pyarrow as pa

    for split in ("train", "val"):
        pq.write_table(pa.table({"text": ["w1 w69999 w5", "w2"]}), text / f"{split}.parquet")
    with pytest.raises(InputError, match="overflows the shard dtype uint16"):
        run(["shards", "--tokenizer", str(tmp_path / "tok.json"), "--text-dir", str(text),
             "--out-dir", str(tmp_path / "tokens"), "--dtype", "uint16"])
    assert not (tmp_path / "tokens" / "train.bin").exists()
    run(["shards", "--tokenizer", str(tmp_path / "tok.json"), "--text-dir", str(text), "--out-dir", str(tmp_path / "tokens")])
    m = read_json(tmp_path / "tokens" / "manifest.json")
    assert m["dtype"] == "uint32" and m["vocab_size"] == 70_001 and m["tokens"]["train"] == 6
    with pytest.raises(InputError, match="file not found"):
        run(["tokenizer", "--spec", json.dumps({**SPEC, "tokenizer": {"kind": "pretrained", "path": "missing.json"}}),
             "--text", "unused", "--out", str(tmp_path / "t2.json")])


def test_cli_errors(tmp_path):
    with pytest.raises(InputError, match="--spec"):
        run(["corpus", "--spec", "{not json", "--out-dir", str(tmp_path)])
    with pytest.raises(InputError, match="tokenizer file not found"):
        run(["shards", "--tokenizer", str(tmp_path / "none.json"), "--text-dir", str(tmp_path), "--out-dir", str(tmp_path / "t")])
