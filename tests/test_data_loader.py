"""TokenShards: determinism from (seed, step), restart, hashes, windows."""

import numpy as np
import pytest
import torch

from sparsescale.data.loader import TokenShards
from sparsescale.data.shards import ShardWriter, choose_dtype, write_token_dir
from sparsescale.io import InputError, read_json, write_json


@pytest.fixture()
def token_dir(tmp_path):
    rng = np.random.default_rng(0)
    write_token_dir(tmp_path / "tokens", {"train": rng.integers(0, 500, 20_000), "val": rng.integers(0, 500, 3_000)},
                    vocab_size=500, eot_id=0, source={"source": "test"})
    return tmp_path / "tokens"


def test_batch_shapes_and_shift(token_dir):
    s = TokenShards(token_dir)
    assert (s.vocab_size, s.eot_id, s.num_tokens("train"), s.num_tokens("val")) == (500, 0, 20_000, 3_000)
    x, y = s.batch("train", seed=0, step=3, batch_size=8, seq_len=32)
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    # each row is a contiguous window of the shard
    arr = np.asarray(s.array("train"))
    offs = s.offsets("train", 0, 3, 8, 32)
    for row, off in zip(x.numpy(), offs):
        assert np.array_equal(row, arr[off : off + 32])


def test_determinism_across_restart(token_dir):
    a = TokenShards(token_dir)
    first = [a.batch("train", seed=7, step=i, batch_size=4, seq_len=16) for i in range(10)]
    del a
    b = TokenShards(token_dir)  # a "resumed" process starting at step 5
    for i in range(5, 10):
        x, y = b.batch("train", seed=7, step=i, batch_size=4, seq_len=16)
        assert torch.equal(x, first[i][0]) and torch.equal(y, first[i][1])
    x0, _ = b.batch("train", seed=8, step=0, batch_size=4, seq_len=16)
    assert not torch.equal(x0, first[0][0])
    assert not torch.equal(first[0][0], first[1][0])


def test_fixed_windows_repeatable_and_disjoint(token_dir):
    s = TokenShards(token_dir)
    xs, ys = s.fixed_windows("val", n_windows=20, seq_len=31)
    xs2, _ = s.fixed_windows("val", n_windows=20, seq_len=31)
    assert xs.shape == (20, 31) and torch.equal(xs, xs2)
    # more windows than the split holds: all of them, once
    xa, _ = s.fixed_windows("val", n_windows=10_000, seq_len=31)
    assert xa.shape[0] == 3_000 // 32


def test_tampered_shard_refused(token_dir):
    TokenShards(token_dir)
    path = token_dir / "train.bin"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        TokenShards(token_dir)
    TokenShards(token_dir, verify=False)  # size still matches: allowed when not verifying


def test_truncated_shard_and_bad_manifest(token_dir):
    path = token_dir / "val.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(InputError, match="size"):
        TokenShards(token_dir, verify=False)
    m = read_json(token_dir / "manifest.json")
    del m["eot_id"]
    write_json(token_dir / "manifest.json", m)
    with pytest.raises(InputError, match="eot_id"):
        TokenShards(token_dir)
    with pytest.raises(InputError, match="not found"):
        TokenShards(token_dir / "nope")


def test_window_longer_than_split(token_dir):
    s = TokenShards(token_dir)
    with pytest.raises(InputError, match="seq_len"):
        s.batch("val", seed=0, step=0, batch_size=2, seq_len=3_000)
    with pytest.raises(InputError, match="split"):
        s.batch("test", seed=0, step=0, batch_size=2, seq_len=3)


def test_dtype_choice_and_overflow(tmp_path):
    assert choose_dtype(65536) == "uint16" and choose_dtype(65537) == "uint32"
    w = ShardWriter(tmp_path / "x.bin", "uint16", name="x.bin")
    w.write(np.array([1, 65535]))
    with pytest.raises(InputError, match="overflows"):
        w.write(np.array([65536]))
    w.close()
    big = write_token_dir(tmp_path / "t32", {"train": np.array([70_000, 1, 2] * 10), "val": np.array([0, 1] * 10)},
                          vocab_size=70_001, eot_id=0)
    assert big["dtype"] == "uint32"
    s = TokenShards(tmp_path / "t32")
    x, _ = s.fixed_windows("train", 1, 5)
    assert int(x.max()) == 70_000
