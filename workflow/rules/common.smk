import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError

import sparsescale.config as study
from sparsescale.io import InputError

# Rules call the package from this checkout, with the `python` of the activated venv or of
# the rule's conda env (--sdm conda), which holds the dependencies but not the package.
SPARSESCALE = "PYTHONPATH=src python -m sparsescale"
COMPILE_CACHE = "results/cache/torch-compile"

try:
    STUDY = study.resolve(config)
except InputError as err:
    raise WorkflowError(f"Invalid config: {err}") from None

RUNS = study.runs(STUDY)
RUN_DIR = "results/runs/{corpus}/{scale}/{budget}/{schedule}/seed{seed}"
CORPORA = sorted({run.corpus for run in RUNS})
FITS = [fit["name"] for fit in STUDY["fits"]]
NOTEBOOKS = STUDY["notebooks"]


wildcard_constraints:
    corpus=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    scale=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    budget=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    schedule=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    seed=r"\d+",
    fit=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    notebook=r"[a-z_]+",


def run_of(wildcards):
    return study.Run(
        wildcards.corpus,
        wildcards.scale,
        wildcards.budget,
        wildcards.schedule,
        int(wildcards.seed),
    )


def run_files(name):
    """One file of every run of the study, e.g. run_files('metrics.json')."""
    return [f"{run.directory}/{name}" for run in RUNS]


def train_launcher():
    """Training runs data-parallel under torchrun when a job gets several GPUs. With
    training.compile, every job of a shape reuses one persistent compile cache."""
    cache = f"TORCHINDUCTOR_CACHE_DIR={COMPILE_CACHE} "
    gpus = resource("train", "gpus", 0)
    if gpus > 1:
        return f"{cache}PYTHONPATH=src torchrun --standalone --nproc_per_node={gpus} -m sparsescale"
    return cache + SPARSESCALE


def resource(family, key, default):
    """Per-rule-family resources from the config's `resources` block."""
    return STUDY["resources"].get(family, {}).get(key, default)


def corpus_spec(wildcards):
    spec = dict(STUDY["corpora"][wildcards.corpus])
    spec.pop("tokenizer")  # the tokenizer has its own rule and params
    return study.to_json(spec)


def tokenizer_spec(wildcards):
    return study.to_json(STUDY["corpora"][wildcards.corpus])


def cli_options(options):
    """Render {flag: value} as shell-quoted CLI options, skipping unset ones."""
    parts = []
    for flag, value in options.items():
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def train_spec(wildcards):
    return study.to_json(study.run_spec(STUDY, run_of(wildcards)))


def dense_start_model(wildcards):
    """A dense-start schedule prunes its scale's trained dense run and continues."""
    run = run_of(wildcards)
    if study.schedules(STUDY)[run.schedule].get("init") != "dense":
        return []
    return f"{study.dense_parent(run).directory}/model.pt"


def fit_options(wildcards):
    spec = study.fit_spec(STUDY, wildcards.fit)
    return cli_options(
        {
            "--law": spec["law"],
            "--query": spec.get("query"),
            "--n-col": spec.get("n_col"),
            "--drop-highest-loss": spec["drop_highest_loss"],
            "--min-n": spec.get("min_n"),
            "--bootstrap": spec["bootstrap"],
            "--kfold": spec["kfold"],
            "--seed": spec["seed"],
        }
    )


def fit_roles():
    """Fit JSON paths by the role the notebooks know them by."""
    return {
        fit["role"]: f"results/fits/{fit['name']}.json"
        for fit in STUDY["fits"]
        if "role" in fit
    }


def notebook_options(wildcards, input):
    manifests = {
        corpus: f"results/data/{corpus}/tokens/manifest.json" for corpus in CORPORA
    }
    return shlex.join(
        [
            *("-p", "runs_csv", input.runs),
            *("-p", "steps_parquet", input.steps),
            *("-p", "fits", study.to_json(fit_roles())),
            *("-p", "data_manifests", study.to_json(manifests)),
        ]
    )
