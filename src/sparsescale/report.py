"""One self-contained HTML report from the executed notebooks.

``sparsescale report --notebooks results/notebooks/* (--config CONFIG.yaml | --config-json JSON)
--out results/report.html [--summary results/SUMMARY.md]``

Every figure of every executed notebook folder (``figures.json`` captions, PNGs embedded as
base64 data URIs) with a caption saying what it shows and which rule and notebook made it,
every table (``tables.json`` + CSV), the verdict summary (``tables/SUMMARY.md`` of the
``against_papers`` notebook when present) and the run configuration. The file opens in a
browser with no server and is written atomically.

This module also registers the ``notebook`` subcommand (see ``sparsescale.notebook``), since
the CLI imports ``sparsescale.report`` only.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import html
import json
import os
from pathlib import Path

from sparsescale.io import InputError, get_logger, write_text

log = get_logger("sparsescale.report")

NOTEBOOK_ORDER = ("against_papers", "schedules", "training_curves", "when_to_prune", "average_params_law", "sparsity_law",
                  "cost", "planner")
TITLES = {
    "against_papers": "Against the papers: verdicts",
    "schedules": "Pruning schedules",
    "training_curves": "Training curves",
    "when_to_prune": "When to prune (paper A)",
    "average_params_law": "The average-parameter law (paper A)",
    "sparsity_law": "The sparsity law L(S, N, D) (paper B)",
    "cost": "Cost of a run",
    "planner": "Planning with the fitted laws at the papers' scales",
}
# what each notebook's results answer: the subcategory of a result drawn for no single scale
NOTEBOOK_CLAIMS = {
    "against_papers": "all claims",
    "schedules": "schedules as planned",
    "training_curves": "dense against sparse",
    "when_to_prune": "pruning from 25% to 75% of compute is near-optimal",
    "average_params_law": "the N̄ law unifies dense and sparse runs",
    "sparsity_law": "optimal sparsity rises with training data",
    "cost": "how cost grows with the work",
    "planner": "planning runs with the fitted laws",
}
RULE = "notebook"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:2.2em;border-bottom:1px solid #bbb}
figure{margin:1.5em 0;padding:.6em;border:1px solid #e3e3e3;border-radius:6px;background:#fff}
figure img{max-width:100%;height:auto;display:block;margin:auto}
figcaption{font-size:.92em;color:#333;margin-top:.5em}.prov{color:#777;font-size:.85em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}.tablewrap{overflow-x:auto;max-height:32em;overflow-y:auto}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.85em}nav a{margin-right:1em}
.summary table td:last-child{font-weight:bold}
"""


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        mag = abs(value)
        if mag != 0 and (mag >= 1e5 or mag < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if mag < 1e3 else f"{value:.4g}"
    return str(value)


def _table_html(csv_path: Path, max_rows: int = 400) -> str:
    import pandas as pd

    frame = pd.read_csv(csv_path)
    note = ""
    if len(frame) > max_rows:
        note = f"<p class='prov'>first {max_rows} of {len(frame)} rows; all in {html.escape(csv_path.name)}</p>"
        frame = frame.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in frame.astype(object).itertuples(index=False))
    return f"<div class='tablewrap'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}"


def _markdown_html(text: str) -> str:
    try:
        import mistune

        return mistune.create_markdown(plugins=["table"])(text)
    except Exception:  # pragma: no cover - mistune ships with nbconvert
        return f"<pre>{html.escape(text)}</pre>"


def _index(folder: Path, name: str, pattern: str) -> list[dict]:
    path = folder / name
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err})") from err
    sub = "figures" if name == "figures.json" else "tables"
    return [{"name": p.stem, ("png" if sub == "figures" else "csv"): p.name, "caption": ""}
            for p in sorted((folder / sub).glob(pattern))]


def item_caption(folder: str | os.PathLike, kind: str, name: str) -> str:
    """The caption a notebook recorded for its figure or table ``name`` (kind ``figure`` or ``table``)."""
    if kind not in ("figure", "table"):
        raise InputError(f"kind {kind!r}: expected 'figure' or 'table'")
    index = _index(Path(folder), f"{kind}s.json", "*.png" if kind == "figure" else "*.csv")
    return next((entry.get("caption") or "" for entry in index if entry["name"] == name), "")


def report_group(notebook: str, name: str, corpora, budgets) -> str:
    """Subcategory of a notebook result in Snakemake's report: the scale it is drawn for when its
    name ends with one (``heatmap_stdlib_tpp20`` -> ``stdlib / tpp20``, ``val_loss_vs_tokens_stdlib``
    -> ``stdlib``), else the claim its notebook tests."""
    for corpus in sorted(corpora, key=len, reverse=True):
        for budget in sorted(budgets, key=len, reverse=True):
            if name.endswith(f"_{corpus}_{budget}"):
                return f"{corpus} / {budget}"
        if name.endswith(f"_{corpus}"):
            return corpus
    return NOTEBOOK_CLAIMS.get(notebook, notebook)


def collect(notebook_dirs: list[str | os.PathLike]) -> list[dict]:
    """Each executed notebook folder as ``{name, dir, figures, tables, summary}`` in report order."""
    found = []
    for d in notebook_dirs:
        folder = Path(d)
        if not folder.is_dir():
            raise InputError(f"--notebooks {folder}: not a folder")
        name = folder.name
        if not (folder / f"{name}.ipynb").is_file():
            candidates = sorted(folder.glob("*.ipynb"))
            if not candidates:
                raise InputError(f"--notebooks {folder}: no executed notebook (.ipynb) inside")
            name = candidates[0].stem
        summary = folder / "tables" / "SUMMARY.md"
        found.append({"name": name, "dir": folder, "figures": _index(folder, "figures.json", "*.png"),
                      "tables": _index(folder, "tables.json", "*.csv"),
                      "summary": summary.read_text(encoding="utf-8") if summary.is_file() else None})
    order = {n: i for i, n in enumerate(NOTEBOOK_ORDER)}
    return sorted(found, key=lambda nb: (order.get(nb["name"], len(order)), nb["name"]))


def build_html(notebook_dirs: list[str | os.PathLike], config_path: str | os.PathLike | None = None,
               config_text: str | None = None) -> str:
    notebooks = collect(notebook_dirs)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sparsescale report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>sparsescale: sparse pre-training scaling laws at laptop scale</h1>",
             f"<p class='prov'>Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from "
             f"{len(notebooks)} executed notebook(s). Each figure names the Snakemake rule and notebook that made it.</p>"]
    nav = " ".join(f"<a href='#{html.escape(nb['name'])}'>{html.escape(TITLES.get(nb['name'], nb['name']))}</a>"
                   for nb in notebooks)
    parts.append(f"<nav>{nav} <a href='#config'>Run configuration</a></nav>")
    summaries = [nb for nb in notebooks if nb["summary"]]
    if summaries:
        parts.append(f"<section class='summary'><h2>Summary</h2>{_markdown_html(summaries[0]['summary'])}</section>")
    n_fig = 0
    for nb in notebooks:
        name, folder = nb["name"], nb["dir"]
        prov = (f"rule <code>{RULE}</code>, notebook <code>notebooks/{html.escape(name)}.ipynb</code> "
                f"(executed: <code>{html.escape(str(folder / (name + '.ipynb')))}</code>)")
        parts.append(f"<section id='{html.escape(name)}'><h2>{html.escape(TITLES.get(name, name))}</h2>"
                     f"<p class='prov'>Made by {prov}.</p>")
        if not nb["figures"] and not nb["tables"]:
            parts.append("<p><em>This notebook produced no figure or table (see its notes).</em></p>")
        for fig in nb["figures"]:
            png = folder / "figures" / fig.get("png", f"{fig['name']}.png")
            if not png.is_file():
                raise InputError(f"{png}: listed in {folder / 'figures.json'} but missing")
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            n_fig += 1
            caption = html.escape(fig.get("caption") or fig["name"])
            parts.append(f"<figure id='{html.escape(name)}-{html.escape(fig['name'])}'>"
                         f"<img alt='{html.escape(fig['name'])}' src='data:image/png;base64,{data}'>"
                         f"<figcaption><b>Figure {n_fig} ({html.escape(fig['name'])}).</b> {caption} "
                         f"<span class='prov'>[{prov}]</span></figcaption></figure>")
        for tab in nb["tables"]:
            csv = folder / "tables" / tab.get("csv", f"{tab['name']}.csv")
            if not csv.is_file():
                raise InputError(f"{csv}: listed in {folder / 'tables.json'} but missing")
            caption = html.escape(tab.get("caption") or tab["name"])
            parts.append(f"<h3>Table: {html.escape(tab['name'])}</h3><p>{caption} <span class='prov'>[{prov}]</span></p>"
                         + _table_html(csv))
        parts.append("</section>")
    parts.append("<section id='config'><h2>Run configuration</h2>")
    if config_text is not None:
        parts.append(f"<pre>{html.escape(config_text)}</pre>")
    elif config_path and Path(config_path).is_file():
        parts.append(f"<p class='prov'>{html.escape(str(config_path))}</p>"
                     f"<pre>{html.escape(Path(config_path).read_text(encoding='utf-8'))}</pre>")
    else:
        parts.append("<p><em>No configuration file given.</em></p>")
    parts.append("</section></body></html>\n")
    log.info("report: %d notebooks, %d figures", len(notebooks), n_fig)
    return "".join(parts)


def write_report(notebook_dirs, config_path, out, config_json: str | None = None, summary_out=None) -> Path:
    """Write the HTML report to ``out``; with ``summary_out``, copy the verdict SUMMARY.md there too."""
    if config_path and not Path(config_path).is_file():
        raise InputError(f"--config {config_path}: file not found")
    config_text = None
    if config_json is not None:
        try:
            import yaml

            config_text = yaml.safe_dump(json.loads(config_json), sort_keys=False, allow_unicode=True)
        except json.JSONDecodeError as err:
            raise InputError(f"--config-json: not valid JSON ({err})") from err
    dirs = list(notebook_dirs)
    text = build_html(dirs, config_path, config_text)
    if summary_out is not None:
        summaries = [nb["summary"] for nb in collect(dirs) if nb["summary"]]
        summary = summaries[0] if summaries else (
            "# Results\n\nNo `against_papers` notebook was executed, so there are no verdicts; see report.html.\n")
        write_text(summary_out, summary)
    write_text(out, text)
    return Path(out)


def _cmd_report(args: argparse.Namespace) -> int:
    write_report(args.notebooks, args.config, args.out, config_json=args.config_json, summary_out=args.summary)
    log.info("wrote %s", args.out)
    return 0


def add_commands(subparsers) -> None:
    from sparsescale.notebook import add_notebook_command

    add_notebook_command(subparsers)
    p = subparsers.add_parser("report", help="bundle executed notebooks into one self-contained HTML report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notebooks", nargs="+", required=True, metavar="DIR", help="executed notebook folders")
    p.add_argument("--config", default=None, help="the study config (YAML file) shown in the report")
    p.add_argument("--config-json", default=None, help="the resolved study config as a JSON string (instead of --config)")
    p.add_argument("--summary", default=None, help="also write the verdict summary here (results/SUMMARY.md)")
    p.add_argument("--out", required=True, help="results/report.html")
    p.set_defaults(func=_cmd_report)
