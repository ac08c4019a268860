"""``flexfix repro``: the torch-only reproduction (:mod:`flexfix.mechanism.kernel_repro`) in a child process.

::

    flexfix repro --copy as_strided --device cuda --batch 48 --seed 0
    flexfix repro --copy as_strided --device cuda --sanitizer   # compute-sanitizer

The child is this module (``python -m flexfix.measure.repro --child ...``); its outcome is typed by
:mod:`flexfix.measure.outcomes`.  Under ``--sanitizer`` the scenario runs under ``compute-sanitizer --tool memcheck``
with ``PYTORCH_NO_CUDA_MEMORY_CACHING=1`` (so each tensor is its own allocation and a read past one is seen) and with
the frozen launch instead of a CUDA graph: the sanitizer does not follow kernels inside graph replays, and the frozen
launch runs the same kernel with the same captured strides, eagerly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
from collections.abc import Sequence

from flexfix.measure import children
from flexfix.measure.outcomes import Outcome, Reporter, run_child, run_reported, worst

__all__ = ["run_kernel_in_child", "build_parser", "main"]


def _kernel_args(copy: str, device: str, batch: int, seed: int, launch: str) -> list[str]:
    return [
        "-m",
        "flexfix.measure.repro",
        "--child",
        "--copy",
        copy,
        "--device",
        device,
        "--batch",
        str(batch),
        "--seed",
        str(seed),
        "--launch",
        launch,
    ]


def run_kernel_in_child(
    copy: str,
    device: str,
    batch: int,
    seed: int,
    *,
    launch: str = "auto",
    sanitizer: bool = False,
    timeout: float = 600,
    stop: threading.Event | None = None,
) -> Outcome:
    """The torch-only reproduction (:mod:`flexfix.mechanism.kernel_repro`) in a child process."""
    if sanitizer:
        launch = "frozen"
    return run_child(_kernel_args(copy, device, batch, seed, launch), timeout=timeout, sanitizer=sanitizer, stop=stop)


def _kernel_child(args: argparse.Namespace, reporter: Reporter) -> None:
    from flexfix.mechanism.kernel_repro import KernelScenario, run_kernel_scenario

    sc = KernelScenario(copy=args.copy, device=args.device, batch=args.batch, seed=args.seed, launch=args.launch)
    records = run_kernel_scenario(sc, report=reporter.record)
    reporter.finish(
        worst([r["outcome"] for r in records]),
        f"{sc.copy} copy, {sc.launch_kind} launch, batch {sc.batch}, seed {sc.seed}",
    )
    if args.device == "cuda":
        import torch

        torch.cuda.synchronize()


MAX_TIMEOUT = 3600  # seconds: the longest a child may run from the command line


PROG = "flexfix repro"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from flexfix.edition.params import HelpFormatter

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument(
        "--copy", choices=["as_strided", "sliced"], default="as_strided", help="vLLM 0.20.0's copy, or the fix"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu runs the frozen-launch analog")
    p.add_argument("--batch", type=int, default=48, help="decode requests, 1..128")
    p.add_argument("--seed", type=int, default=0, help="seed of the sequence lengths, pages and values")
    p.add_argument(
        "--launch",
        choices=["auto", "graph", "frozen"],
        default="auto",
        help="graph: a CUDA graph; frozen: the launch replayed with the strides it captured; auto: graph on cuda",
    )
    p.add_argument("--sanitizer", action="store_true", help="run under compute-sanitizer memcheck")
    p.add_argument("--timeout", type=float, default=600, help=f"seconds the child may run, at most {MAX_TIMEOUT}")
    p.add_argument("--json", action="store_true", help="print the whole outcome as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the child's own run (internal)
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.child:
        return run_reported(lambda reporter: _kernel_child(args, reporter))
    from flexfix.edition import params

    try:
        params.positive_int("--batch", args.batch, maximum=128)
        params.positive_int("--seed", args.seed, minimum=0, maximum=2**31 - 1)
    except ValueError as e:
        p.error(str(e))
    if not 0 < args.timeout <= MAX_TIMEOUT:  # also refuses nan
        p.error(f"--timeout must be in (0, {MAX_TIMEOUT}] seconds, got {args.timeout}")
    if args.launch == "graph" and args.device != "cuda":
        p.error("--launch graph needs --device cuda (a CUDA graph)")
    if args.sanitizer and args.device != "cuda":
        p.error("--sanitizer needs --device cuda (compute-sanitizer checks CUDA kernels)")
    if args.sanitizer and shutil.which("compute-sanitizer") is None:
        p.error("--sanitizer: compute-sanitizer is not on PATH (CUDA toolkit)")
    try:
        with children.interruptible():
            if args.device == "cuda" and not params.cuda_available():
                p.error("--device cuda: this machine has no usable CUDA GPU (torch.cuda.is_available() is False)")
            outcome = run_kernel_in_child(
                args.copy,
                args.device,
                args.batch,
                args.seed,
                launch=args.launch,
                sanitizer=args.sanitizer,
                timeout=args.timeout,
            )
    except KeyboardInterrupt as exc:
        print(f"{p.prog}: interrupted by {children.signal_name(exc)}; the child was killed", file=sys.stderr)
        return children.exit_status(exc)
    if args.json:
        print(json.dumps(outcome.to_dict(), indent=1, default=str))
    else:
        for r in outcome.records:
            print(
                f"  {r['step']:>9}: K={r['K']:4d} written stride {r['written_stride']}, "
                f"launch stride {r['launch_stride']}, max error {r['max_error']}, {r['outcome']}"
            )
        print(outcome)
    return 0 if outcome.status in ("ok",) else 1


if __name__ == "__main__":
    children.run_main(main, PROG)  # the child of run_kernel_in_child (--child); users run `flexfix repro`
