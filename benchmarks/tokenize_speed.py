"""Tokenisation throughput and memory of the shard pipeline vs raw ``tokenizers``.

Usage: ``python benchmarks/tokenize_speed.py [--quick] [--repeat K] [--vocab V]``

Builds the embedded corpus (a subset with ``--quick``), trains a byte-level BPE, then in
fresh child processes (peak RSS = the child's VmHWM) times

- raw: all train+val documents loaded into a Python list, one ``Tokenizer.encode_batch``
  call (the ``tokenizers`` reference) and one ``encode_batch_fast`` call;
- pipeline: ``sparsescale.data.shards.build_shards`` end to end (parquet reading in
  batches, encoding, EOT insertion, dtype check, sha256, writing, manifest).

``--repeat K`` makes the text K times larger (row groups repeated) to show that the
pipeline's peak memory does not grow with the corpus. Prints ``name: value`` lines.
"""

from __future__ import annotations

import os
import sys

# this file is named like the stdlib module `tokenize`: drop its folder from the import
# path, or `import pandas` (via datasets) would import this script instead
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

RAW = r"""
import json, sys, time
import pyarrow.parquet as pq
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
docs = []
for split in ("train", "val"):
    docs += pq.read_table(f"{sys.argv[2]}/{split}.parquet").column("text").to_pylist()
out = {}
for name in ("encode_batch", "encode_batch_fast"):
    best = None
    for _ in range(int(sys.argv[3])):
        t = time.perf_counter()
        enc = getattr(tok, name)(docs, add_special_tokens=False)
        dt = time.perf_counter() - t
        n = sum(len(e.ids) for e in enc) + len(docs)  # + one EOT per document, as the pipeline
        del enc
        best = dt if best is None else min(best, dt)
    out[name] = {"seconds": best, "tokens": n}
out["peak_rss_mb"] = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] / 1024
print(json.dumps(out))
"""

PIPE = r"""
import json, logging, sys, time
logging.disable(logging.INFO)
from sparsescale.data.shards import build_shards
best = None
for i in range(int(sys.argv[4])):
    t = time.perf_counter()
    m = build_shards(sys.argv[1], sys.argv[2], sys.argv[3])
    dt = time.perf_counter() - t
    best = dt if best is None else min(best, dt)
print(json.dumps({"seconds": best, "tokens": sum(m["tokens"].values()),
                  "peak_rss_mb": [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] / 1024}))
"""


def _child(code: str, *args) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"benchmark child failed ({res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _repeat_text(text_dir: Path, k: int) -> None:
    import pyarrow.parquet as pq

    for split in ("train", "val"):
        path = text_dir / f"{split}.parquet"
        table = pq.read_table(path)
        with pq.ParquetWriter(str(path) + ".tmp", table.schema, compression="zstd") as w:
            for _ in range(k):
                for batch in table.to_batches(max_chunksize=256):
                    w.write_batch(batch)
        Path(str(path) + ".tmp").replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a ~3 MB subset, one timing each (< 1 minute)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the text K times (memory vs corpus size)")
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args(argv)

    import logging

    logging.disable(logging.INFO)
    from sparsescale.data.corpus import build_corpus
    from sparsescale.data.tokenizer import build_tokenizer

    reps = 1 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="sparsescale-bench-") as tmp:
        tmp = Path(tmp)
        spec = {"source": "embedded", "val_fraction": 0.05,
                "max_bytes": 3_000_000 if args.quick else None,
                "tokenizer": {"kind": "bpe", "vocab_size": args.vocab}}
        t0 = time.perf_counter()
        stats = build_corpus(spec, tmp / "text")
        corpus_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_tokenizer(spec, tmp / "text" / "train.parquet", tmp / "tokenizer.json")
        tok_s = time.perf_counter() - t0
        if args.repeat > 1:
            _repeat_text(tmp / "text", args.repeat)
        raw = _child(RAW, tmp / "tokenizer.json", tmp / "text", reps)
        pipe = _child(PIPE, tmp / "tokenizer.json", tmp / "text", tmp / "tokens", reps)
        assert raw["encode_batch"]["tokens"] == pipe["tokens"], (raw, pipe)
        text_bytes = sum(stats["bytes"].values()) * args.repeat
        raw_tps = raw["encode_batch"]["tokens"] / raw["encode_batch"]["seconds"]
        fast_tps = raw["encode_batch_fast"]["tokens"] / raw["encode_batch_fast"]["seconds"]
        pipe_tps = pipe["tokens"] / pipe["seconds"]
        figures = {
            "text_mb": text_bytes / 1e6,
            "tokens": pipe["tokens"],
            "corpus_seconds": corpus_s,
            "tokenizer_train_seconds": tok_s,
            "raw_encode_batch_tokens_per_s": raw_tps,
            "raw_encode_batch_fast_tokens_per_s": fast_tps,
            "pipeline_tokens_per_s": pipe_tps,
            "pipeline_vs_raw_encode_batch_ratio": pipe_tps / raw_tps,
            "pipeline_vs_raw_encode_batch_fast_ratio": pipe_tps / fast_tps,
            "peak_rss_mb": pipe["peak_rss_mb"],
            "raw_peak_rss_mb": raw["peak_rss_mb"],
        }
    for name, value in figures.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
