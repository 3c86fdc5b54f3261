"""Tokenisation throughput and memory of the shard pipeline vs raw ``tokenizers``.

Usage: ``python benchmarks/tokenize_speed.py [--quick] [--rounds R] [--repeat K] [--vocab V]``

Builds the embedded corpus (a 1 MB subset with ``--quick``), trains a byte-level BPE, and
compares, on the same train+val documents,

- raw: the documents already in a Python list, one ``Tokenizer.encode_batch`` call (the
  ``tokenizers`` reference) and one ``encode_batch_fast`` call (what the pipeline calls);
- pipeline: ``sparsescale.data.shards.build_shards`` end to end (parquet reading in
  batches, encoding, EOT insertion, dtype check, sha256, writing, manifest).

Every call gets a freshly loaded tokenizer (a cold BPE cache, as ``build_shards`` has). One
child process times ``--rounds`` rounds of the three calls, in an order that alternates, so
that what else runs on the machine hits both sides alike; figures are medians over rounds,
ratios the median of the per-round ratios:

- ``pipeline_vs_raw_encode_batch_ratio`` (and ``..._fast_ratio``): tokens per CPU second
  (user + system, all threads) of the pipeline over the raw call's: the work each side does
  per token, which a busy shared machine hardly changes (three runs agree within 5%);
- ``..._wall_ratio``: the same from wall-clock time, which on a shared machine moves with
  its load (within about 10% across runs);
- ``*_tokens_per_s``: wall-clock throughput.

(Before issue 14 each side was timed once, one after the other, ``encode_batch`` first in
its process with a cold cache and ``encode_batch_fast`` right after it with a warm one: the
ratio read 0.77, 1.11 and 1.46 in three runs.) ``--quick`` takes 7 s on an idle 2-core
machine, 30-45 s on one loaded 6x over.

Peak RSS (VmHWM) comes from two more fresh children, raw (all documents in memory, one
``encode_batch``) and pipeline. ``--repeat K`` makes the text K times larger (row groups
repeated) to show that the pipeline's peak memory does not grow with the corpus. Prints
``name: value`` lines.
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
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

CHILD = r"""
import json, logging, sys, time
logging.disable(logging.INFO)
import pyarrow.parquet as pq
from tokenizers import Tokenizer
from sparsescale.data.shards import build_shards
mode, tokenizer, text_dir, out_dir, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

def clocks():
    return time.perf_counter(), time.process_time()  # CPU time: user + system, all threads

def timed(call, count_tokens):
    (wall0, cpu0), result = clocks(), call()
    wall1, cpu1 = clocks()
    return {"wall_s": wall1 - wall0, "cpu_s": cpu1 - cpu0, "tokens": count_tokens(result)}

def raw(name):
    tok = Tokenizer.from_file(tokenizer)  # a cold BPE cache for each call, as build_shards has
    call = getattr(tok, name)
    # + one EOT per document, as the pipeline writes
    return timed(lambda: call(docs, add_special_tokens=False), lambda enc: sum(len(e.ids) for e in enc) + len(docs))

def pipeline():
    return timed(lambda: build_shards(tokenizer, text_dir, out_dir), lambda manifest: sum(manifest["tokens"].values()))

if mode != "rss-pipeline":
    docs = []
    for split in ("train", "val"):
        docs += pq.read_table(f"{text_dir}/{split}.parquet").column("text").to_pylist()
sides = {"encode_batch": lambda: raw("encode_batch"), "encode_batch_fast": lambda: raw("encode_batch_fast"),
         "pipeline": pipeline}
if mode == "time":
    out = []
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        out.append({name: sides[name]() for name in order})
else:
    sides[{"rss-raw": "encode_batch", "rss-pipeline": "pipeline"}[mode]]()
    out = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] / 1024
print(json.dumps(out))
"""


def _child(mode: str, *args):
    res = subprocess.run([sys.executable, "-c", CHILD, mode, *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"benchmark child ({mode}) failed ({res.returncode})")
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
    ap.add_argument("--quick", action="store_true", help="a 1 MB subset (< 1 minute)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timings of each side (medians reported)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the text K times (memory vs corpus size)")
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args(argv)

    import logging

    logging.disable(logging.INFO)
    from sparsescale.data.corpus import build_corpus
    from sparsescale.data.tokenizer import build_tokenizer

    with tempfile.TemporaryDirectory(prefix="sparsescale-bench-") as tmp:
        tmp = Path(tmp)
        spec = {"source": "embedded", "val_fraction": 0.05,
                "max_bytes": 1_000_000 if args.quick else None,
                "tokenizer": {"kind": "bpe", "vocab_size": args.vocab}}
        t0 = time.perf_counter()
        stats = build_corpus(spec, tmp / "text")
        corpus_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_tokenizer(spec, tmp / "text" / "train.parquet", tmp / "tokenizer.json")
        tok_s = time.perf_counter() - t0
        if args.repeat > 1:
            _repeat_text(tmp / "text", args.repeat)
        child_args = (tmp / "tokenizer.json", tmp / "text", tmp / "tokens", args.rounds)
        rounds = _child("time", *child_args)
        for r in rounds:
            assert len({side["tokens"] for side in r.values()}) == 1, r

        def median(values) -> float:
            return statistics.median(list(values))

        def ratio(clock: str, raw: str) -> float:
            return median(r[raw][clock] / r["pipeline"][clock] for r in rounds)  # same tokens on both sides

        figures = {
            "text_mb": sum(stats["bytes"].values()) * args.repeat / 1e6,
            "tokens": rounds[0]["pipeline"]["tokens"],
            "rounds": args.rounds,
            "corpus_seconds": corpus_s,
            "tokenizer_train_seconds": tok_s,
            **{f"{name}_tokens_per_s": median(r[side]["tokens"] / r[side]["wall_s"] for r in rounds)
               for name, side in (("raw_encode_batch", "encode_batch"), ("raw_encode_batch_fast", "encode_batch_fast"),
                                  ("pipeline", "pipeline"))},
            "pipeline_vs_raw_encode_batch_ratio": ratio("cpu_s", "encode_batch"),
            "pipeline_vs_raw_encode_batch_fast_ratio": ratio("cpu_s", "encode_batch_fast"),
            "pipeline_vs_raw_encode_batch_wall_ratio": ratio("wall_s", "encode_batch"),
            "pipeline_vs_raw_encode_batch_fast_wall_ratio": ratio("wall_s", "encode_batch_fast"),
            "peak_rss_mb": _child("rss-pipeline", *child_args),
            "raw_peak_rss_mb": _child("rss-raw", *child_args),
        }
    for name, value in figures.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
