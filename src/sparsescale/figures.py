"""Drawing helpers shared by the notebooks under ``notebooks/``: style, saving, notes, labels.

The notebooks stay short: they read the pipeline's outputs with ``sparsescale.results``,
judge the papers' claims with ``sparsescale.claims`` and draw with these.

Outputs: ``save_figure`` writes PNG (150 dpi) + PDF and records a one-line caption in
``figures_dir/figures.json``; ``save_table`` writes CSV + Markdown + LaTeX and records a
caption in ``tables_dir/tables.json``. The notebook runner moves both index files to the
top of the executed notebook's folder, where the report reads them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sparsescale.io import write_text
from sparsescale.results import LAW_NAMES, fit_usable, window_label

# ---------------------------------------------------------------------------------------
# Style and output
# ---------------------------------------------------------------------------------------


def setup_style() -> None:
    """Seaborn theme with fonts readable in a report at 100% zoom."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=1.05)
    matplotlib.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.fontsize": 9,
            "legend.title_fontsize": 10,
            "xtick.labelsize": 9.5,
            "ytick.labelsize": 9.5,
            "figure.constrained_layout.use": True,
            "pdf.fonttype": 42,
        }
    )


def _load_index(path: Path) -> list[dict]:
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return []
    return []


def _record(index_path: Path, entry: dict) -> None:
    index = [e for e in _load_index(index_path) if e.get("name") != entry["name"]]
    index.append(entry)
    write_text(index_path, json.dumps(index, indent=2) + "\n")


def save_figure(fig, name: str, caption: str, figures_dir: str | os.PathLike, show: bool = True) -> Path:
    """Write ``name.png`` (150 dpi) and ``name.pdf``; record ``caption`` in figures.json."""
    import matplotlib.pyplot as plt

    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    png = figures_dir / f"{name}.png"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    fig.savefig(figures_dir / f"{name}.pdf", bbox_inches="tight")
    _record(figures_dir / "figures.json", {"name": name, "png": png.name, "pdf": f"{name}.pdf", "caption": caption})
    if show:
        try:
            from IPython.display import Image, display

            display(Image(filename=str(png)))
        except ImportError:  # pragma: no cover - outside a kernel
            pass
    plt.close(fig)
    return png


def _fmt_cell(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "" if np.isnan(value) else str(value)
        mag = abs(value)
        if mag != 0 and (mag >= 1e5 or mag < 1e-3):
            return f"{value:.{max(digits - 1, 2)}e}"
        return f"{value:.{digits}g}" if mag >= 1e3 else f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def format_frame(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Strings for display: floats to ``digits`` decimals (scientific when huge or tiny)."""
    return frame.apply(lambda col: col.map(lambda v: _fmt_cell(v, digits)))


def to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    shown = format_frame(frame, digits)
    header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    rows = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def _latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(repl.get(ch, ch) for ch in str(text))


def to_latex(frame: pd.DataFrame, caption: str = "", digits: int = 4) -> str:
    shown = format_frame(frame, digits)
    cols = "l" * len(shown.columns)
    lines = [r"\begin{table}[ht]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\hline",
             " & ".join(_latex_escape(c) for c in shown.columns) + r" \\", r"\hline"]
    for row in shown.itertuples(index=False):
        lines.append(" & ".join(_latex_escape(v) for v in row) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def save_table(frame: pd.DataFrame, name: str, caption: str, tables_dir: str | os.PathLike,
               digits: int = 4, show: bool = True) -> Path:
    """Write ``name.csv`` (full precision), ``name.md`` and ``name.tex``; record the caption."""
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    frame = frame.reset_index(drop=True)
    csv = tables_dir / f"{name}.csv"
    write_text(csv, frame.to_csv(index=False))
    write_text(tables_dir / f"{name}.md", to_markdown(frame, digits))
    write_text(tables_dir / f"{name}.tex", to_latex(frame, caption, digits))
    _record(tables_dir / "tables.json", {"name": name, "csv": csv.name, "md": f"{name}.md", "tex": f"{name}.tex",
                                         "caption": caption, "rows": int(len(frame)), "columns": list(map(str, frame.columns))})
    if show:
        try:
            from IPython.display import Markdown, display

            display(Markdown(f"**{name}**: {caption}\n\n" + to_markdown(frame, digits)))
        except ImportError:  # pragma: no cover
            pass
    return csv


def note(text: str) -> None:
    """A visible note in the executed notebook (and its HTML copy)."""
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"> **Note.** {text}"))
    except ImportError:  # pragma: no cover
        print(f"NOTE: {text}")


def note_unusable_fits(fits: dict[str, dict]) -> None:
    """A visible note for every fit ``sparsescale fit`` reported unusable."""
    for role, fit in fits.items():
        if not fit_usable(fit):
            note(f"The {LAW_NAMES.get(role, role)} fit is unusable ({'; '.join(fit['status']['reasons'])}): "
                 "it is drawn for reference, and no verdict rests on it.")


def pretty_schedule(row) -> str:
    fam = row["family"]
    if fam == "dense":
        return "dense"
    s = f"{fam}, S={100 * row['target_sparsity']:.0f}%"
    win = window_label(row.get("start"), row.get("end"))
    return f"{s}, {win}" if win else s

