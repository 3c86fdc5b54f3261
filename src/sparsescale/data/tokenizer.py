"""Tokenizers: byte-level BPE trained on the train split, word-level, or a pretrained file.

Tokenizer spec (``spec["tokenizer"]`` of the corpus spec):

- ``{"kind": "bpe", "vocab_size": 4096, "min_frequency": 2, "max_train_bytes": null}``:
  byte-level BPE (GPT-2 style pre-tokenisation, every byte representable, exact
  round trip) trained with ``tokenizers`` on ``train.parquet`` only, streamed in batches;
  ``max_train_bytes`` trains on the first that many bytes of the train split.
- ``{"kind": "wordlevel"}``: one token per whitespace-separated word. For the synthetic
  source the vocabulary is the synthetic alphabet in id order (``<|endoftext|>`` = 0,
  ``w{i}`` = i), so token ids are the chain's symbol ids and the entropy rate per token
  is exact. For other sources it is trained (``vocab_size`` words, ``[UNK]`` for the rest).
- ``{"kind": "pretrained", "path": "tokenizer.json", "name": "meta-llama/Llama-2-7b-hf",
  "eot_token": "</s>"}``: a ``tokenizers`` JSON file used as is (the ``name`` is recorded;
  without ``path`` it is fetched with ``Tokenizer.from_pretrained``, which needs network).
  The end-of-document token ``<|endoftext|>`` is added when missing.

The default is bpe with vocab_size 4096 (wordlevel for the synthetic source).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sparsescale.io import InputError, atomic_path, get_logger

log = get_logger("sparsescale.data.tokenizer")

EOT_TOKEN = "<|endoftext|>"
KINDS = {"bpe", "wordlevel", "pretrained"}
MIN_BPE_VOCAB = 256 + 1  # the byte alphabet + EOT


def tokenizer_spec(spec: dict) -> dict:
    """The validated tokenizer block of a corpus spec, with defaults."""
    tok = spec.get("tokenizer")
    synthetic = spec.get("source") == "synthetic"
    if tok is None:
        tok = {"kind": "wordlevel"} if synthetic else {"kind": "bpe", "vocab_size": 4096}
    if not isinstance(tok, dict):
        raise InputError(f"corpus spec: 'tokenizer' must be an object, got {tok!r}")
    tok = dict(tok)
    kind = tok.get("kind", "bpe")
    if kind not in KINDS:
        raise InputError(f"tokenizer spec: 'kind' must be one of {sorted(KINDS)}, got {kind!r}")
    tok["kind"] = kind
    if synthetic and kind != "wordlevel":
        raise InputError(
            "tokenizer spec: 'kind' must be 'wordlevel' for the synthetic source (one token per symbol, so the "
            f"entropy rate per token is exact), got {kind!r}"
        )
    if kind == "bpe":
        vs = tok.get("vocab_size", 4096)
        if isinstance(vs, bool) or not isinstance(vs, int) or vs < MIN_BPE_VOCAB:
            raise InputError(f"tokenizer spec: 'vocab_size' must be an integer >= {MIN_BPE_VOCAB} for byte-level BPE, got {vs!r}")
        tok["vocab_size"] = vs
        mf = tok.get("min_frequency", 2)
        if isinstance(mf, bool) or not isinstance(mf, int) or mf < 1:
            raise InputError(f"tokenizer spec: 'min_frequency' must be an integer >= 1, got {mf!r}")
        tok["min_frequency"] = mf
        mtb = tok.get("max_train_bytes")
        if mtb is not None and (isinstance(mtb, bool) or not isinstance(mtb, (int, float)) or mtb <= 0):
            raise InputError(f"tokenizer spec: 'max_train_bytes' must be a positive number or null, got {mtb!r}")
    elif kind == "wordlevel" and not synthetic:
        vs = tok.get("vocab_size", 4096)
        if isinstance(vs, bool) or not isinstance(vs, int) or vs < 3:
            raise InputError(f"tokenizer spec: 'vocab_size' must be an integer >= 3, got {vs!r}")
        tok["vocab_size"] = vs
    elif kind == "pretrained":
        if not tok.get("path") and not tok.get("name"):
            raise InputError("tokenizer spec: kind 'pretrained' needs 'path' (a tokenizer.json file) or 'name'")
    return tok


def _train_texts(parquet: Path, max_bytes: float | None, batch_docs: int = 256):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(parquet)
    seen = 0
    for rb in pf.iter_batches(batch_size=batch_docs, columns=["text"]):
        texts = rb.column(0).to_pylist()
        if max_bytes is not None:
            keep = []
            for t in texts:
                if seen >= max_bytes:
                    break
                keep.append(t)
                seen += len(t.encode("utf-8", errors="surrogatepass"))
            if keep:
                yield keep
            if seen >= max_bytes:
                return
        else:
            yield texts


def build_bpe(parquet: Path, vocab_size: int, min_frequency: int = 2, max_train_bytes=None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_train_texts(parquet, max_train_bytes), trainer=trainer)
    got = tok.get_vocab_size(with_added_tokens=True)
    if got < vocab_size:
        raise InputError(
            f"tokenizer spec 'vocab_size': {vocab_size} is larger than the training split {parquet} supports "
            f"(BPE found only {got} tokens with min_frequency {min_frequency}); use a smaller vocab_size or more text"
        )
    return tok


def build_wordlevel_synthetic(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from sparsescale.data.synthetic import symbol_names

    vocab = {name: i for i, name in enumerate(symbol_names(vocab_size))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok.add_special_tokens([EOT_TOKEN])
    return tok


def build_wordlevel(parquet: Path, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=[EOT_TOKEN, "[UNK]"], show_progress=False)
    tok.train_from_iterator(_train_texts(parquet, None), trainer=trainer)
    got = tok.get_vocab_size(with_added_tokens=True)
    if got < vocab_size:
        raise InputError(
            f"tokenizer spec 'vocab_size': {vocab_size} is larger than the training split {parquet} supports "
            f"({got} distinct words); use a smaller vocab_size"
        )
    return tok


def load_pretrained(tok_spec: dict):
    from tokenizers import Tokenizer

    path = tok_spec.get("path")
    if path:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"tokenizer spec 'path': {path}: file not found")
        try:
            tok = Tokenizer.from_file(str(p))
        except Exception as err:
            raise InputError(f"tokenizer spec 'path': {path}: not a tokenizers JSON file ({err})") from err
    else:
        name = tok_spec["name"]
        from sparsescale.data.corpus import _hub_reachable, _offline_env

        why = None if _offline_env() else _hub_reachable(float(tok_spec.get("hub_timeout_s", 5.0)))
        if why:
            raise InputError(
                f"tokenizer spec 'name': cannot download {name!r}: {why}. Download its tokenizer.json elsewhere "
                "and set tokenizer 'path'"
            )
        try:
            tok = Tokenizer.from_pretrained(name)
        except Exception as err:
            raise InputError(f"tokenizer spec 'name': cannot load {name!r} ({type(err).__name__}: {err}); "
                             "set tokenizer 'path' to a local tokenizer.json") from err
    eot = tok_spec.get("eot_token")
    if eot and tok.token_to_id(eot) is None:
        raise InputError(f"tokenizer spec 'eot_token': {eot!r} is not in the tokenizer's vocabulary")
    if tok.token_to_id(EOT_TOKEN) is None:
        # the pipeline's end-of-document marker; aliasing another id is not possible in
        # tokenizers, so add it (one extra id at the end of the vocabulary)
        tok.add_special_tokens([EOT_TOKEN])
    return tok


def build_tokenizer(spec: dict, train_parquet: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Build the tokenizer of ``spec`` from ``train_parquet``; write ``out_path`` atomically."""
    tok_spec = tokenizer_spec(spec)
    train_parquet = Path(train_parquet)
    if tok_spec["kind"] != "pretrained" and not train_parquet.is_file():
        raise InputError(f"--text: {train_parquet}: train split not found (run `sparsescale corpus` first)")
    t0 = time.perf_counter()
    kind = tok_spec["kind"]
    if kind == "bpe":
        tok = build_bpe(train_parquet, tok_spec["vocab_size"], tok_spec["min_frequency"], tok_spec.get("max_train_bytes"))
    elif kind == "wordlevel" and spec.get("source") == "synthetic":
        from sparsescale.data.corpus import validate_spec

        tok = build_wordlevel_synthetic(validate_spec(spec)["vocab_size"])
    elif kind == "wordlevel":
        tok = build_wordlevel(train_parquet, tok_spec["vocab_size"])
    else:
        tok = load_pretrained(tok_spec)
    dt = time.perf_counter() - t0
    with atomic_path(out_path) as tmp:
        tok.save(str(tmp))
    info = {"kind": kind, "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "eot_id": tok.token_to_id(EOT_TOKEN), "seconds": round(dt, 3)}
    log.info(f"tokenizer {kind}: vocab {info['vocab_size']}, eot id {info['eot_id']}, {dt:.2f} s -> {out_path}")
    return info
