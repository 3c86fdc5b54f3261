DATA_DIR = "results/data/{corpus}"


rule corpus:
    output:
        train=f"{DATA_DIR}/text/train.parquet",
        val=f"{DATA_DIR}/text/val.parquet",
        stats=f"{DATA_DIR}/text/stats.json",
    log:
        "results/logs/corpus/{corpus}.log",
    conda:
        "../../envs/data.yaml"
    threads: resource("data", "threads", 1)
    resources:
        mem_mb=resource("data", "mem_mb", 2000),
        runtime=resource("data", "runtime", 60),
    params:
        spec=corpus_spec,
        out_dir=lambda wildcards, output: Path(output.train).parent,
    shell:
        f"{SPARSESCALE} corpus --spec {{params.spec:q}} --out-dir {{params.out_dir}} > {{log}} 2>&1"


rule tokenizer:
    input:
        train=rules.corpus.output.train,
    output:
        f"{DATA_DIR}/tokenizer.json",
    log:
        "results/logs/tokenizer/{corpus}.log",
    conda:
        "../../envs/data.yaml"
    threads: resource("data", "threads", 1)
    resources:
        mem_mb=resource("data", "mem_mb", 2000),
        runtime=resource("data", "runtime", 60),
    params:
        spec=tokenizer_spec,
    shell:
        f"{SPARSESCALE} tokenizer --spec {{params.spec:q}} --text {{input.train}} --out {{output}} > {{log}} 2>&1"


rule shards:
    input:
        text=rules.corpus.output,
        tokenizer=rules.tokenizer.output,
    output:
        train=f"{DATA_DIR}/tokens/train.bin",
        val=f"{DATA_DIR}/tokens/val.bin",
        manifest=f"{DATA_DIR}/tokens/manifest.json",
    log:
        "results/logs/shards/{corpus}.log",
    conda:
        "../../envs/data.yaml"
    threads: resource("data", "threads", 1)
    resources:
        mem_mb=resource("data", "mem_mb", 2000),
        runtime=resource("data", "runtime", 60),
    params:
        text_dir=lambda wildcards, input: Path(input.text[0]).parent,
        out_dir=lambda wildcards, output: Path(output.manifest).parent,
    shell:
        f"{SPARSESCALE} shards --tokenizer {{input.tokenizer}} --text-dir {{params.text_dir}} --out-dir {{params.out_dir}} > {{log}} 2>&1"
