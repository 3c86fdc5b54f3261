rule train:
    input:
        manifest="results/data/{corpus}/tokens/manifest.json",
        shards=multiext("results/data/{corpus}/tokens/", "train.bin", "val.bin"),
        init=dense_start_model,
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        steps=f"{RUN_DIR}/steps.parquet",
        model=temp(f"{RUN_DIR}/model.pt"),
    log:
        f"results/logs/train/{RUN_ID}.log",
    benchmark:
        f"{TRAIN_BENCHMARKS}/{RUN_ID}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: resource("train", "threads", 1)
    resources:
        mem_mb=resource("train", "mem_mb", 4000),
        runtime=resource("train", "runtime", 120),
        gpu=resource("train", "gpus", 0),
    params:
        spec=train_spec,
        data_dir=lambda wildcards, input: Path(input.manifest).parent,
        out_dir=lambda wildcards, output: Path(output.metrics).parent,
        init=lambda wildcards, input: cli_options({"--init-from": input.init or None}),
    shell:
        f"{train_launcher()} train --spec {{params.spec:q}} --data {{params.data_dir}} --out-dir {{params.out_dir}} --threads {{threads}} {{params.init}} > {{log}} 2>&1"


# An internal pilot: once an experiment's own seeds have run, add the seeds a when-to-prune
# group needs for its seed-paired gap's standard error to be a third of the margin.
checkpoint more_seeds:
    input:
        metrics=run_files("metrics.json", MORE_SEED_BASE),
    output:
        "results/design/more-seeds.json",
    log:
        "results/logs/more_seeds.log",
    conda:
        "../../envs/fit.yaml"
    params:
        groups=study.to_json(MORE_SEED_GROUPS),
    shell:
        f"{SPARSESCALE} more-seeds --groups {{params.groups:q}} --metrics {{input.metrics}} --out {{output}} > {{log}} 2>&1"
