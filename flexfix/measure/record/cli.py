"""``flexfix record PART``: a part of the GPU evidence recorded with provenance (what ``data/`` holds).

Every argument is checked before any work (:mod:`.plan`): a bad value, a size over its maximum, an option that does
not apply to the part, an unwritable ``--out``, ``--device cuda`` without a GPU, or a results file the run would
replace with fewer records (without ``--replace``) is a usage error naming it (exit 2).  Progress goes to
``<name>-<device>.partial.json`` after each unit; the complete file is written at the end.  Ctrl-C or SIGTERM stops
the run within seconds, kills every child process, keeps the finished units and exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from flexfix.edition import params, results
from flexfix.measure import children
from flexfix.measure.record.limits import (
    MAX_BATCH,
    MAX_CONTEXT,
    MAX_ENGINE_WORKERS,
    MAX_REPEATS,
    MAX_SEEDS,
    MAX_WORKERS,
)
from flexfix.measure.record.plan import DEFAULT_NAMES, DEFAULT_SCENARIOS, Job, plan

__all__ = ["PROG", "build_parser", "main"]

PROG = "flexfix record"
_UNITS = {
    "kernel": "runs",
    "sanitizer": "runs",
    "engine": "engine scenarios",
    "invariance": "cells",
    "timing": "timings",
    "engine-sweep": "engines",
}


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Record the GPU evidence with provenance: each part in child processes, saved as it goes.",
        formatter_class=params.HelpFormatter,
    )
    p.add_argument("part", choices=list(DEFAULT_NAMES), help="what to record")
    p.add_argument("--name", default=None, help="results name (default: the part's)")
    p.add_argument(
        "--runs",
        default=None,
        help="engine-sweep: MODEL:bi0|bi1|stock:full|piecewise|eager,... (default: tiny:bi1:full)",
    )
    p.add_argument("--requests", default=None, help="engine-sweep: needle batch sizes (default: all of REQUESTS)")
    p.add_argument(
        "--every-request", default=None, help="engine-sweep: N for which every request is checked (default: none)"
    )
    p.add_argument("--throughput", default=None, help="engine-sweep: N for output tokens per second (default: none)")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"engine-sweep: timed repetitions per throughput N (1..{MAX_REPEATS}; default: 3)",
    )
    p.add_argument("--configs", default=None, help="invariance: KERNEL:OPTIONS:LAUNCH:COPY,... (default: all)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"kernel, invariance: child processes at a time (1..{MAX_WORKERS}); engine, engine-sweep: engines "
        f"side by side on the GPU (1..{MAX_ENGINE_WORKERS}), each then with a fixed KV cache (default: 1)",
    )
    p.add_argument(
        "--capture-len", type=int, default=None, help="invariance: longest sequence at graph capture (default: 500)"
    )
    p.add_argument(
        "--contexts", default=None, help=f"timing: context lengths (each 1..{MAX_CONTEXT}; default: 256,1024,4096,8192)"
    )
    p.add_argument("--out", default="build/results", help="results folder (created if missing)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if a GPU is usable")
    p.add_argument("--seeds", type=int, default=None, help=f"kernel: seeds 0..N-1 (N in 1..{MAX_SEEDS}; default: 5)")
    p.add_argument(
        "--batches",
        default=None,
        help=f"batch sizes, each 1..{MAX_BATCH} (defaults: kernel/sanitizer 48; invariance "
        "flexfix.measure.invariance.BATCHES; timing 1,8,16,32,64,128)",
    )
    p.add_argument("--scenarios", default=None, help=f"engine: scenario names (default: {DEFAULT_SCENARIOS})")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a results file holding more records than this run writes (or a partial file left by an "
        "interrupted run); without it such a run is refused before it starts",
    )
    return p


def _recorded(path: Path) -> tuple[str | None, int | None] | None:
    """(device kind, records) of a results file at ``path``; None if there is none; Nones if unreadable."""
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
        return payload["provenance"]["device_kind"], len(payload["records"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _check_out(p: argparse.ArgumentParser, args: argparse.Namespace, job: Job) -> None:
    """``--out`` a writable folder, and nothing there this run would replace unasked."""
    try:
        params.writable_folder("--out", args.out)
    except ValueError as e:
        p.error(str(e))
    final = results.results_path(args.out, job.name, job.device)
    partial = results.results_path(args.out, job.name, job.device, partial=True)
    old = _recorded(final)
    if job.device == "cpu" and old is not None and old[0] == "cuda":
        p.error(f"--out: {final} holds a GPU-recorded result; a CPU run does not replace it")
    if (
        old is not None
        and old[1] is not None
        and job.expected is not None
        and job.expected < old[1]
        and not args.replace
    ):
        p.error(
            f"--out: {final} holds {old[1]} records and this run would write {job.expected}: pass --replace to "
            "replace it, or choose another --out or --name"
        )
    left = _recorded(partial)
    if left is not None and not args.replace:
        what = f"{left[1]} records" if left[1] is not None else "an unreadable table"
        p.error(
            f"--out: {partial} holds {what} of an interrupted run: move it away first, or pass --replace to "
            "overwrite it"
        )


class _Progress:
    """The ``save`` of a running part: the table so far, to the partial results file."""

    def __init__(self, out: str, job: Job):
        self.out, self.job = out, job
        self.path: Path | None = None
        self.count = 0

    def __call__(self, table: pd.DataFrame) -> None:
        with children.deferred_signals():  # an interrupt lands once the table is saved and counted, not between
            self.path = results.write_results(
                self.out, self.job.name, table, self.job.device, self.job.params, partial=True
            )
            self.count = len(table)

    def kept(self) -> str:
        unit = _UNITS[self.job.part]
        if self.path is None:
            return f"no {unit} had finished: nothing written"
        return f"the {self.count} finished {unit} are kept in {self.path}"


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    p = build_parser(prog)
    args = p.parse_args(argv)
    prog = f"{p.prog} {args.part}"
    progress: _Progress | None = None
    try:
        with children.interruptible():
            job = plan(p, args)
            _check_out(p, args, job)
            progress = _Progress(args.out, job)
            try:
                table = job.run(progress)
                path = results.write_results(args.out, job.name, table, job.device, job.params, replace=args.replace)
            except (results.ResultsError, OSError) as e:
                print(f"{prog}: {e}; {progress.kept()}", file=sys.stderr)
                return 1
    except KeyboardInterrupt as exc:
        kept = progress.kept() if progress is not None else "nothing had started"
        print(f"{prog}: interrupted by {children.signal_name(exc)}; {kept}", file=sys.stderr)
        return children.exit_status(exc)
    print(f"wrote {path}")
    return 0
