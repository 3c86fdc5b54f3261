"""The run spec of ``sparsescale train``: checked against run_spec.schema.yaml (every key's
type, range and default), then resolved by pruning method and cross-checked where one key
bounds another. Errors are InputErrors that name the key (``spec.training.lr: ...``)."""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path
from typing import Any

import yaml

from sparsescale.config import fill_defaults
from sparsescale.io import InputError

SCHEMA_PATH = Path(__file__).with_name("run_spec.schema.yaml")


@functools.cache
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.cache
def _validator():
    import jsonschema

    # a bool is no number, 3.0 is no integer (a step count), and numbers are finite
    types = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
        "integer": lambda _, x: isinstance(x, int) and not isinstance(x, bool),
        "number": lambda _, x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x),
    })
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=types)(load_schema())


def validate_spec(spec: Any) -> dict:
    """Check a run spec and return it resolved (defaults filled in); InputError names the key."""
    errors = sorted(_validator().iter_errors(spec), key=lambda e: [str(p) for p in e.path])
    if errors:
        raise InputError(f"{'.'.join(['spec', *map(str, errors[0].path)])}: {errors[0].message}")
    spec = copy.deepcopy(spec)
    fill_defaults(spec, load_schema(), load_schema())
    model, training = spec["model"], spec["training"]
    if (model["d_model"] % model["n_heads"]) or (model["d_model"] // model["n_heads"]) % 2:
        raise InputError(
            f"spec.model.n_heads: d_model {model['d_model']} must split into n_heads {model['n_heads']} heads of even size"
        )
    if training["final_eval_tokens"] is not None and training["final_eval_tokens"] < training["seq_len"]:
        raise InputError(f"spec.training.final_eval_tokens: must be an integer >= seq_len ({training['seq_len']}) or "
                         f"null (the whole validation split), got {training['final_eval_tokens']!r}")
    training["betas"] = [float(b) for b in training["betas"]]
    spec["pruning"] = _resolve_pruning(spec["pruning"])
    return spec


def _resolve_pruning(p: dict) -> dict:
    """The pruning spec by method: dense's canonical form; n:m's implied sparsity; end from
    start + duration; the requirements and bounds that tie keys together."""
    method = p["method"]
    if method == "dense":
        return {
            "method": "dense", "shape": None, "final_sparsity": 0.0, "start": None, "end": None, "basis": None,
            "every": None, "n": None, "m": None, "embedding_sparsity": "none", "init": p["init"],
        }
    if method == "nm":
        n, m, fs = p["n"], p["m"], p.get("final_sparsity")
        if n is None or m is None or not n < m:
            raise InputError(f"spec.pruning.n/m: need integers 0 < n < m, got n={n!r}, m={m!r}")
        implied = 1.0 - n / m
        if fs is not None and abs(fs - implied) > 1e-5:
            raise InputError(f"spec.pruning.final_sparsity: {fs!r} disagrees with n:m = {n}:{m} (1 - n/m = {implied:.6f})")
        p["final_sparsity"] = implied
    elif p.get("final_sparsity") is None:
        raise InputError(f"spec.pruning.final_sparsity: required for method '{method}'")
    p["final_sparsity"] = float(p["final_sparsity"])
    if p.get("start") is None:
        raise InputError(f"spec.pruning.start: required for method '{method}'")
    if p.get("end") is None:
        if p.get("duration") is None:
            raise InputError("spec.pruning.end: required (or 'duration')")
        p["end"] = p["start"] + p["duration"]
        if p["end"] > 1 + 1e-9:
            raise InputError(f"spec.pruning.duration: start + duration = {p['end']} ends after training (1)")
    p.pop("duration", None)
    p["start"], p["end"] = float(p["start"]), min(float(p["end"]), 1.0)
    if p["end"] < p["start"]:
        raise InputError(f"spec.pruning.end: {p['end']} is before start {p['start']}")
    return p


def load_spec(text_or_path: str) -> dict:
    """``--spec`` is JSON text or the path of a JSON file."""
    text = text_or_path.strip()
    if not text.startswith("{"):
        path = Path(text_or_path)
        if not path.is_file():
            raise InputError(f"--spec: {text_or_path} is neither JSON nor an existing file")
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--spec: not valid JSON ({err})") from err
