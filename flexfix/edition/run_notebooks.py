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
import ast
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexfix.edition import params
from flexfix.measure import children

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
TIMES_NAME = "notebook_times"
# A headless run writes an executed notebook to be read, not a terminal: no progress bars (flexfix's, vLLM's,
# Hugging Face's), and not tqdm's "IProgress not found" warning about widgets nobody will see.
HEADLESS_ENV = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "PYTHONWARNINGS": "ignore:IProgress not found",
}

# A parameter whose default is not a literal (an expression): its overrides are not type-checked.
UNKNOWN = object()


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


class WriteError(OSError):
    """The executed notebook could not be written to its output path."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason


def parameters_for(
    notebook: str, device: str, results_dir: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    params = {"DEVICE": device, **PARAMETERS.get(device, {}).get(Path(notebook).stem, {}), **(overrides or {})}
    if results_dir is not None:
        params["RESULTS_DIR"] = str(Path(results_dir).resolve())
    return params


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """Names assigned in the notebook's cell tagged ``parameters``, each with its default value
    (:data:`UNKNOWN` where the default is not a literal); ``{}`` without such a cell.  ValueError
    (naming the notebook) if it cannot be read or its parameters cell is not Python."""
    import nbformat

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # noqa: BLE001 - nbformat raises many kinds: all mean "not a notebook"
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
        raise ValueError(f"notebook {str(path)!r} cannot be read: {reason}") from None
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        return {}
    source = "\n".join(
        ln for ln in cells[0].source.splitlines() if not ln.lstrip().startswith(("%", "!"))
    )  # IPython magics are not Python
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(
            f"notebook {path.name}: its parameters cell is not Python ({e.msg}, line {e.lineno})"
        ) from None
    found: dict[str, Any] = {}
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    found[target.id] = ast.literal_eval(value) if value is not None else UNKNOWN
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    found[target.id] = UNKNOWN
    return found


def _kind(value: Any) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "string", dict: "dict", type(None): "None"}
    if isinstance(value, (list, tuple)):
        items = sorted({names.get(type(v), type(v).__name__) for v in value})
        return f"a list of {' and '.join(i + 's' for i in items)}" if items else "an empty list"
    name = names.get(type(value), type(value).__name__)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _same_type(default: Any, value: Any) -> bool:
    """Whether ``value`` (from JSON) may replace ``default``: bool stays bool, int stays int (a float
    default takes an int too), a string stays a string, a list a list of the default's item type."""
    if default is UNKNOWN or default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            return False
        kinds = {type(d) for d in default}
        if len(kinds) != 1 or default[0] is None:  # empty or mixed default: items not checked
            return True
        return all(_same_type(default[0], v) for v in value)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))


def check_overrides(declared: dict[Path, dict[str, Any]], overrides: dict[str, Any]) -> list[str]:
    """Problems with ``-p`` overrides: a name no notebook declares, a value of another type than a
    notebook's default (each problem names the notebook and the value)."""
    problems = []
    for name, value in overrides.items():
        having = {nb: ps for nb, ps in declared.items() if name in ps}
        if not having:
            known = "; ".join(f"{nb.name}: {', '.join(ps) or 'no parameters cell'}" for nb, ps in declared.items())
            problems.append(f"-p {name}: no notebook being run has a parameter {name} (known: {known})")
            continue
        for nb, ps in having.items():
            if not _same_type(ps[name], value):
                problems.append(
                    f"-p {name}={json.dumps(value)}: {nb.name} has {name} = {ps[name]!r} ({_kind(ps[name])}), "
                    f"and the value given is {_kind(value)}"
                )
    return problems


def _inside(folder: Path, other: Path) -> bool:
    """Whether ``folder`` is ``other`` or one of its ancestors."""
    return folder == other or folder in other.parents


def check_plan(
    notebooks: Sequence[Path], out_dir: Path, overrides: dict[str, Any], results_dir: str | None
) -> tuple[list[str], dict[Path, dict[str, Any]]]:
    """Everything that would go wrong before anything runs: (problems, each notebook's parameters)."""
    problems: list[str] = []
    declared: dict[Path, dict[str, Any]] = {}
    outputs: dict[str, Path] = {}
    out = out_dir.resolve()
    out_ok = True
    for nb in notebooks:
        if not nb.is_file():
            problems.append(f"notebook {str(nb)!r} " + ("is not a file" if nb.exists() else "does not exist"))
            continue
        if nb.suffix != ".ipynb":
            problems.append(f"notebook {str(nb)!r} is not an .ipynb file")
            continue
        try:
            declared[nb] = notebook_parameters(nb)
        except ValueError as e:
            problems.append(str(e))
            continue
        if nb.name in outputs:
            first = outputs[nb.name]
            same = first.resolve() == nb.resolve()
            problems.append(
                f"notebook {nb} is listed twice"
                if same
                else f"notebooks {first} and {nb} would both be written to {out_dir / nb.name}: run them into "
                "separate --out folders"
            )
        outputs.setdefault(nb.name, nb)
        if _inside(out, nb.resolve().parent):
            out_ok = False
            problems.append(
                f"--out {out_dir} is (or holds) the folder of {nb}: its executed copy would overwrite the source "
                "notebook; choose another --out"
            )
    if out_ok:
        try:
            params.writable_folder("--out", out_dir)
        except ValueError as e:
            problems.append(str(e))
    if results_dir is not None:
        try:
            params.writable_folder("--results", results_dir)
        except ValueError as e:
            problems.append(str(e))
        if declared and not any("RESULTS_DIR" in ps for ps in declared.values()):
            problems.append("--results: none of the notebooks being run has a RESULTS_DIR parameter")
    problems += check_overrides(declared, overrides) if declared else []
    return problems, declared


def _kernel_problem(kernel: str) -> str | None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        return f"the Jupyter kernel {kernel!r} is not installed (make install registers it)"
    return None


def _ran_last(executed: Path) -> str | None:
    """``[n]: <its first line>`` of the last cell papermill started in the notebook it wrote (n: its
    execution count, else its place among the code cells)."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # noqa: BLE001 - a notebook that cannot be read tells nothing
        return None
    code = [c for c in nb.cells if c.cell_type == "code"]
    started = [i for i, c in enumerate(code) if c.metadata.get("papermill", {}).get("start_time")]
    if not started:
        return None
    cell = code[started[-1]]
    number = cell.get("execution_count") or started[-1] + 1
    first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")
    return f"[{number}]: {first[:80]}"


_kernel_groups: set[int] = set()  # process groups of the kernels running now (each kernel leads its own)
_manager_class: type | None = None


def _tracked_kernel_manager() -> type:
    """jupyter_client's AsyncKernelManager, remembering each kernel's process group while it runs, so
    an interrupt can kill the kernel at once (a kernel shut down mid-cell prints tracebacks)."""
    global _manager_class
    if _manager_class is None:
        from jupyter_client import AsyncKernelManager

        class TrackedKernelManager(AsyncKernelManager):
            async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
                await super()._async_launch_kernel(kernel_cmd, **kw)
                pgid = getattr(self.provisioner, "pgid", None)
                if pgid:
                    self._flexfix_pgid = pgid
                    _kernel_groups.add(pgid)

            async def _async_cleanup_resources(self, restart: bool = False) -> None:
                _kernel_groups.discard(getattr(self, "_flexfix_pgid", None))
                await super()._async_cleanup_resources(restart=restart)

        _manager_class = TrackedKernelManager
    return _manager_class


def _kill_kernels() -> None:
    for pgid in list(_kernel_groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _kernel_groups.discard(pgid)


@contextmanager
def _kernels_die_first() -> Iterator[None]:
    """SIGINT/SIGTERM kill the running kernels before their usual effect: a kernel shut down
    politely in the middle of a cell prints tracebacks; killed, it prints nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        _kill_kernels()
        previous = old[signum]
        if previous is signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        elif callable(previous):
            previous(signum, frame)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if previous is not None and previous is not signal.SIG_IGN:
            old[signum] = previous
            signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)


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


def execute(
    notebook: Path, out_dir: Path, parameters: dict[str, Any], *, timeout: int = 1800, kernel: str = KERNEL
) -> Path:
    """Run one notebook into ``out_dir`` (cwd = the notebook's folder); raises on a failing cell.

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
    try:
        try:
            with _kernels_die_first():
                pm.execute_notebook(
                    str(notebook),
                    str(tmp),
                    parameters=parameters,
                    kernel_name=kernel,
                    cwd=str(notebook.parent),
                    execution_timeout=timeout,
                    progress_bar=False,
                    kernel_manager_class=_tracked_kernel_manager(),
                )
        except WriteError:
            raise
        except OSError as e:
            if e.filename in (None, str(tmp)):  # papermill writing the executed notebook
                raise WriteError(output, e.strerror or str(e)) from None
            raise
        except Exception as e:
            if type(e).__name__ == "DeadKernelError":
                e.flexfix_cell = _ran_last(tmp)
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


def describe_failure(exc: BaseException) -> str:
    """What went wrong, from the exception of :func:`execute`: the failing cell and its error, a dead
    kernel (and the cell it was running), a cell timeout, an output that could not be written."""
    if isinstance(exc, WriteError):
        return str(exc)
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    if name == "DeadKernelError":
        cell = getattr(exc, "flexfix_cell", None)
        return "kernel died" + (f" while running cell {cell}" if cell is not None else "")
    if name == "CellTimeoutError":
        return f"a cell timed out: {text[0] if text else ''}"
    if hasattr(exc, "ename"):  # papermill's PapermillExecutionError: a cell raised
        cell = getattr(exc, "exec_count", None)
        evalue = getattr(exc, "evalue", "")
        where = f"cell [{cell}]" if cell is not None else "a cell"
        return f"{where}: {exc.ename}: {str(evalue).splitlines()[0] if evalue else ''}"
    return f"{name}: {text[0] if text else ''}"


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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexfix.edition.run_notebooks", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "build" / "notebooks"))
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
    args = p.parse_args(argv)
    overrides = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            p.error(f"--param needs NAME=JSON, got {item!r}")
        if name in overrides:
            p.error(f"--param {name} is given twice")
        try:
            overrides[name] = json.loads(value)
        except ValueError:
            p.error(f"--param {name}: {value!r} is not JSON (strings need quotes: {name}='\"text\"')")
    notebooks = [Path(n) for n in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    out_dir = Path(args.out)
    problems, declared = check_plan(notebooks, out_dir, overrides, args.results)
    try:
        params.writable_folder("--times", args.times)
    except ValueError as e:
        problems.append(str(e))
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
    path = record_times(args.times, runs, device, total, overrides)
    print(f"wall times in {path}")
    return 1 if failed else 0


def record_times(folder: str | os.PathLike, runs: Sequence[Run], device: str, total: float, overrides: dict) -> Path:
    """Each notebook's wall time (and whether it passed) as a results file with provenance."""
    from flexfix.edition import results

    rows = [{"notebook": Path(r.notebook).stem, "seconds": round(r.seconds, 1), "ok": r.ok} for r in runs]
    parameters = {
        "total_seconds": round(total, 1),
        "overrides": overrides,
        "parameters": {row["notebook"]: PARAMETERS.get(device, {}).get(row["notebook"], {}) for row in rows},
        "caches": {name: os.environ.get(name) for name in CACHE_ENV},
    }
    return results.write_results(folder, TIMES_NAME, rows, device, parameters, replace=True)


if __name__ == "__main__":
    children.run_main(main, "python -m flexfix.edition.run_notebooks")
