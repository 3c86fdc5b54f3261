"""CLI of the data stage: ``sparsescale corpus``, ``sparsescale tokenizer``, ``sparsescale shards``.

::

    sparsescale corpus    --spec SPEC --out-dir results/data/{corpus}/text
    sparsescale tokenizer --spec SPEC --text results/data/{corpus}/text/train.parquet \\
                          --out results/data/{corpus}/tokenizer.json
    sparsescale shards    --tokenizer results/data/{corpus}/tokenizer.json \\
                          --text-dir results/data/{corpus}/text --out-dir results/data/{corpus}/tokens

SPEC is the corpus block of the config as a JSON object or the path of a JSON file.
"""

from __future__ import annotations


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "corpus",
        help="stream a corpus source into text/{train,val}.parquet + stats.json",
        description="Stream one corpus (embedded | local | hub | synthetic) into train/val parquet files "
        "split by a hash of each document, and write stats.json.",
    )
    p.add_argument("--spec", required=True, help="corpus spec: a JSON object or a JSON file")
    p.add_argument("--out-dir", required=True, help="output folder, e.g. results/data/{corpus}/text")
    p.add_argument("--log-every", type=int, default=10_000, help="progress line every N documents")
    p.set_defaults(func=_corpus)

    p = subparsers.add_parser(
        "tokenizer",
        help="train (or load) the tokenizer on the train split",
        description="Byte-level BPE trained on the train split, word-level for the synthetic language, "
        "or a pretrained tokenizer.json, per spec['tokenizer'].",
    )
    p.add_argument("--spec", required=True, help="corpus spec (its 'tokenizer' block is used)")
    p.add_argument("--text", required=True, help="text/train.parquet written by `sparsescale corpus`")
    p.add_argument("--out", required=True, help="tokenizer.json to write")
    p.set_defaults(func=_tokenizer)

    p = subparsers.add_parser(
        "shards",
        help="tokenise text/{train,val}.parquet into memmap shards + manifest.json",
        description="Tokenise both splits with encode_batch, append <|endoftext|> after every document, "
        "stream uint16/uint32 ids to train.bin/val.bin and write manifest.json with sha256 hashes.",
    )
    p.add_argument("--tokenizer", required=True, help="tokenizer.json")
    p.add_argument("--text-dir", required=True, help="folder with train.parquet, val.parquet, stats.json")
    p.add_argument("--out-dir", required=True, help="output folder, e.g. results/data/{corpus}/tokens")
    p.add_argument("--batch-docs", type=int, default=512, help="documents per encode_batch call")
    p.add_argument("--dtype", choices=["uint16", "uint32"], default=None,
                   help="force the shard dtype (default: uint16 when the vocabulary fits)")
    p.set_defaults(func=_shards)


def _corpus(args) -> int:
    from sparsescale.data.corpus import build_corpus

    build_corpus(args.spec, args.out_dir, log_every_docs=max(1, args.log_every))
    return 0


def _tokenizer(args) -> int:
    from sparsescale.data.corpus import load_spec
    from sparsescale.data.tokenizer import build_tokenizer

    build_tokenizer(load_spec(args.spec), args.text, args.out)
    return 0


def _shards(args) -> int:
    from sparsescale.data.shards import build_shards
    from sparsescale.io import InputError

    if args.batch_docs < 1:
        raise InputError(f"--batch-docs must be >= 1, got {args.batch_docs}")
    build_shards(args.tokenizer, args.text_dir, args.out_dir, batch_docs=args.batch_docs, dtype=args.dtype)
    return 0
