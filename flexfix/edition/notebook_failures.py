"""What went wrong with a notebook run, in one line: the failing cell and its error, a dead kernel and the cell it
was running, a cell timeout, an executed notebook that could not be written."""

from __future__ import annotations

from pathlib import Path

__all__ = ["WriteError", "ran_last", "describe_failure"]


class WriteError(OSError):
    """The executed notebook could not be written to its output path."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason


def ran_last(executed: Path) -> str | None:
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
