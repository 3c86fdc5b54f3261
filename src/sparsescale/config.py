"""The study config: schema validation, defaults, cross-checks and grid expansion.

The Snakefile and the CLI share this module, so the run grid a dry run lists is the one the
tests check. Nothing here imports torch: it runs on every Snakemake invocation.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sparsescale.io import InputError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
RUNS_ROOT = "results/runs"


@dataclass(frozen=True, order=True)
class Run:
    """One training job: a point of the experiment grid."""

    corpus: str
    scale: str
    budget: str
    schedule: str
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.corpus}/{self.scale}/{self.budget}/{self.schedule}/seed{self.seed}"

    @property
    def directory(self) -> str:
        return f"{RUNS_ROOT}/{self.run_id}"

    def wildcards(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "scale": self.scale,
            "budget": self.budget,
            "schedule": self.schedule,
            "seed": self.seed,
        }


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def load_config(*sources: str | Path | dict) -> dict:
    """Load and merge config files (later ones override, as Snakemake's --configfile does);
    a source may also be a mapping already loaded (e.g. a fragment about to be written)."""
    config: dict = {}
    for source in sources:
        if not isinstance(source, dict):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"{path}: config file not found")
            source = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        _deep_update(config, copy.deepcopy(source))
    return resolve(config)


def resolve(config: dict) -> dict:
    """Validate against the schema, fill every default, and cross-check references."""
    schema = load_schema()
    _validate(config, schema)
    config = copy.deepcopy(config)
    fill_defaults(config, schema, schema)
    check(config)
    return config


def _validate(instance: dict, schema: dict) -> None:
    import jsonschema

    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path)
    )
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.path) or "(top level)"
        raise InputError(f"config key '{where}': {err.message}")


def resolve_schedule_family(family: str, spec: Any) -> dict[str, dict]:
    """One schedule family given outside a config file (a mapping as under ``schedules:``):
    checked against the schema, defaults filled, and expanded exactly as the config's own."""
    schema = load_schema()
    sub = {"$defs": schema["$defs"], "type": "object", "additionalProperties": False,
           "properties": {"schedules": schema["properties"]["schedules"]}}
    instance = {"schedules": {family: copy.deepcopy(spec)}}
    _validate(instance, sub)
    fill_defaults(instance, sub, sub)
    return schedule_variants(family, instance["schedules"][family])


def check(config: dict) -> None:
    """Cross-references the schema cannot express, each error naming its key."""
    for i, exp in enumerate(config["experiments"]):
        where = f"experiments[{i}] ({exp['name']})"
        if exp["corpus"] not in config["corpora"]:
            raise InputError(f"{where}: corpus '{exp['corpus']}' is not defined under 'corpora'")
        for key, section in (("scales", "models"), ("budgets", "budgets")):
            for name in exp[key]:
                if name not in config[section]:
                    raise InputError(f"{where}: {key} entry '{name}' is not defined under '{section}'")
    all_schedules = schedules(config)  # raises on inconsistent schedule fields
    for name in (n for exp in config["experiments"] for n in exp["schedules"]):
        if name not in config["schedules"] and name not in all_schedules:
            raise InputError(
                f"experiments: schedules entry '{name}' is neither a family under 'schedules' "
                f"nor one of its schedule ids ({', '.join(sorted(all_schedules)[:6])}, ...)"
            )
    for i, exp in enumerate(config["experiments"]):
        both = sorted(set(exp["seeds"]) & set(exp.get("more_seeds", ())))
        if both:
            raise InputError(f"experiments[{i}] ({exp['name']}): more_seeds repeats seed(s) {both} of its 'seeds'")
    names = [fit["name"] for fit in config["fits"]]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise InputError(f"fits: duplicate fit name(s) {sorted(duplicates)}")
    for name, model in config["models"].items():
        if model["d_model"] % model["n_heads"] or (model["d_model"] // model["n_heads"]) % 2:
            raise InputError(
                f"models/{name}: d_model ({model['d_model']}) must split into n_heads "
                f"({model['n_heads']}) heads of even size (rotary embeddings)"
            )


def schedule_variants(family: str, spec: dict) -> dict[str, dict]:
    """Expand one schedule family into {schedule_id: resolved pruning spec}."""
    where = f"schedules/{family}"
    method = spec["method"]
    if method == "dense":
        return {family: {"method": "dense"}}
    if "start" not in spec:
        raise InputError(f"{where}: method '{method}' needs 'start' (a fraction of training)")
    starts = _as_list(spec["start"])
    if ("end" in spec) == ("duration" in spec):
        raise InputError(f"{where}: give exactly one of 'end' or 'duration'")
    if method == "nm":
        if "n" not in spec or "m" not in spec:
            raise InputError(f"{where}: method 'nm' needs 'n' and 'm' (n non-zeros in every m)")
        if not 0 < spec["n"] < spec["m"]:
            raise InputError(f"{where}: need 0 < n < m, got n={spec['n']}, m={spec['m']}")
        if "final_sparsity" in spec:
            raise InputError(f"{where}: 'final_sparsity' is implied by n:m (1 - n/m); remove it")
        sparsities = [1 - spec["n"] / spec["m"]]
    else:
        if "final_sparsity" not in spec:
            raise InputError(f"{where}: method '{method}' needs 'final_sparsity'")
        sparsities = _as_list(spec["final_sparsity"])
    variants: dict[str, dict] = {}
    for sparsity, start in itertools.product(sparsities, starts):
        ends = (
            _as_list(spec["end"])
            if "end" in spec
            else [round(start + d, 6) for d in _as_list(spec["duration"])]
        )
        for end in ends:
            if end > 1 + 1e-9:
                continue  # start + duration past the end of training
            if not start < end:
                raise InputError(f"{where}: start ({start}) must be before end ({end})")
            pattern = f"{spec['n']}of{spec['m']}" if method == "nm" else f"s{_pct(sparsity)}"
            schedule_id = f"{family}-{pattern}-{_pct(start)}to{_pct(end)}"
            variants[schedule_id] = {
                "method": method,
                "shape": spec["shape"],
                "basis": spec["basis"],
                "final_sparsity": round(sparsity, 6),
                "start": start,
                "end": end,
                "every": spec["every"],
                "n": spec.get("n"),
                "m": spec.get("m"),
                "embedding_sparsity": spec["embedding_sparsity"],
                "init": spec["init"],
            }
    if not variants:
        raise InputError(f"{where}: no schedule fits inside training (every start + duration > 1)")
    return variants


def schedules(config: dict) -> dict[str, dict]:
    """All schedule ids of the config, each with its family name."""
    out = {}
    for family, spec in config["schedules"].items():
        for schedule_id, resolved in schedule_variants(family, spec).items():
            out[schedule_id] = {**resolved, "family": family}
    return out


def _experiment_schedules(exp: dict, all_schedules: dict[str, dict]) -> list[str]:
    """An experiment's schedule ids: an entry names a whole family, or one schedule id of a family."""
    return [s for s, v in all_schedules.items() if v["family"] in exp["schedules"] or s in exp["schedules"]]


def runs(config: dict) -> list[Run]:
    """The study's runs before any seed a ``more_seeds`` step adds: the union of every
    experiment's grid, sorted, without repeats."""
    all_schedules = schedules(config)
    found: set[Run] = set()
    for exp in config["experiments"]:
        for scale, budget, schedule, seed in itertools.product(
            exp["scales"], exp["budgets"], _experiment_schedules(exp, all_schedules), exp["seeds"]
        ):
            found.add(Run(exp["corpus"], scale, budget, schedule, seed))
    return sorted(found)


def more_seed_groups(config: dict) -> list[dict]:
    """The groups of every experiment with ``more_seeds``, one per (scale, budget, final
    sparsity) as the when-to-prune claim groups runs: the group's sparse schedule ids, and the
    seeds that may be added to it, in order. JSON-ready: the ``more-seeds`` step receives it."""
    all_schedules = schedules(config)
    groups = []
    for exp in (exp for exp in config["experiments"] if "more_seeds" in exp):
        by_sparsity: dict[float, list[str]] = {}
        for schedule in _experiment_schedules(exp, all_schedules):
            if all_schedules[schedule]["method"] != "dense":
                by_sparsity.setdefault(round(all_schedules[schedule]["final_sparsity"], 6), []).append(schedule)
        for scale, budget, (sparsity, schedule_ids) in itertools.product(
            exp["scales"], exp["budgets"], sorted(by_sparsity.items())
        ):
            groups.append({"experiment": exp["name"], "corpus": exp["corpus"], "scale": scale, "budget": budget,
                           "final_sparsity": sparsity, "schedules": schedule_ids, "seeds": exp["more_seeds"]})
    return groups


def more_seed_base_runs(groups: list[dict], study_runs: list[Run]) -> list[Run]:
    """The runs the ``more_seeds`` step sizes ``groups`` (``more_seed_groups``) from: every run
    of the study, from any experiment, of a schedule of a group."""
    grids = {(g["corpus"], g["scale"], g["budget"], s) for g in groups for s in g["schedules"]}
    return [run for run in study_runs if (run.corpus, run.scale, run.budget, run.schedule) in grids]


def run_spec(config: dict, run: Run) -> dict:
    """The JSON spec the train command receives: everything that determines the run."""
    pruning = dict(schedules(config)[run.schedule])
    pruning.pop("family")
    return {
        "run_id": run.run_id,
        "corpus": run.corpus,
        "scale": run.scale,
        "budget": run.budget,
        "schedule": run.schedule,
        "seed": run.seed,
        "model": config["models"][run.scale],
        "budget_spec": config["budgets"][run.budget],
        "pruning": pruning,
        "training": config["training"],
    }


def dense_parent(run: Run) -> Run:
    """The dense run whose final model a dense-start schedule prunes and continues."""
    return Run(run.corpus, run.scale, run.budget, "dense", run.seed)


def fit_spec(config: dict, name: str) -> dict:
    for fit in config["fits"]:
        if fit["name"] == name:
            return fit
    raise InputError(f"fits: no fit named '{name}'")


def to_json(obj: Any) -> str:
    """Canonical JSON, so Snakemake's params-change trigger sees only real changes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _pct(fraction: float) -> str:
    value = round(fraction * 100, 4)
    return str(int(value)) if value == int(value) else str(value).replace(".", "p")


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _deep_update(base: dict, override: dict) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Set schema defaults, also inside additionalProperties and array items."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                fill_defaults(instance[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in instance.items():
                if key not in schema.get("properties", {}):
                    fill_defaults(value, extra, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            fill_defaults(item, schema["items"], root)
