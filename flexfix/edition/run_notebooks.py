"""Execute every notebook with papermill: the main job of the repository (``make notebooks``).

GPU parameters when ``torch.cuda.is_available()``, CPU parameters otherwise.  One failing
notebook does not stop the others; it is named in the summary, with its failing cell (or what
really happened: the kernel died, the output could not be written), and the command exits 1.

Before anything runs, the command refuses (exit 2, naming the value): a notebook that does not
exist or cannot be read; two notebooks that would write the same output file; an ``--out`` that
is, or holds, a source notebook's folder (executed copies would overwrite the sources) or cannot
be written; a ``-p NAME`` that no notebook being run declares in its ``parameters`` cell; a ``-p``
value whose type differs from the notebook's default (``RUN_ENGINE='"false"'`` is a string, and a
string is true).  Each executed notebook is written to a temporary file next to its output and
renamed, so a failure never leaves a truncated ``.ipynb``.  Ctrl-C or SIGTERM stops the run (the
kernel is shut down, the temporary file removed) and exits 130 or 143.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexfix.edition import params
from flexfix.edition.kernel_groups import kernels_die_first, tracked_kernel_manager
from flexfix.edition.notebook_failures import WriteError, describe_failure, ran_last
from flexfix.edition.notebook_parameters import UNKNOWN, check_overrides, check_plan, notebook_parameters
from flexfix.edition.notebook_times import TIMES_NAME, check_times, record_times
from flexfix.measure import children

__all__ = [
    "PARAMETERS",
    "UNKNOWN",
    "parameters_for",
    "notebook_parameters",
    "check_overrides",
    "check_plan",
    "CellProgress",
    "execute",
    "describe_failure",
    "WriteError",
    "run_one",
    "run_all",
    "check_times",
    "record_times",
    "build_parser",
    "main",
]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "flexfix"

# Per device, per notebook: parameters that differ from the notebook's own defaults.  On CPU the children run one
# at a time (two at a time was slower on CI's 2 cores: each child imports torch and uses both); on a GPU box (16 cores,
# one GPU) the children of a notebook run side by side: torch-only repro runs and needle-sweep units
# (``WORKERS``), engines (``ENGINE_WORKERS``, each with a fixed KV cache).  The serving scenarios of 06 take
# minutes per server: `make notebooks` shows their recorded run (``flexfix serve record`` records it).
PARAMETERS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"01_reproduce_ima": {"SEEDS": [0, 1, 2]}},
    "cuda": {
        "01_reproduce_ima": {"SEEDS": [0, 1, 2, 3, 4], "WORKERS": 10, "ENGINE_WORKERS": 14},
        "02_apply_flexfix": {"WORKERS": 3, "ENGINE_WORKERS": 3},
        "04_batch_invariance": {"WORKERS": 12},
        "06_serving": {"RUN_SERVER": False},
    },
}
# Compile caches shared by every child of a run (PyTorch Inductor, Triton, vLLM), under build/: the first child
# to compile a kernel fills them, the others read it; `make clean` empties them (a cold start).
CACHE_ENV = {
    "TORCHINDUCTOR_CACHE_DIR": ROOT / "build" / "cache" / "inductor",
    "TRITON_CACHE_DIR": ROOT / "build" / "cache" / "triton",
    "VLLM_CACHE_ROOT": ROOT / "build" / "cache" / "vllm",
}
# A headless run writes an executed notebook to be read, not a terminal: no progress bars (flexfix's, vLLM's,
# Hugging Face's), and not tqdm's "IProgress not found" warning about widgets nobody will see.
HEADLESS_ENV = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "PYTHONWARNINGS": "ignore:IProgress not found",
}


@dataclass
class Run:
    notebook: str
    device: str
    seconds: float
    ok: bool
    error: str = ""

    def line(self) -> str:
        state = "ok" if self.ok else f"FAILED: {self.error}"
        return f"{self.notebook:<28} device={self.device:<4} {self.seconds:7.1f} s  {state}"


def parameters_for(
    notebook: str, device: str, results_dir: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    params = {"DEVICE": device, **PARAMETERS.get(device, {}).get(Path(notebook).stem, {}), **(overrides or {})}
    if results_dir is not None:
        params["RESULTS_DIR"] = str(Path(results_dir).resolve())
    return params


def _kernel_problem(kernel: str) -> str | None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        return f"the Jupyter kernel {kernel!r} is not installed (make install registers it)"
    return None


def _whole(path: Path) -> bool:
    import nbformat

    try:
        nbformat.validate(nbformat.read(path, as_version=4))
    except Exception:  # noqa: BLE001 - anything unreadable is not a whole notebook
        return False
    return True


def _move(tmp: Path, output: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, output)
    except OSError as e:
        raise WriteError(output, e.strerror or str(e)) from None


class CellProgress:
    """One short line per executed code cell on ``stream`` (stderr), as papermill's progress bar counts cells but
    without a bar: ``01_reproduce_ima: cell 3 of 24 (12.3 s)``.  Given to papermill as nbclient's
    ``on_notebook_start`` and ``on_cell_execute`` hooks."""

    def __init__(self, name: str, stream: Any = None) -> None:
        self.name, self.stream = name, stream
        self.total = 0
        self.done = 0
        self.start = time.monotonic()

    def on_notebook_start(self, notebook: Any, **_: Any) -> None:
        self.total = sum(1 for c in notebook.cells if c.cell_type == "code" and c.source.strip())
        self.start = time.monotonic()

    def on_cell_execute(self, **_: Any) -> None:
        self.done += 1
        seconds = time.monotonic() - self.start
        stream = self.stream if self.stream is not None else sys.stderr
        print(f"  {self.name}: cell {self.done} of {self.total} ({seconds:.1f} s)", file=stream, flush=True)


def execute(
    notebook: Path,
    out_dir: Path,
    parameters: dict[str, Any],
    *,
    timeout: int = 1800,
    kernel: str = KERNEL,
    progress: CellProgress | None = None,
) -> Path:
    """Run one notebook into ``out_dir`` (cwd = the notebook's folder); raises on a failing cell.

    Each executed code cell writes one line to stderr (:class:`CellProgress`, or ``progress``).
    Papermill writes into a temporary file in ``out_dir``, renamed to ``out_dir/<name>`` at the end
    (also when a cell fails or the kernel dies: that copy shows where).  A failure to write raises
    :class:`WriteError` and leaves no partial file; an interrupt leaves the previous output as it was.
    """
    import papermill as pm

    notebook, out_dir = Path(notebook), Path(out_dir)
    output = out_dir / notebook.name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{notebook.stem}.", suffix=".ipynb", dir=out_dir)
    except OSError as e:
        raise WriteError(output, e.strerror or str(e)) from None
    os.close(fd)
    tmp = Path(name)
    progress = progress if progress is not None else CellProgress(notebook.stem)
    try:
        try:
            with kernels_die_first():
                pm.execute_notebook(
                    str(notebook),
                    str(tmp),
                    parameters=parameters,
                    kernel_name=kernel,
                    cwd=str(notebook.parent),
                    execution_timeout=timeout,
                    progress_bar=False,
                    kernel_manager_class=tracked_kernel_manager(),
                    on_notebook_start=progress.on_notebook_start,
                    on_cell_execute=progress.on_cell_execute,
                )
        except WriteError:
            raise
        except OSError as e:
            if e.filename in (None, str(tmp)):  # papermill writing the executed notebook
                raise WriteError(output, e.strerror or str(e)) from None
            raise
        except Exception as e:
            if type(e).__name__ == "DeadKernelError":
                e.flexfix_cell = ran_last(tmp)
            if _whole(tmp):
                try:
                    _move(tmp, output)
                except WriteError:
                    pass  # the cell's failure is the news
            raise
        _move(tmp, output)
    finally:
        with children.deferred_signals():
            tmp.unlink(missing_ok=True)
    return output


def run_one(
    nb: Path,
    out_dir: Path,
    device: str,
    results_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    declared: dict[str, Any] | None = None,
) -> Run:
    """Execute ``nb`` (overrides it does not declare are left out when ``declared`` is given)."""
    overrides = dict(overrides or {})
    if declared is not None:
        overrides = {k: v for k, v in overrides.items() if k in declared}
        if "RESULTS_DIR" not in declared:
            results_dir = None
    start = time.monotonic()
    try:
        execute(nb, out_dir, parameters_for(nb.name, device, results_dir, overrides))
        return Run(nb.name, device, time.monotonic() - start, True)
    except Exception as exc:  # noqa: BLE001 - the summary names every failure
        return Run(nb.name, device, time.monotonic() - start, False, describe_failure(exc))


def run_all(
    notebooks: Sequence[Path],
    out_dir: Path,
    device: str,
    results_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    declared: dict[Path, dict[str, Any]] | None = None,
    runs: list[Run] | None = None,
) -> list[Run]:
    """Every notebook, one after another, whatever fails; ``runs`` (if given) is filled as they end."""
    runs = [] if runs is None else runs
    for nb in notebooks:
        run = run_one(nb, out_dir, device, results_dir, overrides, None if declared is None else declared.get(nb))
        print(run.line(), flush=True)
        runs.append(run)
    return runs


PROG = "flexfix notebooks"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=params.HelpFormatter)
    p.add_argument("--out", default=str(ROOT / "build" / "notebooks"), help="folder for the executed notebooks")
    p.add_argument("--results", default=None, help="RESULTS_DIR for every notebook (default: the notebook's)")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="override a parameter in the notebooks that declare it, e.g. -p SEEDS=[0] -p RUN_ENGINE=false "
        "(refused if no notebook declares NAME, or if the value's type differs from the notebook's default)",
    )
    p.add_argument(
        "--times",
        default=str(ROOT / "build" / "results"),
        help=f"folder for {TIMES_NAME}-<device>.json, each notebook's wall time with provenance",
    )
    p.add_argument("notebooks", nargs="*", help="notebook paths (default: every notebook in notebooks/)")
    return p


def _no_constant(name: str) -> None:
    """JSON's NaN, Infinity and -Infinity (Python's json reads them): a parameter is a finite number or nothing."""
    raise ValueError(f"holds {name}, which is not a finite number")


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    p = build_parser(prog)
    args = p.parse_args(argv)
    overrides = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            p.error(f"--param needs NAME=JSON, got {item!r}")
        if name in overrides:
            p.error(f"--param {name} is given twice")
        try:
            overrides[name] = json.loads(value, parse_constant=_no_constant)
        except ValueError as e:
            if str(e).startswith("holds "):
                p.error(f"--param {name}: {value!r} {e}")
            p.error(f"--param {name}: {value!r} is not JSON (strings need quotes: {name}='\"text\"')")
    notebooks = [Path(n) for n in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    out_dir = Path(args.out)
    problems, declared = check_plan(notebooks, out_dir, overrides, args.results)
    problems += check_times(args.times)
    kernel = _kernel_problem(KERNEL)
    if kernel:
        problems.append(kernel)
    if problems:
        p.error("\n  ".join(problems))
    runs: list[Run] = []
    current = None
    try:
        with children.interruptible():
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            for name, folder in CACHE_ENV.items():
                os.environ.setdefault(name, str(folder))
            for name, value in HEADLESS_ENV.items():
                os.environ.setdefault(name, value)
            print(f"executing {len(notebooks)} notebooks with {device} parameters into {args.out}", flush=True)
            start = time.monotonic()
            for nb in notebooks:
                current = nb
                run_all([nb], out_dir, device, args.results, overrides, declared=declared, runs=runs)
            current = None
    except KeyboardInterrupt as exc:
        where = f" while executing {current.name}" if current is not None else ""
        done = ", ".join(f"{r.notebook} {'ok' if r.ok else 'FAILED'}" for r in runs) or "none"
        print(
            f"{p.prog}: interrupted by {children.signal_name(exc)}{where}; finished before it: {done}",
            file=sys.stderr,
        )
        return children.exit_status(exc)
    failed = [r for r in runs if not r.ok]
    total = time.monotonic() - start
    print(
        f"{len(runs) - len(failed)} of {len(runs)} notebooks ok in {total:.0f} s"
        + (f"; failed: {', '.join(r.notebook for r in failed)}" if failed else "")
    )
    from flexfix.edition.results import ResultsError

    try:
        with children.deferred_signals():
            path, kept = record_times(args.times, *_times(runs, device, total, overrides))
    except (ResultsError, OSError) as e:
        print(f"{p.prog}: the wall times were not written: {e}", file=sys.stderr)
        return 1
    print(f"wall times in {path}" + (f" ({kept})" if kept else ""))
    return 1 if failed else 0


def _times(runs: Sequence[Run], device: str, total: float, overrides: dict) -> tuple[list[dict], str, dict]:
    """The rows, device and parameters of :func:`record_times`: each notebook's wall time and whether it passed."""
    rows = [{"notebook": Path(r.notebook).stem, "seconds": round(r.seconds, 1), "ok": r.ok} for r in runs]
    parameters = {
        "total_seconds": round(total, 1),
        "overrides": overrides,
        "parameters": {row["notebook"]: PARAMETERS.get(device, {}).get(row["notebook"], {}) for row in rows},
        "caches": {name: os.environ.get(name) for name in CACHE_ENV},
    }
    return rows, device, parameters
