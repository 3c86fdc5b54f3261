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
