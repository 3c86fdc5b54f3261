"""Execute a notebook template with papermill into a results folder, all or nothing.

``sparsescale notebook --template notebooks/NAME.ipynb --out-dir results/notebooks/NAME -p key value ...``

The template runs (kernel ``python3``) in a temporary folder beside ``--out-dir`` with its
``figures_dir`` / ``tables_dir`` parameters pointing inside it. On success the folder holds
``NAME.ipynb`` (executed), ``NAME.html`` (nbconvert copy), ``figures/*.png|pdf``,
``tables/*.csv|md|tex``, ``figures.json`` and ``tables.json`` (captions, read by the report),
and is renamed onto ``--out-dir``. A failing cell prints that cell's traceback to stderr, removes
the temporary folder and exits 1: nothing is left that Snakemake could take as done.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from sparsescale.io import InputError, get_logger

log = get_logger("sparsescale.notebook")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookFailed(RuntimeError):
    """A cell raised; ``traceback`` is the cell's traceback as plain text."""

    def __init__(self, message: str, traceback: str):
        super().__init__(message, traceback)  # both in args, so the error pickles across processes
        self.traceback = traceback

    def __str__(self) -> str:
        return str(self.args[0])


def fits_read(template: str | os.PathLike, fits: dict[str, str]) -> dict[str, str]:
    """The part of ``fits`` (role -> fit JSON) that ``template`` reads: the roles its metadata
    names under ``sparsescale.fit_roles`` (every role where it names none). The workflow
    passes a template only these and makes it wait only for them, so a changed fit redraws the
    notebooks that read it and no others."""
    try:
        meta = json.loads(Path(template).read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError) as err:
        raise InputError(f"{template}: not a readable notebook ({err})") from None
    roles = meta.get("sparsescale", {}).get("fit_roles")
    if roles is None:
        return dict(fits)
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InputError(f"{template}: metadata.sparsescale.fit_roles must be a list of fit roles, got {roles!r}")
    return {role: path for role, path in fits.items() if role in roles}


def parse_parameters(pairs: list[list[str]] | None) -> dict[str, Any]:
    """``-p key value`` pairs; values are parsed as YAML (numbers, lists, dicts), else kept as text."""
    import yaml

    params: dict[str, Any] = {}
    for key, raw in pairs or []:
        if not key.isidentifier():
            raise InputError(f"-p {key}: a parameter name must be a Python identifier")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if raw.strip() == "":
            value = ""
        elif value is None and raw.strip() not in ("null", "~", "None"):
            value = raw
        params[key] = value
    return params


def _export_html(ipynb: Path, html: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nb)
    html.write_text(body, encoding="utf-8")


def _relative_paths(ipynb: Path, root: str) -> None:
    """Rewrite ``root/`` out of every cell output (a warning or traceback names the file it
    came from), so no executed notebook carries this machine's absolute path."""
    import nbformat

    prefix = root.rstrip(os.sep) + os.sep
    nb = nbformat.read(ipynb, as_version=4)
    changed = False
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for key in ("text", "traceback", "evalue"):
                value = output.get(key)
                if isinstance(value, str) and prefix in value:
                    output[key], changed = value.replace(prefix, ""), True
                elif isinstance(value, list) and any(prefix in line for line in value):
                    output[key], changed = [line.replace(prefix, "") for line in value], True
    if changed:
        nbformat.write(nb, ipynb)


def _failure_text(err: BaseException) -> str:
    tb = getattr(err, "traceback", None)
    if isinstance(tb, (list, tuple)) and tb:
        text = "\n".join(str(line) for line in tb)
    else:
        text = f"{type(err).__name__}: {err}"
    return _ANSI.sub("", text)


# A unix socket path holds 104 bytes on macOS (108 on Linux) with its NUL; the kernel appends "-1".."-5".
_SOCKET_PREFIX_MAX = 101


def _ipc_prefix_fits(prefix: str) -> bool:
    """Whether the kernel's sockets can be unix sockets at ``prefix`` on this platform."""
    import zmq

    return zmq.has("ipc") and len(os.fsencode(prefix)) <= _SOCKET_PREFIX_MAX


@contextlib.contextmanager
def _kernel_config():
    """Where the platform has them, the kernel's sockets are unix sockets in a fresh owner-only
    folder (zmq's ipc transport), beside its connection file: no other user can reach them, no
    TCP port is involved, and nothing is written to Jupyter's runtime folder under $HOME.
    Over TCP, jupyter_client picks free ports, releases them and the kernel binds them a moment
    later, so a concurrent process can take one in between and the kernel never starts
    ("Address already in use", nteract/papermill#511). Where ipc is missing (Windows) or the
    temporary folder's path is too long for a socket, the TCP sockets are CurveZMQ-encrypted
    if pyzmq has it, so ipykernel need not warn of plain text in every notebook log
    (jupyter_client refuses "auto" without CurveZMQ, hence the check)."""
    import zmq
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="sparsescale-kernel-") as folder:
        prefix = os.path.join(folder, "kernel")
        if _ipc_prefix_fits(prefix):
            yield Config({"KernelManager": {"transport": "ipc", "ip": prefix,
                                            "connection_file": os.path.join(folder, "kernel.json")}})
        elif zmq.has("curve"):
            yield Config({"KernelManager": {"transport_encryption": "auto"}})
        else:
            yield Config()


@contextlib.contextmanager
def _python3_is_this_interpreter():
    """Run the ``python3`` kernel with this interpreter, whose environment holds the templates'
    dependencies. A user-level ``python3`` kernelspec (``ipykernel install --user``) that points
    at another Python would otherwise win wherever Jupyter does not prefer the environment's
    own (a venv or conda env this user does not own, or ``JUPYTER_PATH``): ipykernel's spec for
    this interpreter goes first on ``JUPYTER_PATH`` while the notebook runs."""
    from ipykernel.kernelspec import write_kernel_spec

    saved = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="sparsescale-kernelspec-") as folder:
        write_kernel_spec(os.path.join(folder, "kernels", "python3"))
        os.environ["JUPYTER_PATH"] = os.pathsep.join([folder, *([saved] if saved else [])])
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = saved


def run_notebook(template: str | os.PathLike, out_dir: str | os.PathLike, parameters: dict[str, Any] | None = None,
                 kernel: str = "python3", html: bool = True, timeout: int | None = None) -> Path:
    """Execute ``template`` into ``out_dir`` (replaced atomically); raise NotebookFailed on a cell error."""
    import papermill as pm

    template = Path(template)
    out_dir = Path(out_dir)
    if not template.is_file():
        raise InputError(f"--template {template}: file not found")
    name = template.stem
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        figures_dir, tables_dir = tmp / "figures", tmp / "tables"
        figures_dir.mkdir()
        tables_dir.mkdir()
        params = {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in (parameters or {}).items()}
        # relative to the kernel's working directory (ours), so no absolute path lands in outputs
        params.update({"figures_dir": os.path.relpath(figures_dir), "tables_dir": os.path.relpath(tables_dir)})
        executed = tmp / f"{name}.ipynb"
        log.info("executing %s -> %s", template, out_dir)
        try:
            this_python = _python3_is_this_interpreter() if kernel == "python3" else contextlib.nullcontext()
            with this_python, _kernel_config() as config:
                pm.execute_notebook(str(template), str(executed), parameters=params, kernel_name=kernel,
                                    progress_bar=False, log_output=False, execution_timeout=timeout,
                                    config=config)
        except pm.PapermillExecutionError as err:
            raise NotebookFailed(f"{template}: cell {err.exec_count} failed: {err.ename}: {err.evalue}",
                                 _failure_text(err)) from err
        _relative_paths(executed, os.getcwd())
        for index, sub in (("figures.json", figures_dir), ("tables.json", tables_dir)):
            if (sub / index).is_file():
                os.replace(sub / index, tmp / index)
        if html:
            _export_html(executed, tmp / f"{name}.html")
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes the folder owner-only
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "prev")
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        log.info("wrote %s", out_dir)
        return out_dir
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _cmd_notebook(args: argparse.Namespace) -> int:
    params = parse_parameters(args.parameter)
    try:
        run_notebook(args.template, args.out_dir, params, kernel=args.kernel, html=not args.no_html,
                     timeout=args.cell_timeout)
    except NotebookFailed as err:
        print(f"sparsescale notebook: error: {err}\n{err.traceback}", file=sys.stderr)
        return 1
    return 0


def add_notebook_command(subparsers) -> None:
    p = subparsers.add_parser("notebook", help="execute a notebook template with papermill (all or nothing)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", required=True, help="notebooks/NAME.ipynb")
    p.add_argument("--out-dir", required=True, help="results/notebooks/NAME (replaced on success)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="a papermill parameter; VALUE is parsed as YAML (repeatable)")
    p.add_argument("--kernel", default="python3")
    p.add_argument("--no-html", action="store_true", help="skip the nbconvert HTML copy")
    p.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: none)")
    p.set_defaults(func=_cmd_notebook)


def add_commands(subparsers) -> None:
    add_notebook_command(subparsers)
