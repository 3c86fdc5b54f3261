"""Provenance: the code's git state, and the manifest of a finished study's outputs."""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
from pathlib import Path

from sparsescale.io import get_logger, sha256_file, write_json

log = get_logger("sparsescale.provenance")

# The folder (or file stem) each rule's log and benchmark take under results/logs and
# results/benchmarks (workflow/rules/*.smk), and the rule.
_RULE_OF_STAGE = {
    "corpus": "corpus", "tokenizer": "tokenizer", "shards": "shards", "train": "train",
    "more_seeds": "more_seeds", "aggregate": "aggregate", "fit": "fit_laws", "notebook": "notebook",
    "report": "report", "manifest": "manifest",
}
# Which rule writes which outputs; the first match wins.
RULE_OF_OUTPUT = (
    ("data/*/text/*", "corpus"),
    ("data/*/tokenizer.json", "tokenizer"),
    ("data/*/tokens/*", "shards"),
    ("runs/*", "train"),
    ("design/*", "more_seeds"),
    ("aggregate/*", "aggregate"),
    ("fits/*", "fit_laws"),
    ("notebooks/*", "notebook"),
    ("report.html", "report"),
    ("SUMMARY.md", "report"),
) + tuple(
    (f"{kind}/{stage}{tail}", rule)
    for kind, tails in (("logs", ("/*", ".log")), ("benchmarks", ("/*",)))
    for stage, rule in _RULE_OF_STAGE.items()
    for tail in tails
)
# Resume points, temporary models and the compile cache (shared by all training jobs and
# rebuilt on demand) are not study outputs.
NOT_OUTPUTS = ("*/checkpoint.pt", "*/model.pt", "*.tmp", "MANIFEST.json", "README.md", "cache/*")


def git_state(repo: str | Path = ".") -> dict:
    """The commit the code ran from and whether the work tree had changes."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def build_manifest(results: str | Path) -> dict:
    results = Path(results)
    files = []
    for path in sorted(p for p in results.rglob("*") if p.is_file()):
        relative = path.relative_to(results).as_posix()
        if any(fnmatch.fnmatch(relative, pattern) for pattern in NOT_OUTPUTS):
            continue
        rule = next(r for pattern, r in RULE_OF_OUTPUT + (("*", "unknown"),) if fnmatch.fnmatch(relative, pattern))
        files.append(
            {"path": relative, "rule": rule, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        )
    return {"results": results.as_posix(), "git": git_state(), "files": files}


def _run(args: argparse.Namespace) -> int:
    manifest = build_manifest(args.results)
    write_json(args.out, manifest)
    log.info("manifest of %d files written to %s", len(manifest["files"]), args.out)
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "manifest",
        help="list every output under results/ with its sha256 and the rule that made it",
    )
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", required=True, help="e.g. results/MANIFEST.json")
    parser.set_defaults(func=_run)
