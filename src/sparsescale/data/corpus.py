"""Corpus sources -> ``text/train.parquet``, ``text/val.parquet``, ``text/stats.json``.

Every source is read through Hugging Face ``datasets`` as an ``IterableDataset``
(streaming): ``load_dataset(..., streaming=True)`` for hub datasets and local
jsonl/json/parquet/csv files, ``IterableDataset.from_generator`` for local txt files (so
non-UTF-8 bytes can be replaced *and counted*), the embedded default and the synthetic
language. Documents are written in parquet row groups as they arrive: the corpus is never
held in memory whole.

Split: a document goes to validation when ``sha256(salt + text)`` read as a fraction of
2^64 is below ``val_fraction`` (deterministic, disjoint; identical texts share a split).
The synthetic source hashes ``(seed, document index)`` instead, so that the split is an
exactly unbiased sample of its i.i.d. documents (see ``synthetic.py``).

Spec keys (``--spec``; unknown keys are an error, keys starting with ``_`` and
``description`` are ignored):

common     ``source`` (embedded|local|hub|synthetic), ``val_fraction`` (0..1, default
           0.05), ``max_documents`` (int|null), ``max_bytes`` (UTF-8 bytes of text kept,
           int|null), ``tokenizer`` (used by ``sparsescale tokenizer``)
embedded   ``include_topics`` (bool, default true: pydoc's English help topics as documents)
local      ``paths`` (glob or list of globs; .txt/.md, .jsonl/.json, .parquet, .csv),
           ``text_field`` (default "text"), ``txt_unit`` ("file" | "paragraph")
hub        ``name``, ``config``, ``split`` ("train"), ``revision``, ``text_field``,
           ``max_tokens`` (approximate cap: converted to ``max_bytes`` with
           ``bytes_per_token``, default 4.0), ``hub_timeout_s`` (5)
synthetic  ``n_tokens`` (tokens incl. end-of-document, both splits), ``vocab_size``
           (incl. the EOT token), ``seed``, ``successors``, ``mix``, ``zipf_exponent``,
           ``mean_doc_tokens``
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import hashlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from sparsescale.io import InputError, atomic_path, get_logger, write_json

log = get_logger("sparsescale.data.corpus")

SPLIT_SALT = b"sparsescale-split-v1\0"
COMMON_KEYS = {"source", "val_fraction", "max_documents", "max_bytes", "tokenizer", "description"}
SOURCE_KEYS = {
    "embedded": {"include_topics"},
    "local": {"paths", "text_field", "txt_unit"},
    "hub": {"name", "config", "split", "revision", "text_field", "max_tokens", "bytes_per_token", "hub_timeout_s"},
    "synthetic": {"n_tokens", "vocab_size", "seed", "successors", "mix", "zipf_exponent", "mean_doc_tokens"},
}
# stdlib directories that are tests, tools or generated tables rather than library source
EMBEDDED_EXCLUDE_DIRS = {
    "test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "turtledemo",
    "encodings", "ensurepip", "__phello__",
}


# ------------------------------------------------------------------------------- spec
def load_spec(value: str | dict) -> dict:
    """A spec given as a dict, a JSON string, or the path of a JSON file."""
    if isinstance(value, dict):
        return dict(value)
    text = value.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"--spec: not valid JSON ({err})") from err
    else:
        path = Path(value)
        if not path.is_file():
            raise InputError(f"--spec: {value!r} is neither a JSON object nor an existing JSON file")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(spec, dict):
        raise InputError(f"--spec: expected a JSON object, got {type(spec).__name__}")
    return spec


def _num(spec: dict, key: str, kind=float, lo=None, hi=None, default=None, nullable=False, lo_open=False):
    value = spec.get(key, default)
    if value is None:
        if nullable:
            return None
        raise InputError(f"corpus spec: {key!r} is required ({kind.__name__})")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"corpus spec: {key!r} must be a number, got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise InputError(f"corpus spec: {key!r} must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise InputError(f"corpus spec: {key!r} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise InputError(f"corpus spec: {key!r} must be <= {hi}, got {value!r}")
    return value


def _str(spec: dict, key: str, default=None, nullable=False, choices=None):
    value = spec.get(key, default)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        raise InputError(f"corpus spec: {key!r} must be a non-empty string, got {value!r}")
    if choices and value not in choices:
        raise InputError(f"corpus spec: {key!r} must be one of {sorted(choices)}, got {value!r}")
    return value


def validate_spec(spec: dict) -> dict:
    """Check a corpus spec and return it with defaults filled in."""
    if not isinstance(spec, dict):
        raise InputError(f"corpus spec: expected an object, got {type(spec).__name__}")
    source = spec.get("source")
    if source not in SOURCE_KEYS:
        raise InputError(f"corpus spec: 'source' must be one of {sorted(SOURCE_KEYS)}, got {source!r}")
    allowed = COMMON_KEYS | SOURCE_KEYS[source]
    unknown = sorted(k for k in spec if k not in allowed and not str(k).startswith("_"))
    if unknown:
        raise InputError(
            f"corpus spec: unknown key(s) {unknown} for source {source!r}; expected some of {sorted(allowed)}"
        )
    out = dict(spec)
    vf = _num(spec, "val_fraction", default=0.05)
    if not 0.0 < vf < 1.0:
        raise InputError(f"corpus spec: 'val_fraction' must be in (0, 1), got {vf!r}")
    out["val_fraction"] = vf
    out["max_documents"] = _num(spec, "max_documents", int, lo=1, nullable=True)
    out["max_bytes"] = _num(spec, "max_bytes", int, lo=1, nullable=True)
    if "tokenizer" in spec and not isinstance(spec["tokenizer"], dict):
        raise InputError(f"corpus spec: 'tokenizer' must be an object, got {spec['tokenizer']!r}")
    if source == "embedded":
        inc = spec.get("include_topics", True)
        if not isinstance(inc, bool):
            raise InputError(f"corpus spec: 'include_topics' must be true or false, got {inc!r}")
        out["include_topics"] = inc
    elif source == "local":
        paths = spec.get("paths")
        if isinstance(paths, str):
            paths = [paths]
        if not paths or not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise InputError(f"corpus spec: 'paths' must be a glob or a list of globs, got {spec.get('paths')!r}")
        out["paths"] = paths
        out["text_field"] = _str(spec, "text_field", "text")
        out["txt_unit"] = _str(spec, "txt_unit", "file", choices={"file", "paragraph"})
    elif source == "hub":
        out["name"] = _str(spec, "name")
        out["config"] = _str(spec, "config", None, nullable=True)
        out["split"] = _str(spec, "split", "train")
        out["revision"] = _str(spec, "revision", None, nullable=True)
        out["text_field"] = _str(spec, "text_field", "text")
        out["max_tokens"] = _num(spec, "max_tokens", float, lo=0, lo_open=True, nullable=True)
        out["bytes_per_token"] = _num(spec, "bytes_per_token", float, lo=0, lo_open=True, default=4.0)
        out["hub_timeout_s"] = _num(spec, "hub_timeout_s", float, lo=0, lo_open=True, default=5.0)
        if out["max_tokens"] is not None:
            cap = int(out["max_tokens"] * out["bytes_per_token"])
            out["max_bytes"] = cap if out["max_bytes"] is None else min(out["max_bytes"], cap)
    elif source == "synthetic":
        from sparsescale.data.synthetic import MAX_VOCAB

        out["n_tokens"] = _num(spec, "n_tokens", int, lo=1)
        out["vocab_size"] = _num(spec, "vocab_size", int, lo=3, hi=MAX_VOCAB, default=256)
        out["seed"] = _num(spec, "seed", int, lo=0, default=0)
        out["successors"] = _num(spec, "successors", int, lo=1, hi=out["vocab_size"] - 1, default=4)
        out["mix"] = _num(spec, "mix", float, lo=0, hi=1, default=0.5)
        out["zipf_exponent"] = _num(spec, "zipf_exponent", float, lo=0, default=1.0)
        out["mean_doc_tokens"] = _num(spec, "mean_doc_tokens", float, lo=1, lo_open=True, default=256.0)
    return out


# ----------------------------------------------------------------------- utf-8 decoding
class _ReplaceCounter:
    """A codecs error handler that replaces undecodable bytes with U+FFFD and counts them."""

    def __init__(self):
        self.count = 0
        self.name = f"sparsescale-replace-{id(self)}"
        codecs.register_error(self.name, self)

    def __call__(self, err: UnicodeDecodeError):
        self.count += err.end - err.start
        return "\ufffd", err.end

    def decode(self, data: bytes) -> str:
        return data.decode("utf-8", errors=self.name)


# ----------------------------------------------------------------------------- sources
def embedded_root() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"])


def embedded_files(root: Path | None = None) -> list[Path]:
    """The stdlib .py files of the embedded corpus, sorted by relative path."""
    root = root or embedded_root()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_parts = Path(dirpath).relative_to(root).parts
        dirnames[:] = sorted(
            d for d in dirnames if d not in EMBEDDED_EXCLUDE_DIRS and not d.startswith("config-")
        )
        if any(p in EMBEDDED_EXCLUDE_DIRS for p in rel_parts):
            continue
        for name in filenames:
            if not name.endswith(".py") or name.startswith("_sysconfigdata"):
                continue
            if name.startswith("test_") or name == "topics.py" and rel_parts == ("pydoc_data",):
                continue
            files.append(Path(dirpath) / name)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


class _Counters:
    """Holds the replacement counters of the generators (not a list: ``datasets`` shards
    over list-valued ``gen_kwargs``)."""

    def __init__(self):
        self.items: list[_ReplaceCounter] = []

    def append(self, counter: _ReplaceCounter) -> None:
        self.items.append(counter)

    def total(self) -> int:
        return sum(c.count for c in self.items)


def _embedded_gen(include_topics: bool, counter_box: _Counters):
    counter = _ReplaceCounter()
    counter_box.append(counter)
    root = embedded_root()
    for path in embedded_files(root):
        yield {"text": counter.decode(path.read_bytes()), "origin": path.relative_to(root).as_posix()}
    if include_topics:
        from pydoc_data import topics

        for key in sorted(topics.topics):
            yield {"text": topics.topics[key], "origin": f"pydoc_data.topics:{key}"}


def _txt_gen(files: tuple[str, ...], unit: str, counter_box: _Counters):
    counter = _ReplaceCounter()
    counter_box.append(counter)
    for f in files:
        text = counter.decode(Path(f).read_bytes())
        if unit == "paragraph":
            for i, para in enumerate(p for p in text.split("\n\n")):
                yield {"text": para, "origin": f"{f}:{i}"}
        else:
            yield {"text": text, "origin": f}


def _synthetic_gen(spec: dict):
    import numpy as np

    from sparsescale.data.synthetic import symbol_names

    lang = _synthetic_language(spec)
    names = np.array(symbol_names(lang.V), dtype=object)
    n, i = 0, 0
    for doc in lang.documents():
        yield {"text": " ".join(names[doc].tolist()), "split_key": f"synthetic:{spec['seed']}:{i}"}
        n += doc.size + 1
        i += 1
        if n >= spec["n_tokens"]:
            return


def _synthetic_language(spec: dict):
    from sparsescale.data.synthetic import SyntheticLanguage

    return SyntheticLanguage(
        vocab_size=spec["vocab_size"], seed=spec["seed"], successors=spec["successors"], mix=spec["mix"],
        zipf_exponent=spec["zipf_exponent"], mean_doc_tokens=spec["mean_doc_tokens"],
    )


def _expand_globs(patterns: list[str]) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not matches:
            raise InputError(f"corpus spec 'paths': no file matches {pattern!r} (cwd {os.getcwd()})")
        files.extend(matches)
    return list(dict.fromkeys(files))


_BUILDERS = {".txt": "txt", ".text": "txt", ".md": "txt", ".jsonl": "json", ".json": "json",
             ".parquet": "parquet", ".csv": "csv"}


def _hub_reachable(timeout_s: float) -> str | None:
    """None when the hub endpoint accepts a TCP connection within ``timeout_s``, else why not."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[str | None] = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(None)
        except OSError as err:
            result.append(f"{type(err).__name__}: {err}")

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout
    thread.start()
    thread.join(timeout_s)
    if not result:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    return None if result[0] is None else f"cannot connect to {host}:{port} ({result[0]})"


def _offline_env() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def open_source(spec: dict, counter_box: _Counters) -> tuple[Iterator[dict], dict]:
    """(iterator over row dicts with 'text' [and 'split_key', 'origin'], info) for a validated spec."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    source = spec["source"]
    info: dict[str, Any] = {}
    text_field = spec.get("text_field", "text")

    if source == "embedded":
        root = embedded_root()
        info.update(python_version=sys.version.split()[0], stdlib_root=str(root),
                    files=len(embedded_files(root)))
        ds = datasets.IterableDataset.from_generator(
            _embedded_gen, gen_kwargs={"include_topics": spec["include_topics"], "counter_box": counter_box}
        )
        return iter(ds), info

    if source == "synthetic":
        lang = _synthetic_language(spec)
        info["synthetic"] = lang.describe()
        info["entropy_rate_nats"] = info["synthetic"]["entropy_rate_nats"]
        ds = datasets.IterableDataset.from_generator(_synthetic_gen, gen_kwargs={"spec": spec})
        return iter(ds), info

    if source == "local":
        files = _expand_globs(spec["paths"])
        groups: dict[str, list[str]] = {}
        for f in files:
            builder = _BUILDERS.get(Path(f).suffix.lower())
            if builder is None:
                raise InputError(
                    f"corpus spec 'paths': {f}: unsupported file type {Path(f).suffix!r}; "
                    f"expected one of {sorted(_BUILDERS)}"
                )
            groups.setdefault(builder, []).append(f)
        info["files"] = len(files)

        def rows():
            for builder, group in groups.items():
                if builder == "txt":
                    ds = datasets.IterableDataset.from_generator(
                        _txt_gen, gen_kwargs={"files": tuple(group), "unit": spec["txt_unit"], "counter_box": counter_box}
                    )
                    yield from ds
                else:
                    ds = datasets.load_dataset(builder, data_files=group, split="train", streaming=True)
                    yield from _field_rows(ds, text_field, f"{builder} files {group[:3]}{'...' if len(group) > 3 else ''}")

        return rows(), info

    if source == "hub":
        name = spec["name"]
        is_local = Path(name).exists()
        if not is_local and not _offline_env():
            why = _hub_reachable(spec["hub_timeout_s"])
            if why:
                raise InputError(
                    f"corpus spec 'name': hub dataset {name!r} is unreachable: {why}. No network? Use a local copy "
                    "(source 'local', or 'name' set to a dataset directory), or set HF_HUB_OFFLINE=1 to use the "
                    "datasets cache"
                )
        kwargs = {"split": spec["split"], "streaming": True}
        if spec.get("revision"):
            kwargs["revision"] = spec["revision"]
        args = [name] + ([spec["config"]] if spec.get("config") else [])
        try:
            ds = datasets.load_dataset(*args, **kwargs)
        except (FileNotFoundError, ConnectionError, ValueError) as err:
            raise InputError(f"corpus spec 'name': cannot load dataset {name!r} "
                             f"(config {spec.get('config')!r}, split {spec['split']!r}): {err}") from err
        except Exception as err:  # DatasetNotFoundError and friends
            raise InputError(f"corpus spec 'name': cannot load dataset {name!r}: {type(err).__name__}: {err}") from err
        info["hub"] = {"name": name, "config": spec.get("config"), "split": spec["split"], "local_directory": is_local}
        return _field_rows(ds, text_field, f"dataset {name!r}"), info

    raise InputError(f"corpus spec: unknown source {source!r}")


def _field_rows(ds, text_field: str, where: str) -> Iterator[dict]:
    it = iter(ds)
    first = True
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except InputError:
            raise
        except Exception as err:
            raise InputError(f"{where}: failed to read ({type(err).__name__}: {err})") from err
        if first:
            if text_field not in row:
                raise InputError(
                    f"corpus spec 'text_field': {text_field!r} is not a column of {where}; columns: {sorted(row)}"
                )
            first = False
        value = row.get(text_field)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: field {text_field!r} holds {type(value).__name__}, expected text")
        yield {"text": value}


# ------------------------------------------------------------------------------ writer
def split_of(key: str, val_fraction: float) -> str:
    h = hashlib.sha256(SPLIT_SALT + key.encode("utf-8", errors="surrogatepass")).digest()
    return "val" if int.from_bytes(h[:8], "big") / 2.0**64 < val_fraction else "train"


class _SplitWriter:
    def __init__(self, path: Path, rows_per_group: int, bytes_per_group: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema([("text", pa.string())])
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.rows_per_group, self.bytes_per_group = rows_per_group, bytes_per_group
        self.buf: list[str] = []
        self.buf_bytes = 0
        self.docs = 0
        self.bytes = 0
        self.chars = 0

    def add(self, text: str, nbytes: int):
        self.buf.append(text)
        self.buf_bytes += nbytes
        self.docs += 1
        self.bytes += nbytes
        self.chars += len(text)
        if len(self.buf) >= self.rows_per_group or self.buf_bytes >= self.bytes_per_group:
            self.flush()

    def flush(self):
        if self.buf:
            self.writer.write_table(self.pa.table({"text": self.pa.array(self.buf, type=self.pa.string())}))
            self.buf, self.buf_bytes = [], 0

    def close(self):
        self.flush()
        self.writer.close()


def build_corpus(
    spec: dict | str,
    out_dir: str | os.PathLike,
    log_every_docs: int = 10_000,
    rows_per_group: int = 4096,
    bytes_per_group: int = 16 << 20,
) -> dict:
    """Stream the source of ``spec`` into ``out_dir`` (atomic); return the stats dict."""
    spec = validate_spec(load_spec(spec))
    out_dir = Path(out_dir)
    counter_box = _Counters()
    rows, info = open_source(spec, counter_box)
    t0 = time.perf_counter()
    content = hashlib.sha256()
    skipped_empty = 0
    n_seen = 0
    total_bytes = 0
    truncated_by = None
    vf = spec["val_fraction"]
    with contextlib.ExitStack() as stack:
        writers = {}
        for split in ("train", "val"):
            tmp = stack.enter_context(atomic_path(out_dir / f"{split}.parquet"))
            writers[split] = _SplitWriter(tmp, rows_per_group, bytes_per_group)
            stack.callback(writers[split].writer.close)  # closes the file on error too (idempotent)
        for row in rows:
            text = row.get("text")
            if text is None or not text.strip():
                skipped_empty += 1
                continue
            data = text.encode("utf-8", errors="surrogatepass")
            nbytes = len(data)
            if spec["max_bytes"] is not None and total_bytes + nbytes > spec["max_bytes"] and total_bytes > 0:
                truncated_by = "max_bytes"
                break
            split = split_of(row.get("split_key") or text, vf)
            writers[split].add(text, nbytes)
            content.update(nbytes.to_bytes(8, "little"))
            content.update(data)
            total_bytes += nbytes
            n_seen += 1
            if n_seen % log_every_docs == 0:
                dt = time.perf_counter() - t0
                log.info(f"{n_seen} docs, {total_bytes / 1e6:.1f} MB, {n_seen / dt:.0f} docs/s, {total_bytes / 1e6 / dt:.1f} MB/s")
            if spec["max_documents"] is not None and n_seen >= spec["max_documents"]:
                truncated_by = "max_documents"
                break
        for w in writers.values():
            w.close()
        where = f"source {spec['source']!r}" + (f" paths {spec['paths']}" if "paths" in spec else "") + (
            f" name {spec['name']!r}" if spec["source"] == "hub" else "")
        if n_seen == 0:
            raise InputError(
                f"corpus spec: {where} gave no non-empty documents"
                + (f" ({skipped_empty} empty text fields skipped)" if skipped_empty else "")
            )
        for split in ("train", "val"):
            if writers[split].docs == 0:
                raise InputError(
                    f"corpus spec: the {split} split is empty ({n_seen} documents, val_fraction {vf}); "
                    "use more documents or another 'val_fraction'"
                )
        replaced = counter_box.total()
        if replaced:
            log.warning(f"{replaced} undecodable bytes replaced with U+FFFD (counted in stats.json 'replaced_bytes')")
        dt = time.perf_counter() - t0
        stats = {
            "source": spec,
            "documents": {s: writers[s].docs for s in ("train", "val")},
            "bytes": {s: writers[s].bytes for s in ("train", "val")},
            "chars": {s: writers[s].chars for s in ("train", "val")},
            "replaced_bytes": replaced,
            "skipped_empty": skipped_empty,
            "entropy_rate_nats": info.pop("entropy_rate_nats", None),
            "content_sha256": content.hexdigest(),
            "truncated_by": truncated_by,
            "python_version": sys.version.split()[0],
            "seconds": round(dt, 3),
            **info,
        }
    write_json(out_dir / "stats.json", stats)  # last: stats.json marks completion
    log.info(f"corpus: {n_seen} docs ({stats['documents']}), {total_bytes / 1e6:.2f} MB in {dt:.1f} s -> {out_dir}")
    return stats
