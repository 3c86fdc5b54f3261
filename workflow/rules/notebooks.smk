rule notebook:
    input:
        template=workflow_file("notebooks/{notebook}.ipynb"),
        # the package modules the template imports: a change redraws its figures
        helpers=notebook_helpers,
        # the planner's papers' scales and published coefficient sets
        data=notebook_data,
        runs=rules.aggregate.output.runs_csv,
        steps=rules.aggregate.output.steps,
        fits=lambda wildcards: list(notebook_fits(wildcards).values()),
        manifests=expand(rules.shards.output.manifest, corpus=CORPORA),
    output:
        report(
            directory("results/notebooks/{notebook}"),
            patterns=["figures/{figure}.png", "tables/{table}.csv"],
            caption="../report/notebook.rst",
            category=notebook_title,
            subcategory=report_subcategory,
            labels=report_labels,
        ),
    log:
        "results/logs/notebook/{notebook}.log",
    benchmark:
        f"{BENCHMARKS}/notebook/{{notebook}}.tsv"
    conda:
        "../../envs/notebook.yaml"
    threads: resource("notebook", "threads", 1)
    resources:
        mem_mb=resource("notebook", "mem_mb", 2000),
        runtime=resource("notebook", "runtime", 30),
    params:
        options=notebook_options,
    shell:
        f"{SPARSESCALE} notebook --template {{input.template}} --out-dir {{output}} {{params.options}} > {{log}} 2>&1"
