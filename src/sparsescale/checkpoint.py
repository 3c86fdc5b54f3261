"""Checkpoints and model files that load no code and are checked before use.

A file is ``torch.save`` of a dict of tensors and plain containers (dict, list, tuple, str,
int, float, bool, None) plus two keys: ``format`` and ``sha256``, the digest of every other
entry's content (tensor dtypes, shapes and bytes, and the plain values). ``load_verified``
reads it with ``weights_only=True``, so a pickled object of any other kind is refused
before it runs, recomputes the digest and refuses a file that is not what was written.
Every refusal is a ``CheckpointError`` naming the file and what to do.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from sparsescale.io import InputError, atomic_path

FORMAT = 2


class CheckpointError(InputError):
    """A checkpoint or model file that is unreadable, modified, from an older version or for another run."""


def content_sha256(obj: Any) -> str:
    """sha256 of a nested structure of tensors and plain values, wherever its tensors live."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().reshape(-1).contiguous().cpu()
        digest.update(f"T{flat.dtype}{tuple(obj.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}".encode())
        for key, value in obj.items():
            _feed(digest, key)
            _feed(digest, value)
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for item in obj:
            _feed(digest, item)
    elif obj is None or isinstance(obj, (str, int, float, bool)):
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())  # repr of a float round-trips exactly
    else:
        raise TypeError(f"a checkpoint holds tensors and plain containers only, not {type(obj).__name__}")


def save_verified(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` atomically with its format and content digest."""
    sealed = {**state, "format": FORMAT}
    sealed["sha256"] = content_sha256(sealed)
    with atomic_path(Path(path)) as tmp:
        torch.save(sealed, tmp)


def load_verified(path: str | os.PathLike, remedy: str, map_location: str | torch.device = "cpu") -> dict:
    """Read a file written by ``save_verified``; ``remedy`` says what to do when it is refused.

    Returns the state without ``format`` and ``sha256``; raises ``CheckpointError`` for a
    file that is unreadable (truncated, not a torch file), holds anything but tensors and
    plain containers (nothing in it runs), predates the digest, or was modified."""
    path = Path(path)
    try:
        sealed = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # what weights_only raises for any object it will not build
        raise CheckpointError(
            f"{path}: holds objects other than tensors and plain containers, so it was not loaded (nothing in it "
            f"ran): written by an older version of sparsescale or by other software, it cannot be verified; {remedy}"
        ) from None
    except Exception as err:  # noqa: BLE001 -- a damaged zip raises RuntimeError, KeyError, EOFError, ... in torch
        raise CheckpointError(
            f"{path}: unreadable, truncated or damaged ({type(err).__name__}: {_first_line(err)}); {remedy}"
        ) from None
    if not isinstance(sealed, dict) or sealed.get("format") != FORMAT or "sha256" not in sealed:
        raise CheckpointError(f"{path}: written by an older version (no content digest), cannot be verified; {remedy}")
    stored = sealed.pop("sha256")
    if content_sha256(sealed) != stored:
        raise CheckpointError(f"{path}: content does not match its sha256 {stored} (modified or damaged); {remedy}")
    del sealed["format"]
    return sealed


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""
