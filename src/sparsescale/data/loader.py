"""Random-window reader over the token shards written by ``sparsescale shards``.

``TokenShards(tokens_dir)`` opens ``train.bin`` / ``val.bin`` as read-only numpy memmaps,
checks them against ``manifest.json`` (sizes always, sha256 when ``verify=True``) and
serves windows of ``seq_len + 1`` tokens:

- ``batch(split, seed, step, batch_size, seq_len)``: offsets drawn from a generator seeded
  by ``(seed, step)`` only, so a resumed run reads exactly the batches it would have read;
- ``fixed_windows(split, n_windows, seq_len, seed)``: non-overlapping windows that are the
  same on every call (for evaluation).

Both return ``(x, y)`` int64 torch tensors of shape ``[B, T]`` with ``y`` shifted by one.
The gather is one vectorised numpy fancy-index per batch (no Python loop per token).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sparsescale.io import InputError, read_json, sha256_file

SPLITS = ("train", "val")
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
# (path, size, mtime_ns) -> sha256, so several TokenShards in one process hash a file once
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


class TokenShards:
    """The tokenised train/val shards of one corpus (``results/data/{corpus}/tokens``)."""

    def __init__(self, tokens_dir: str | os.PathLike, verify: bool = True):
        self.dir = Path(tokens_dir)
        manifest_path = self.dir / "manifest.json"
        if not self.dir.is_dir():
            raise InputError(f"{self.dir}: token directory not found")
        self.manifest = read_json(manifest_path)
        for key in ("vocab_size", "eot_id", "dtype", "tokens", "sha256"):
            if key not in self.manifest:
                raise InputError(f"{manifest_path}: missing key {key!r}")
        dtype_name = self.manifest["dtype"]
        if dtype_name not in _DTYPES:
            raise InputError(f"{manifest_path}: 'dtype' must be one of {sorted(_DTYPES)}, got {dtype_name!r}")
        self.dtype = np.dtype(_DTYPES[dtype_name])
        self.vocab_size = int(self.manifest["vocab_size"])
        self.eot_id = int(self.manifest["eot_id"])
        self.entropy_rate_nats = self.manifest.get("entropy_rate_nats")
        self._arrays: dict[str, np.ndarray] = {}
        for split in SPLITS:
            name = f"{split}.bin"
            path = self.dir / name
            if not path.is_file():
                raise InputError(f"{path}: shard not found (listed in {manifest_path})")
            expected_n = int(self.manifest["tokens"].get(split, -1))
            size = path.stat().st_size
            if size != expected_n * self.dtype.itemsize:
                raise InputError(
                    f"{path}: size {size} bytes does not match manifest tokens[{split!r}]={expected_n} "
                    f"x {self.dtype.itemsize} bytes; the shard is truncated or was modified"
                )
            if verify:
                want = self.manifest["sha256"].get(name)
                got = _cached_sha256(path)
                if want != got:
                    raise InputError(
                        f"{path}: sha256 {got} does not match manifest.json sha256[{name!r}]={want}; "
                        "refusing a shard that was modified after it was written (rerun `sparsescale shards`)"
                    )
            if expected_n == 0:
                self._arrays[split] = np.zeros(0, dtype=self.dtype)
            else:
                self._arrays[split] = np.memmap(path, dtype=self.dtype, mode="r", shape=(expected_n,))

    # ------------------------------------------------------------------ info
    def num_tokens(self, split: str) -> int:
        return int(self._array(split).shape[0])

    def array(self, split: str) -> np.ndarray:
        """The raw read-only memmap of one split."""
        return self._array(split)

    def _array(self, split: str) -> np.ndarray:
        if split not in self._arrays:
            raise InputError(f"split must be one of {list(SPLITS)}, got {split!r}")
        return self._arrays[split]

    def _check_len(self, split: str, seq_len: int) -> int:
        n = self.num_tokens(split)
        if seq_len < 1:
            raise InputError(f"seq_len must be >= 1, got {seq_len}")
        if n < seq_len + 1:
            raise InputError(
                f"{self.dir}/{split}.bin has {n} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                "use a larger corpus or a shorter sequence"
            )
        return n

    # --------------------------------------------------------------- windows
    @staticmethod
    def _rng(seed: int, step: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(step)])))

    def _gather(self, split: str, offsets: np.ndarray, seq_len: int):
        import torch

        arr = self._array(split)
        idx = offsets[:, None] + np.arange(seq_len + 1, dtype=np.int64)[None, :]
        windows = np.asarray(arr[idx], dtype=np.int64)
        w = torch.from_numpy(windows)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def offsets(self, split: str, seed: int, step: int, batch_size: int, seq_len: int) -> np.ndarray:
        """The window start offsets that ``batch`` reads (depends only on seed, step, sizes)."""
        n = self._check_len(split, seq_len)
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        return self._rng(seed, step).integers(0, n - seq_len, size=batch_size, dtype=np.int64)

    def batch(self, split: str, seed: int, step: int, batch_size: int, seq_len: int):
        """Random windows, deterministic from (seed, step): ``x, y`` int64 tensors ``[B, T]``."""
        return self._gather(split, self.offsets(split, seed, step, batch_size, seq_len), seq_len)

    def fixed_windows(self, split: str, n_windows: int, seq_len: int, seed: int = 0):
        """``n_windows`` non-overlapping windows, identical on every call with the same args.

        If the split holds fewer than ``n_windows`` non-overlapping windows, all of them are
        returned (so the first dimension can be smaller than ``n_windows``).
        """
        n = self._check_len(split, seq_len)
        if n_windows < 1:
            raise InputError(f"n_windows must be >= 1, got {n_windows}")
        slots = n // (seq_len + 1)
        k = min(int(n_windows), slots)
        rng = self._rng(seed, -1 & 0xFFFFFFFF)
        chosen = np.sort(rng.choice(slots, size=k, replace=False)) if k < slots else np.arange(slots)
        return self._gather(split, chosen.astype(np.int64) * (seq_len + 1), seq_len)

    def epochs(self, split: str, tokens_read: int) -> float:
        """How many passes over ``split`` a run reading ``tokens_read`` tokens makes."""
        n = self.num_tokens(split)
        return float(tokens_read) / n if n else float("inf")

    def __repr__(self) -> str:
        return (
            f"TokenShards({str(self.dir)!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id}, "
            f"train={self.num_tokens('train')}, val={self.num_tokens('val')}, dtype={self.dtype.name})"
        )
