rule aggregate:
    input:
        metrics=run_files("metrics.json"),
        steps=run_files("steps.parquet"),
        benchmarks=run_benchmarks(),
        added_metrics=lambda wildcards: run_files("metrics.json", added_runs()),
        added_steps=lambda wildcards: run_files("steps.parquet", added_runs()),
        added_benchmarks=lambda wildcards: run_benchmarks(added_runs()),
    output:
        runs_csv="results/aggregate/runs.csv",
        runs="results/aggregate/runs.parquet",
        steps="results/aggregate/steps.parquet",
    log:
        "results/logs/aggregate.log",
    conda:
        "../../envs/fit.yaml"
    params:
        out_dir=lambda wildcards, output: Path(output.runs).parent,
    shell:
        f"{SPARSESCALE} aggregate --metrics {{input.metrics}} {{input.added_metrics}} --benchmarks {{input.benchmarks}} {{input.added_benchmarks}} --out-dir {{params.out_dir}} > {{log}} 2>&1"
