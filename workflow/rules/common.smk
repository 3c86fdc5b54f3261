import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# This workflow's own files (package source, notebooks, report captions) as paths from the
# working directory: "." when run from this checkout, the checkout's folder when another
# workflow imports this one as a `module` (README: "Use from another workflow"). Relative,
# so no output records an absolute path.
WORKFLOW_ROOT = Path(
    os.path.relpath(
        Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parents[1]
    )
)
PACKAGE_SRC = WORKFLOW_ROOT / "src"
# the config helpers below come from the same checkout as the rules' code
sys.path.insert(0, str(PACKAGE_SRC.resolve()))

import sparsescale.config as study
from sparsescale.io import InputError, read_json
from sparsescale.notebook import fits_read
from sparsescale.report import TITLES, item_caption, report_group

# Rules call the package from this checkout, with the `python` of the activated venv or of
# the rule's conda env (--sdm conda), which holds the dependencies but not the package.
SPARSESCALE = f"PYTHONPATH={shlex.quote(str(PACKAGE_SRC))} python -m sparsescale"
COMPILE_CACHE = "results/cache/torch-compile"

try:
    STUDY = study.resolve(config)
except InputError as err:
    raise WorkflowError(f"Invalid config: {err}") from None

RUNS = study.runs(STUDY)
# experiments with `more_seeds`: a checkpoint reads their runs and adds the seeds a
# when-to-prune group still needs for its standard error target (docs/study-design.md)
MORE_SEED_GROUPS = study.more_seed_groups(STUDY)
MORE_SEED_BASE = study.more_seed_base_runs(MORE_SEED_GROUPS, RUNS)
RUN_ID = "{corpus}/{scale}/{budget}/{schedule}/seed{seed}"
RUN_DIR = f"results/runs/{RUN_ID}"
# Snakemake's per-job benchmarks (wall and CPU seconds, peak RSS); a run's is
# {TRAIN_BENCHMARKS}/{run_id}.tsv, which `sparsescale aggregate` joins to the runs table
BENCHMARKS = "results/benchmarks"
TRAIN_BENCHMARKS = f"{BENCHMARKS}/train"
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


def run_files(name, runs=RUNS):
    """One file of each run (default: every run of the experiments' grids), e.g. run_files('metrics.json')."""
    return [f"{run.directory}/{name}" for run in runs]


def run_benchmarks(runs=RUNS):
    """Each run's benchmark file, written by Snakemake when its train job ends."""
    return [f"{TRAIN_BENCHMARKS}/{run.run_id}.tsv" for run in runs]


def added_runs():
    """The runs the more_seeds checkpoint added: known once it has run, so that only the
    aggregate, not the grids' own runs, waits for it."""
    if not MORE_SEED_GROUPS:
        return []
    added = read_json(checkpoints.more_seeds.get().output[0])["runs"]
    return sorted({study.Run(**run) for run in added} - set(RUNS))


def workflow_file(path):
    """A file of this workflow (notebook template, package module) from the working directory."""
    return str(WORKFLOW_ROOT / path)


def train_launcher():
    """Training runs data-parallel under torchrun when a job gets several GPUs. With
    training.compile, every job of a shape reuses one persistent compile cache."""
    cache = f"TORCHINDUCTOR_CACHE_DIR={COMPILE_CACHE} "
    gpus = resource("train", "gpus", 0)
    if gpus > 1:
        return f"{cache}PYTHONPATH={shlex.quote(str(PACKAGE_SRC))} torchrun --standalone --nproc_per_node={gpus} -m sparsescale"
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
            # the config's default (the fit's bootstrap count), not the CLI's (none)
            "--heldout-refits": spec.get("heldout_refits", spec["bootstrap"]),
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


def notebook_fits(wildcards):
    """The fits (role -> JSON) a template reads, as its metadata names them: a changed fit
    redraws only the notebooks that read it."""
    return fits_read(
        WORKFLOW_ROOT / f"notebooks/{wildcards.notebook}.ipynb", fit_roles()
    )


def notebook_helpers(wildcards):
    """The package modules a template imports: the reading, claim and drawing helpers, and its own."""
    own = {"cost": ["cost.py"], "planner": ["plan.py"]}.get(wildcards.notebook, [])
    return [
        workflow_file(f"src/sparsescale/{module}")
        for module in ["results.py", "claims.py", "figures.py", *own]
    ]


def notebook_data(wildcards):
    """Files a template reads besides the study's outputs: the planner's papers' scales
    (config/paper.yaml) and the published coefficient sets shipped with the package."""
    if wildcards.notebook != "planner":
        return []
    published = sorted((WORKFLOW_ROOT / "src/sparsescale/published").glob("*.json"))
    return [workflow_file("config/paper.yaml"), *map(str, published)]


def notebook_options(wildcards, input):
    manifests = {
        corpus: f"results/data/{corpus}/tokens/manifest.json" for corpus in CORPORA
    }
    # the fits the template waits for (its input), by role: no second read of its metadata
    given_fits = {
        role: path for role, path in fit_roles().items() if path in input.fits
    }
    return shlex.join(
        [
            *("-p", "runs_csv", input.runs),
            *("-p", "steps_parquet", input.steps),
            *("-p", "fits", study.to_json(given_fits)),
            *("-p", "data_manifests", study.to_json(manifests)),
        ]
    )


# Snakemake's own report (`snakemake --report report.zip`) lists every figure and table of
# every notebook folder: category = notebook, subcategory = the scale a result is drawn for
# or else the claim its notebook tests, labels = its name and the notebook's caption.
def notebook_title(wildcards):
    return TITLES.get(wildcards.notebook, wildcards.notebook)


def report_item(wildcards):
    """(kind, name) of a report entry, from the wildcards of the notebook rule's report patterns."""
    if hasattr(wildcards, "figure"):
        return "figure", wildcards.figure
    return "table", wildcards.table


def report_subcategory(wildcards):
    budgets = {run.budget for run in RUNS}
    return report_group(wildcards.notebook, report_item(wildcards)[1], CORPORA, budgets)


def report_labels(wildcards, output):
    kind, name = report_item(wildcards)
    return {"name": name, "caption": item_caption(output[0], kind, name)}
