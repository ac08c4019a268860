"""Execute every notebook with papermill: the main job of the repository (``make notebooks``).

GPU parameters when ``torch.cuda.is_available()``, CPU parameters otherwise.  One failing
notebook does not stop the others; it is named in the summary, with its failing cell, and
the command exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "flexfix"

# Per device, per notebook: parameters that differ from the notebook's own defaults.
PARAMETERS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"01_reproduce_ima": {"SEEDS": [0, 1, 2]}},
    "cuda": {"01_reproduce_ima": {"SEEDS": [0, 1, 2, 3, 4]}, "04_batch_invariance": {"WORKERS": 8}},
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


def execute(
    notebook: Path, out_dir: Path, parameters: dict[str, Any], *, timeout: int = 1800, kernel: str = KERNEL
) -> Path:
    """Run one notebook into ``out_dir`` (cwd = notebooks/); raises on a failing cell."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    pm.execute_notebook(
        str(notebook),
        str(output),
        parameters=parameters,
        kernel_name=kernel,
        cwd=str(notebook.parent),
        execution_timeout=timeout,
        progress_bar=False,
    )
    return output


def describe_failure(exc: BaseException) -> str:
    """Name the failing cell and the error, from a papermill execution error."""
    cell = getattr(exc, "exec_count", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    where = f"cell [{cell}]" if cell is not None else "before any cell"
    return f"{where}: {ename}: {str(evalue).splitlines()[0] if evalue else ''}"


def run_all(
    notebooks: Sequence[Path],
    out_dir: Path,
    device: str,
    results_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[Run]:
    runs = []
    for nb in notebooks:
        start = time.monotonic()
        try:
            execute(nb, out_dir, parameters_for(nb.name, device, results_dir, overrides))
            run = Run(nb.name, device, time.monotonic() - start, True)
        except Exception as exc:  # noqa: BLE001 - the summary names every failure
            run = Run(nb.name, device, time.monotonic() - start, False, describe_failure(exc))
        print(run.line(), flush=True)
        runs.append(run)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexfix.run_notebooks", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "build" / "notebooks"))
    p.add_argument("--results", default=None, help="RESULTS_DIR for every notebook (default: the notebook's)")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="override a parameter in every notebook, e.g. -p SEEDS=[0] -p RUN_ENGINE=false",
    )
    p.add_argument("notebooks", nargs="*", help="notebook paths (default: every notebook in notebooks/)")
    args = p.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    notebooks = [Path(n) for n in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    print(f"executing {len(notebooks)} notebooks with {device} parameters into {args.out}", flush=True)
    overrides = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            p.error(f"--param needs NAME=JSON, got {item!r}")
        try:
            overrides[name] = json.loads(value)
        except ValueError:
            p.error(f"--param {name}: {value!r} is not JSON (strings need quotes: {name}='\"text\"')")
    runs = run_all(notebooks, Path(args.out), device, args.results, overrides)
    failed = [r for r in runs if not r.ok]
    print(
        f"{len(runs) - len(failed)} of {len(runs)} notebooks ok"
        + (f"; failed: {', '.join(r.notebook for r in failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
