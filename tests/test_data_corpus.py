"""Corpus sources, split, spec validation and bad input."""

import json
import time

import pyarrow.parquet as pq
import pytest

from sparsescale.data.corpus import build_corpus, embedded_files, split_of, validate_spec
from sparsescale.io import InputError, read_json


def _texts(path):
    return pq.read_table(path).column("text").to_pylist()


def test_embedded_split_deterministic_and_disjoint(tmp_path):
    spec = {"source": "embedded", "val_fraction": 0.2, "max_documents": 40}
    a = build_corpus(spec, tmp_path / "a")
    b = build_corpus(json.dumps(spec), tmp_path / "b")
    assert a["content_sha256"] == b["content_sha256"]
    assert a["documents"]["train"] + a["documents"]["val"] == 40
    assert a["python_version"] and a["files"] > 100
    for split in ("train", "val"):
        assert _texts(tmp_path / "a" / f"{split}.parquet") == _texts(tmp_path / "b" / f"{split}.parquet")
    train, val = _texts(tmp_path / "a" / "train.parquet"), _texts(tmp_path / "a" / "val.parquet")
    assert train and val and not set(train) & set(val)
    assert all(split_of(t, 0.2) == "val" for t in val) and all(split_of(t, 0.2) == "train" for t in train)
    assert read_json(tmp_path / "a" / "stats.json")["bytes"]["train"] == sum(len(t.encode()) for t in train)


def test_embedded_files_exclude_tests():
    from sparsescale.data.corpus import embedded_root

    files = embedded_files()
    rel = [p.relative_to(embedded_root()).as_posix() for p in files]
    assert rel == sorted(rel)
    rel = ["/" + r for r in rel]
    assert not any("/test/" in r or "/tests/" in r or "/idlelib/" in r or "site-packages" in r for r in rel)
    assert any(r.endswith("/argparse.py") for r in rel)


def test_local_txt_replaces_and_counts_bad_bytes(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(30):
        (d / f"doc{i:02d}.txt").write_text(f"document number {i} " * 20, encoding="utf-8")
    (d / "bad.txt").write_bytes(b"caf\xe9 latin-1 \xff\xfe text " * 3)
    (d / "empty.txt").write_text("   \n")
    stats = build_corpus({"source": "local", "paths": str(d / "*.txt"), "val_fraction": 0.3}, tmp_path / "out")
    assert stats["replaced_bytes"] == 9
    assert stats["skipped_empty"] == 1
    assert sum(stats["documents"].values()) == 31
    texts = _texts(tmp_path / "out" / "train.parquet") + _texts(tmp_path / "out" / "val.parquet")
    assert any("\ufffd" in t for t in texts)


def test_local_jsonl_and_parquet(tmp_path):
    rows = [{"body": f"row {i} " * 10, "id": i} for i in range(40)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    stats = build_corpus({"source": "local", "paths": [str(tmp_path / "*.jsonl")], "text_field": "body",
                          "val_fraction": 0.25}, tmp_path / "out")
    assert sum(stats["documents"].values()) == 40
    with pytest.raises(InputError, match="text_field.*'text'.*columns"):
        build_corpus({"source": "local", "paths": str(tmp_path / "a.jsonl")}, tmp_path / "out2")
    assert not (tmp_path / "out2" / "train.parquet").exists()
    # the parquet we wrote is itself a valid local source
    stats2 = build_corpus({"source": "local", "paths": str(tmp_path / "out" / "*.parquet"), "val_fraction": 0.25},
                          tmp_path / "out3")
    assert sum(stats2["documents"].values()) == 40


def test_hub_code_path_on_local_dataset_dir(tmp_path):
    ds = tmp_path / "my_dataset"
    ds.mkdir()
    (ds / "train.jsonl").write_text("\n".join(json.dumps({"text": f"hub row {i} " * 8}) for i in range(50)))
    stats = build_corpus({"source": "hub", "name": str(ds), "split": "train", "max_tokens": 200,
                          "bytes_per_token": 4.0, "val_fraction": 0.3}, tmp_path / "out")
    assert stats["source"]["max_bytes"] == 800 and stats["truncated_by"] == "max_bytes"
    assert sum(stats["bytes"].values()) <= 800 and stats["hub"]["local_directory"]


def test_hub_unreachable_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.sparsescale.invalid")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    import datasets  # noqa: F401  (imported before the clock starts: its import time is not the probe's)

    t = time.perf_counter()
    with pytest.raises(InputError, match="allenai/c4.*unreachable"):
        build_corpus({"source": "hub", "name": "allenai/c4", "config": "en", "hub_timeout_s": 3}, tmp_path / "out")
    assert time.perf_counter() - t < 3 + 5  # the probe's timeout, and slack for a slow machine
    assert not (tmp_path / "out" / "train.parquet").exists()


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"source": "ftp"}, "'source' must be one of"),
        ({"source": "embedded", "val_fraction": 1.5}, "'val_fraction'"),
        ({"source": "embedded", "max_documents": 0}, "'max_documents'"),
        ({"source": "embedded", "vocab": 3}, "unknown key"),
        ({"source": "local", "paths": []}, "'paths'"),
        ({"source": "local", "paths": "x.txt", "text_field": ""}, "'text_field'"),
        ({"source": "hub"}, "'name'"),
        ({"source": "synthetic"}, "'n_tokens'"),
        ({"source": "synthetic", "n_tokens": 10, "vocab_size": 5000}, "'vocab_size'"),
    ],
)
def test_spec_validation(spec, match):
    with pytest.raises(InputError, match=match):
        validate_spec(spec)


def test_missing_path_and_empty_corpus(tmp_path):
    with pytest.raises(InputError, match="no file matches"):
        build_corpus({"source": "local", "paths": str(tmp_path / "nothing" / "*.txt")}, tmp_path / "o")
    (tmp_path / "e.jsonl").write_text("\n".join(json.dumps({"text": ""}) for _ in range(5)))
    with pytest.raises(InputError, match="no non-empty documents.*5 empty"):
        build_corpus({"source": "local", "paths": str(tmp_path / "e.jsonl")}, tmp_path / "o")
    (tmp_path / "one.txt").write_text("only one document")
    with pytest.raises(InputError, match="split is empty"):
        build_corpus({"source": "local", "paths": str(tmp_path / "one.txt")}, tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    with pytest.raises(InputError, match="unsupported file type"):
        (tmp_path / "x.docx").write_text("hi")
        build_corpus({"source": "local", "paths": str(tmp_path / "x.docx")}, tmp_path / "o")
