"""The study config: validation errors name the key; the grid expands as declared."""

import copy

import pytest
import yaml

from sparsescale import config as study
from sparsescale.io import InputError

MINIMAL = {
    "corpora": {"c": {"source": "embedded", "tokenizer": {"kind": "bpe", "vocab_size": 256}}},
    "models": {"m1": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32}},
    "budgets": {"b1": {"tokens": 1000}},
    "schedules": {
        "dense": {"method": "dense"},
        "geo": {
            "method": "global",
            "final_sparsity": [0.5, 0.8],
            "start": [0.0, 0.25, 0.5, 0.75],
            "duration": [0.25, 0.5, 0.75, 1.0],
        },
    },
    "training": {},
    "experiments": [
        {"name": "e", "corpus": "c", "scales": ["m1"], "budgets": ["b1"], "schedules": ["dense", "geo"]}
    ],
    "fits": [],
}


def resolved(**changes):
    config = copy.deepcopy(MINIMAL)
    config.update(changes)
    return study.resolve(config)


def test_start_duration_grid_keeps_the_ten_pairs_inside_training():
    schedules = study.schedules(resolved())
    sparse = [s for s in schedules.values() if s["method"] == "global"]
    # 4 starts x 4 durations with start + duration <= 1 is 10 pairs, per final sparsity
    assert len(sparse) == 2 * 10
    assert all(s["end"] <= 1 for s in sparse)
    assert "geo-s50-25to75" in schedules
    assert schedules["geo-s80-0to100"]["final_sparsity"] == 0.8


def test_runs_are_the_union_of_experiments_without_repeats():
    config = copy.deepcopy(MINIMAL)
    config["experiments"].append(dict(config["experiments"][0], name="again", seeds=[0, 1]))
    runs = study.runs(study.resolve(config))
    assert len(runs) == 21 * 2  # 1 dense + 20 sparse, seeds 0 and 1 (seed 0 listed twice)
    assert runs[0].directory.startswith("results/runs/c/m1/b1/")


def _with_more_seeds(**more) -> dict:
    """MINIMAL's grid at seeds 0 and 1 (plus ``more``), and another experiment with seed 2 of one schedule."""
    grid = dict(MINIMAL["experiments"][0], seeds=[0, 1], **more)
    third = dict(grid, name="third-seed", schedules=["geo-s50-25to75"], seeds=[2])
    third.pop("more_seeds", None)
    return dict(copy.deepcopy(MINIMAL), experiments=[grid, third])


def test_more_seeds_groups_name_their_schedules_and_candidate_seeds():
    config = study.resolve(_with_more_seeds(more_seeds=[5, 6]))
    groups = study.more_seed_groups(config)
    assert [(g["final_sparsity"], len(g["schedules"]), g["seeds"]) for g in groups] == [(0.5, 10, [5, 6]),
                                                                                       (0.8, 10, [5, 6])]
    assert all(s.startswith("geo-s50-") for s in groups[0]["schedules"])
    # sized from every run of those schedules, the other experiment's seed 2 too; no dense run
    base = study.more_seed_base_runs(groups, study.runs(config))
    assert len(base) == 20 * 2 + 1 and {r.seed for r in base} == {0, 1, 2}
    assert "dense" not in {r.schedule for r in base}
    assert study.more_seed_groups(study.resolve(_with_more_seeds())) == []
    assert len(study.runs(config)) == len(study.runs(study.resolve(_with_more_seeds())))  # added later, not here


def test_more_seeds_may_not_repeat_a_seed_of_the_experiment():
    with pytest.raises(InputError, match=r"experiments\[0\] \(e\): more_seeds repeats seed\(s\) \[1\]"):
        study.resolve(_with_more_seeds(more_seeds=[1, 5]))


def test_defaults_fill_nested_tables():
    config = resolved()
    assert config["training"]["betas"] == [0.9, 0.95]
    assert config["schedules"]["geo"]["shape"] == "geometric"
    assert config["corpora"]["c"]["val_fraction"] == 0.05
    assert config["experiments"][0]["seeds"] == [0]


def test_run_spec_carries_everything_the_run_depends_on():
    config = resolved()
    run = study.Run("c", "m1", "b1", "geo-s50-25to75", 0)
    spec = study.run_spec(config, run)
    assert spec["model"] == MINIMAL["models"]["m1"]
    assert spec["budget_spec"] == {"tokens": 1000}
    assert spec["pruning"]["final_sparsity"] == 0.5
    assert (spec["pruning"]["start"], spec["pruning"]["end"]) == (0.25, 0.75)
    assert "family" not in spec["pruning"]


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c.update(bogus=1), "bogus"),
        (lambda c: c["training"].update(lr="fast"), "training/lr"),
        (lambda c: c["schedules"]["geo"].update(final_sparsity=[-0.5]), "schedules/geo/final_sparsity"),
        (lambda c: c["models"]["m1"].update(d_model=15), "models/m1"),
        (lambda c: c["experiments"][0].update(scales=["nope"]), "nope"),
        (lambda c: c["schedules"]["geo"].update(end=0.9), "schedules/geo"),
    ],
)
def test_bad_config_names_the_key(mutate, key):
    config = copy.deepcopy(MINIMAL)
    mutate(config)
    with pytest.raises(InputError, match=key.replace("/", ".*")):
        study.resolve(config)


def test_nm_sparsity_is_implied_by_the_pattern():
    config = copy.deepcopy(MINIMAL)
    config["schedules"]["nm"] = {"method": "nm", "n": 1, "m": 4, "start": 0.25, "end": 0.75}
    schedules = study.schedules(study.resolve(config))
    assert schedules["nm-1of4-25to75"]["final_sparsity"] == 0.75
    config["schedules"]["nm"]["final_sparsity"] = 0.5
    with pytest.raises(InputError, match="schedules/nm.*implied"):
        study.resolve(config)


@pytest.mark.parametrize("name", ["config.yaml", "tiny.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name, repo_root):
    paths = [repo_root / "config" / "config.yaml"]
    if name != "config.yaml":
        paths.append(repo_root / "config" / name)
    config = study.load_config(*paths)
    assert study.runs(config)
    # every fit names runs that exist in the grid by method
    methods = {s["method"] for s in study.schedules(config).values()}
    assert "dense" in methods and len(methods) >= 2


def test_an_experiment_can_pick_single_schedules_of_a_family():
    config = copy.deepcopy(MINIMAL)
    config["experiments"][0]["schedules"] = ["dense", "geo-s50-25to75", "geo-s80-0to100"]
    runs = study.runs(study.resolve(config))
    assert [run.schedule for run in runs] == ["dense", "geo-s50-25to75", "geo-s80-0to100"]
    config["experiments"][0]["schedules"] = ["geo-s50-25to80"]
    with pytest.raises(InputError, match="geo-s50-25to80"):
        study.resolve(config)
