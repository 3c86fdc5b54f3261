# sparsescale: tokens -> training runs -> aggregate -> law fits -> notebooks -> report.
# The study is declared in config/config.yaml (profiles swap in config/tiny.yaml or
# config/paper.yaml); the rules live in workflow/rules/, one file per stage.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/notebooks.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report.html",
        "results/SUMMARY.md",
        "results/MANIFEST.json",
        # the seeds a more_seeds step added, a target of its own: Snakemake would not run the
        # checkpoint for an aggregate that is already up to date with the grids' runs
        rules.more_seeds.output if MORE_SEED_GROUPS else [],
