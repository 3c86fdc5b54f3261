"""Token shards: ``train.bin`` / ``val.bin`` flat numpy memmaps plus ``manifest.json``.

``build_shards`` tokenises ``text/{train,val}.parquet`` in batches of documents with the
``tokenizers`` ``encode_batch_fast`` (Rust, multi-threaded), appends the end-of-document
token after every document and streams the ids to disk, hashing them on the way. Memory
is bounded by one batch of documents, whatever the corpus size.

``ShardWriter`` / ``write_manifest`` are the low-level writer, also handy to build a tiny
token directory in other stages' tests (``write_token_dir``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from sparsescale.io import InputError, atomic_path, get_logger, read_json, sha256_file, write_json

log = get_logger("sparsescale.data.shards")

EOT_TOKEN = "<|endoftext|>"
SPLITS = ("train", "val")
DTYPE_LIMITS = {"uint16": 1 << 16, "uint32": 1 << 32}


def choose_dtype(vocab_size: int) -> str:
    """uint16 when every id fits (vocab <= 65536), else uint32."""
    if vocab_size <= DTYPE_LIMITS["uint16"]:
        return "uint16"
    if vocab_size <= DTYPE_LIMITS["uint32"]:
        return "uint32"
    raise InputError(f"vocab_size {vocab_size} does not fit a uint32 shard")


class ShardWriter:
    """Append int arrays to a binary shard of ``dtype``, checking range and hashing as it goes."""

    def __init__(self, path: Path, dtype: str, name: str = ""):
        if dtype not in DTYPE_LIMITS:
            raise InputError(f"dtype must be one of {sorted(DTYPE_LIMITS)}, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.limit = DTYPE_LIMITS[dtype]
        self.name = name or str(path)
        self._fh = open(path, "wb")
        self._sha = hashlib.sha256()
        self.n_tokens = 0

    def write(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        if ids.size == 0:
            return
        hi, lo = int(ids.max()), int(ids.min())
        if hi >= self.limit or lo < 0:
            raise InputError(
                f"{self.name}: token id {hi if hi >= self.limit else lo} overflows the shard dtype "
                f"{self.dtype.name} (ids must be in [0, {self.limit})); use dtype uint32 or a smaller vocabulary"
            )
        buf = ids.astype(self.dtype, copy=False).tobytes()
        self._fh.write(buf)
        self._sha.update(buf)
        self.n_tokens += int(ids.size)

    def close(self) -> str:
        self._fh.close()
        return self._sha.hexdigest()


def write_token_dir(
    out_dir: str | os.PathLike,
    splits: dict[str, Iterable[np.ndarray] | np.ndarray],
    vocab_size: int,
    eot_id: int,
    dtype: str | None = None,
    **manifest_extra,
) -> dict:
    """Write ``{split}.bin`` + ``manifest.json`` from arrays (or iterables of arrays).

    Small helper for tests and tools: ``write_token_dir(d, {"train": a, "val": b},
    vocab_size=V, eot_id=0)``. Extra keyword arguments go into the manifest.
    """
    out_dir = Path(out_dir)
    dtype = dtype or choose_dtype(vocab_size)
    counts, hashes = {}, {}
    with contextlib.ExitStack() as stack:
        for split in SPLITS:
            chunks = splits.get(split, [])
            if isinstance(chunks, np.ndarray):
                chunks = [chunks]
            tmp = stack.enter_context(atomic_path(out_dir / f"{split}.bin"))
            writer = ShardWriter(tmp, dtype, name=str(out_dir / f"{split}.bin"))
            try:
                for chunk in chunks:
                    arr = np.asarray(chunk)
                    if arr.size and int(arr.max()) >= vocab_size:
                        raise InputError(f"{split}: token id {int(arr.max())} >= vocab_size {vocab_size}")
                    writer.write(arr)
            finally:
                hashes[f"{split}.bin"] = writer.close()
            counts[split] = writer.n_tokens
        manifest = {
            "source": manifest_extra.pop("source", {}),
            "tokenizer_sha256": manifest_extra.pop("tokenizer_sha256", None),
            "vocab_size": int(vocab_size),
            "eot_id": int(eot_id),
            "dtype": dtype,
            "tokens": counts,
            "sha256": hashes,
            "entropy_rate_nats": manifest_extra.pop("entropy_rate_nats", None),
            **manifest_extra,
        }
    write_json(out_dir / "manifest.json", manifest)  # last: the manifest marks completion
    return manifest


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy (nats per token) of the token frequencies: the loss of a model that knows
    only how often each token occurs, the bar every trained model must sit well below."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# --------------------------------------------------------------------------- tokenising
MAX_PIECE_CHARS = 1 << 20  # longer documents are encoded in pieces cut at newlines


def _pieces(text: str) -> list[str]:
    """Cut a very long document at newlines into pieces of at most ~MAX_PIECE_CHARS."""
    if len(text) <= MAX_PIECE_CHARS:
        return [text]
    out, start = [], 0
    while len(text) - start > MAX_PIECE_CHARS:
        cut = text.rfind("\n", start + MAX_PIECE_CHARS // 2, start + MAX_PIECE_CHARS)
        cut = start + MAX_PIECE_CHARS if cut < 0 else cut + 1
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def iter_text_batches(parquet_path: Path, batch_docs: int = 512, batch_chars: int = 1 << 21) -> Iterator[list[str]]:
    """Lists of documents from a text parquet, each list at most ``batch_docs`` documents
    or about ``batch_chars`` characters (memory stays bounded whatever the documents)."""
    import pyarrow.parquet as pq

    if not parquet_path.is_file():
        raise InputError(f"{parquet_path}: text split not found (run `sparsescale corpus` first)")
    pf = pq.ParquetFile(parquet_path)
    if "text" not in pf.schema_arrow.names:
        raise InputError(f"{parquet_path}: no column 'text' (columns: {pf.schema_arrow.names})")
    buf: list[str] = []
    chars = 0
    for rb in pf.iter_batches(batch_size=64, columns=["text"]):
        for text in rb.column(0).to_pylist():
            buf.append(text)
            chars += len(text)
            if len(buf) >= batch_docs or chars >= batch_chars:
                yield buf
                buf, chars = [], 0
    if buf:
        yield buf


def encode_docs(tokenizer, docs: list[str], eot_id: int, out_dtype=np.int64) -> np.ndarray:
    """Token ids of ``docs``, each followed by ``eot_id``, as one flat array."""
    if any(len(d) > MAX_PIECE_CHARS for d in docs):
        ids = []
        for d in docs:
            pieces = tokenizer.encode_batch_fast(_pieces(d), add_special_tokens=False)
            ids.append(list(itertools.chain.from_iterable(e.ids for e in pieces)))
    else:
        ids = [e.ids for e in tokenizer.encode_batch_fast(docs, add_special_tokens=False)]
    total = sum(map(len, ids)) + len(ids)
    eot = (eot_id,)
    flat = np.fromiter(
        itertools.chain.from_iterable(itertools.chain.from_iterable((i, eot) for i in ids)),
        dtype=out_dtype,
        count=total,
    )
    return flat


def load_tokenizer(path: str | os.PathLike):
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: tokenizer file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises plain Exception
        raise InputError(f"{path}: not a valid tokenizers JSON file ({err})") from err


def build_shards(
    tokenizer_path: str | os.PathLike,
    text_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_docs: int = 512,
    batch_chars: int = 1 << 21,
    dtype: str | None = None,
    log_every_s: float = 10.0,
) -> dict:
    """Tokenise ``text_dir/{train,val}.parquet`` into ``out_dir`` (atomic); return the manifest."""
    tokenizer_path, text_dir, out_dir = Path(tokenizer_path), Path(text_dir), Path(out_dir)
    tok = load_tokenizer(tokenizer_path)
    eot_id = tok.token_to_id(EOT_TOKEN)
    if eot_id is None:
        raise InputError(f"{tokenizer_path}: has no end-of-document token {EOT_TOKEN!r}")
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    vocab_size = max(vocab_size, max(tok.get_vocab(with_added_tokens=True).values()) + 1)
    dtype = dtype or choose_dtype(vocab_size)
    if dtype not in DTYPE_LIMITS:
        raise InputError(f"--dtype must be one of {sorted(DTYPE_LIMITS)}, got {dtype!r}")
    stats_path = text_dir / "stats.json"
    stats = read_json(stats_path) if stats_path.is_file() else {}
    counts, docs, hashes = {}, {}, {}
    unigram = np.zeros(vocab_size, dtype=np.int64)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        for split in SPLITS:
            final = out_dir / f"{split}.bin"
            tmp = stack.enter_context(atomic_path(final))
            writer = ShardWriter(tmp, dtype, name=str(final))
            n_docs, last_log = 0, time.perf_counter()
            try:
                for batch in iter_text_batches(text_dir / f"{split}.parquet", batch_docs, batch_chars):
                    ids = encode_docs(tok, batch, eot_id)
                    writer.write(ids)
                    if split == "train":
                        unigram += np.bincount(ids, minlength=vocab_size)
                    n_docs += len(batch)
                    now = time.perf_counter()
                    if now - last_log >= log_every_s:
                        dt = now - t0
                        log.info(f"{split}: {n_docs} docs, {writer.n_tokens} tokens, {n_docs / dt:.0f} docs/s, "
                                 f"{writer.n_tokens / dt:.0f} tokens/s")
                        last_log = now
            finally:
                hashes[f"{split}.bin"] = writer.close()
            if writer.n_tokens == 0:
                raise InputError(f"{text_dir / f'{split}.parquet'}: no documents, nothing to tokenise")
            counts[split], docs[split] = writer.n_tokens, n_docs
            log.info(f"{split}: {n_docs} docs -> {writer.n_tokens} tokens ({dtype})")
        text_bytes = stats.get("bytes", {})
        manifest = {
            "source": stats.get("source", {}),
            "tokenizer_sha256": sha256_file(tokenizer_path),
            "tokenizer_path": str(tokenizer_path),
            "vocab_size": int(vocab_size),
            "eot_id": int(eot_id),
            "eot_token": EOT_TOKEN,
            "dtype": dtype,
            "tokens": counts,
            "documents": docs,
            "sha256": hashes,
            "entropy_rate_nats": stats.get("entropy_rate_nats"),
            "unigram_entropy_nats": unigram_entropy(unigram),
            "bytes_per_token": {
                s: (text_bytes[s] / counts[s]) if isinstance(text_bytes, dict) and s in text_bytes else None
                for s in SPLITS
            },
            "text_content_sha256": stats.get("content_sha256"),
            "python_version": stats.get("python_version", sys.version.split()[0]),
            "synthetic": stats.get("synthetic"),
            "tokenize_seconds": round(time.perf_counter() - t0, 3),
        }
    write_json(out_dir / "manifest.json", manifest)  # last: the manifest marks completion
    return manifest
