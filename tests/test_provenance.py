"""The manifest names the rule behind every study output, and leaves out what is not one."""

from sparsescale.provenance import build_manifest

FILES = {
    "data/stdlib/tokenizer.json": "tokenizer",
    "runs/stdlib/s1/tpp20/dense/seed0/metrics.json": "train",
    "logs/train/stdlib/s1/tpp20/dense/seed0.log": "train",
    "benchmarks/train/stdlib/s1/tpp20/dense/seed0.tsv": "train",
    "design/more-seeds.json": "more_seeds",
    "logs/more_seeds.log": "more_seeds",
    "logs/aggregate.log": "aggregate",
    "fits/average-params.json": "fit_laws",
    "logs/fit/average-params.log": "fit_laws",
    "benchmarks/fit/average-params.tsv": "fit_laws",
    "benchmarks/notebook/cost.tsv": "notebook",
    "logs/report.log": "report",
    "logs/manifest.log": "manifest",
    "stray.txt": "unknown",
}
NOT_OUTPUTS = ["runs/stdlib/s1/tpp20/dense/seed0/checkpoint.pt", "cache/torch-compile/isa-avx2/fxgraph/x"]


def test_every_output_gets_its_rule_and_resume_points_and_caches_are_left_out(tmp_path):
    for relative in [*FILES, *NOT_OUTPUTS]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(relative)
    manifest = build_manifest(tmp_path)
    assert {entry["path"]: entry["rule"] for entry in manifest["files"]} == FILES
