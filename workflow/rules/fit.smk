rule fit_laws:
    input:
        runs=rules.aggregate.output.runs_csv,
        # the laws library: a change to a law or its fitting procedure refits
        laws=sorted(Path(workflow_file("src/sparsescale/laws")).glob("*.py")),
    output:
        "results/fits/{fit}.json",
    log:
        "results/logs/fit/{fit}.log",
    benchmark:
        f"{BENCHMARKS}/fit/{{fit}}.tsv"
    conda:
        "../../envs/fit.yaml"
    threads: resource("fit", "threads", 1)
    resources:
        mem_mb=resource("fit", "mem_mb", 2000),
        runtime=resource("fit", "runtime", 30),
    params:
        options=fit_options,
    shell:
        f"{SPARSESCALE} fit {{params.options}} --workers {{threads}} --data {{input.runs}} --out {{output}} > {{log}} 2>&1"
