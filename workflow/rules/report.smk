rule report:
    input:
        notebooks=expand(rules.notebook.output[0], notebook=NOTEBOOKS),
    output:
        html="results/report.html",
        summary="results/SUMMARY.md",
    log:
        "results/logs/report.log",
    conda:
        "../../envs/notebook.yaml"
    params:
        config=study.to_json(STUDY),
    shell:
        f"{SPARSESCALE} report --notebooks {{input.notebooks}} --config-json {{params.config:q}} --out {{output.html}} --summary {{output.summary}} > {{log}} 2>&1"


rule manifest:
    input:
        rules.report.output,
        rules.aggregate.output,
        expand(rules.fit_laws.output[0], fit=FITS),
    output:
        "results/MANIFEST.json",
    log:
        "results/logs/manifest.log",
    conda:
        "../../envs/fit.yaml"
    shell:
        f"{SPARSESCALE} manifest --results results --out {{output}} > {{log}} 2>&1"
