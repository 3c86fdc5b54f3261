rule notebook:
    input:
        template="notebooks/{notebook}.ipynb",
        # the plotting, verdict and planning helpers the templates import: a change redraws every figure
        helpers=["src/sparsescale/figures.py", "src/sparsescale/plan.py"],
        # the planner's papers' scales and published coefficient sets
        paper="config/paper.yaml",
        published=sorted(Path("src/sparsescale/published").glob("*.json")),
        runs=rules.aggregate.output.runs_csv,
        steps=rules.aggregate.output.steps,
        fits=expand(rules.fit_laws.output[0], fit=FITS),
        manifests=expand(rules.shards.output.manifest, corpus=CORPORA),
    output:
        directory("results/notebooks/{notebook}"),
    log:
        "results/logs/notebook/{notebook}.log",
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
