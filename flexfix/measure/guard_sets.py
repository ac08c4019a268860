"""The replay guard's evidence: named sets of engines, each set recorded to one results file.

Each set is a list of :class:`flexfix.measure.engine_sweep.EngineRun` (every engine in its own child, side by
side with a fixed KV cache, except the timed set); ``flexfix guard SET ... --out DIR``
records them to ``DIR/<set>-<device>.json``, saving after each engine; the sets of one call share one
pool.  What each set is for:

vLLM 0.20.0 (stock = as released, FlexAttention, default CUDA graphs, the tiny Llama unless named):

* ``guard_stock_error``: ``FLEXFIX_GUARD=error`` at a selection of request counts past one query block (``CROSS``:
  17 the smallest, 32 two full query blocks, 48 the count of notebook 01's scenarios b and d, 128 the largest batch
  of the engine sweep; 48 with batch invariance forced, scenario b), not every count at which an engine of notebook
  01 faulted: each engine should stop with the guard's message at the first replay that would misread;
* ``guard_stock_eager`` / ``guard_patched_reference``: ``FLEXFIX_GUARD=eager`` on stock vLLM, and the patched
  engine without a guard, on the same requests (every token id and logprob recorded, so the two compare
  bitwise), plus the every-request check of notebook 01 and the needle sweep of notebook 04;
* ``guard_false_alarms``: the patched engine under ``FLEXFIX_GUARD=log`` over the engine sweeps of notebooks 01
  and 04 (1 to 128 requests, both models, ``VLLM_BATCH_INVARIANT`` 0 and 1): the guard should raise no alarm;
* ``guard_stock_error_17``: 17 requests as notebook 01 serves them (graphs up to 48 tokens), with and without
  the guard;
* ``stock_workarounds``: stock 0.20.0 without the plugin, every request alone and among 48 and 128: piecewise
  graphs only, no graphs, and ``max_num_seqs=16``;
* ``stock_workaround_cost``: what those cost, output tokens/s of the variance model at 48 and 128 requests against
  the patched engine with full graphs (timed: one engine at a time);
* ``guard_debug``: stock, 48 requests, ``VLLM_LOGGING_LEVEL=DEBUG`` (vLLM's own replay address check on) and
  ``FLEXFIX_GUARD=log``: vLLM's check stays silent, the guard names ``kv_indices``;
* ``guard_cost``: the variance model, patched, ``FLEXFIX_GUARD=error``, tokens/s with the guard checking and not,
  alternately in one engine, 48 and 128 requests (timed: alone);
* ``guard_v0_20_2``: vLLM 0.20.2 (the same function as 0.20.0), error and eager at 48 requests;
* ``backend_speed``: what users would run instead (issue #25, item 3), output tokens/s of the variance model at 48
  and 128 requests, ``VLLM_BATCH_INVARIANT`` 0 and 1, five repetitions each: FlexAttention with flexfix, and
  TRITON_ATTN (timed: alone).

A fixed release (vLLM 0.26.0; run with that release installed):

* ``guard026_false_alarms``: FLEX_ATTENTION and TRITON_ATTN under ``FLEXFIX_GUARD=log``, both models,
  ``VLLM_BATCH_INVARIANT`` 0 and 1, the default model runner (V2 for these Llamas) and V1 for the tiny model;
* ``backend_speed026``: the engines of ``backend_speed`` on the fixed release: its own FlexAttention (the
  plugin finds the fix upstream and leaves it alone) and TRITON_ATTN (timed: alone);
* ``guard026_mutants``: each planted bug (:mod:`flexfix.guard.mutants`) in TRITON_ATTN without the guard (what
  stock vLLM does with it) and under ``FLEXFIX_GUARD=error``, plus the clean backend and, for the window decided
  after capture, the same mutant without graphs (what the step's metadata asks for).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from flexfix.guard.mutants import MUTANTS
from flexfix.measure.engine_sweep import REQUESTS, EngineRun

__all__ = ["SETS", "TIMED", "record_sets", "live", "build_parser", "main"]

STOCK = EngineRun(model="tiny", batch_invariant=False, patched=False, requests=())
PATCHED = replace(STOCK, patched=True)
CROSS = (17, 32, 48, 128)  # concurrent requests past one query block, where stock 0.20.0 can misread: a selection
TRITON = EngineRun(model="tiny", batch_invariant=False, patched=False, backend="TRITON_ATTN", requests=())


def _false_alarm_runs(backends: Sequence[str], runner_v1: bool) -> list[EngineRun]:
    runs = []
    for backend in backends:
        for model in ("tiny", "variance"):
            for bi in (False, True):
                runs.append(
                    EngineRun(
                        model=model,
                        batch_invariant=bi,
                        patched=backend == "FLEX_ATTENTION",
                        backend=backend,
                        guard="log",
                        requests=REQUESTS,
                        every_request=(17, 32, 47) if model == "tiny" else (),
                    )
                )
        if runner_v1:
            runs.append(replace(runs[-4], runner="v1"))
    return runs


# FlexAttention (patched: the plugin's copy on 0.20.x, a no-op on a fixed release) and TRITON_ATTN, BI 0 and 1
SPEED = [
    replace(run, model="variance", batch_invariant=bi, throughput=(48, 128), repeats=5)
    for run in (PATCHED, TRITON)
    for bi in (False, True)
]

SETS: dict[str, list[EngineRun]] = {
    "guard_stock_error": [replace(STOCK, guard="error", generations=(n,)) for n in CROSS]
    + [replace(STOCK, batch_invariant=True, bi_only=True, guard="error", generations=(48,))],
    "guard_stock_eager": [
        replace(STOCK, guard="eager", generations=CROSS, every_request=(17, 32, 47), requests=REQUESTS),
        replace(STOCK, batch_invariant=True, bi_only=True, guard="eager", generations=(48,)),
    ],
    "guard_patched_reference": [
        replace(PATCHED, generations=CROSS, every_request=(17, 32, 47), requests=REQUESTS),
        replace(PATCHED, batch_invariant=True, generations=(48,)),
    ],
    "guard_false_alarms": _false_alarm_runs(["FLEX_ATTENTION"], runner_v1=False),
    # 17 requests as notebook 01 runs them (max_num_seqs 48: the decode of 17 is padded to a graph of 24; with
    # max_num_seqs 17, as in guard_stock_error, no graph holds 17 tokens and nothing replays), with and without
    "guard_stock_error_17": [replace(STOCK, guard=g, generations=(17,), max_num_seqs=48) for g in ("error", "")],
    "guard_debug": [replace(STOCK, guard="log", debug=True, generations=(48,))],
    # what a user of 0.20.x can do without the plugin: no full graphs, no graphs, or one query block at most
    "stock_workarounds": [
        replace(STOCK, graphs="piecewise", every_request=(48, 128)),
        replace(STOCK, graphs="eager", every_request=(48, 128)),
        replace(STOCK, max_num_seqs=16, every_request=(48, 128)),
    ],
    # and what each costs: output tokens/s at 48 and 128 requests against the patched engine (timed: alone)
    "stock_workaround_cost": [
        replace(STOCK, model="variance", graphs="piecewise", throughput=(48, 128)),
        replace(STOCK, model="variance", graphs="eager", throughput=(48, 128)),
        replace(STOCK, model="variance", max_num_seqs=16, throughput=(48, 128)),
        replace(PATCHED, model="variance", throughput=(48, 128)),
    ],
    "guard_cost": [
        replace(PATCHED, model="variance", guard="error", guard_cost=(48, 128), throughput_tokens=128, repeats=12)
    ],
    "guard_v0_20_2": [
        replace(STOCK, guard="error", generations=(48,)),
        replace(STOCK, guard="eager", generations=(48,)),
    ],
    "backend_speed": SPEED,
    "guard026_false_alarms": _false_alarm_runs(["FLEX_ATTENTION", "TRITON_ATTN"], runner_v1=True),
    "guard026_mutants": [replace(TRITON, generations=(32,))]
    + [replace(TRITON, mutant=m, generations=(32,), guard=g) for m in sorted(MUTANTS) for g in ("", "error")]
    + [replace(TRITON, mutant="frozen_decision", graphs="eager", generations=(32,))],
    "backend_speed026": SPEED,
}
# engines that time throughput run alone, one at a time
TIMED = {"guard_cost", "stock_workaround_cost", "backend_speed", "backend_speed026"}
MAX_WORKERS = 16  # engines side by side on one GPU


def record_sets(names: Sequence[str], out_dir, device: str = "cuda", *, workers: int = 1, replace_file: bool = False):
    """Run the sets ``names`` in one pool (``workers`` engines side by side; a timed set runs alone, after the
    others) and write each set to its own file with provenance, saving after every engine."""
    from dataclasses import asdict

    from flexfix.edition import results
    from flexfix.measure.record.engines import engine_sweep

    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise ValueError(f"unknown guard set {unknown[0]!r}; expected one of {sorted(SETS)}")
    side_by_side = [n for n in names if n not in TIMED]
    runs = [run for name in side_by_side for run in SETS[name]]
    if len({repr(asdict(r)) for r in runs}) != len(runs):
        raise ValueError(f"the sets {side_by_side} share an engine: record them in separate calls")

    def save(table, partial: bool, group: Sequence[str], replace_: bool = False) -> list:
        written = []
        for name in group:
            mine = _rows_of(table, SETS[name])
            if mine:
                parameters = {"set": name, "runs": [r.name for r in SETS[name]], "workers": workers}
                written.append(
                    results.write_results(out_dir, name, mine, device, parameters, partial=partial, replace=replace_)
                )
        return written

    paths = []
    if runs:
        table = engine_sweep(
            runs, save=lambda t: save(t, True, side_by_side), timeout=600, workers=min(workers, len(runs))
        )
        paths += save(table, False, side_by_side, replace_file)
    for name in (n for n in names if n in TIMED):
        table = engine_sweep(SETS[name], save=lambda t, n=name: save(t, True, [n]), timeout=600, workers=1)
        paths += save(table, False, [name], replace_file)
    return paths


def _rows_of(table, runs: Sequence[EngineRun]) -> list[dict]:
    """The rows of ``table`` (as :func:`flexfix.measure.record.engines.engine_sweep` writes them) that ran one of
    ``runs``: a row holds its run's fields."""
    from dataclasses import asdict, fields

    keys = [f.name for f in fields(EngineRun)]
    wanted = [asdict(r) for r in runs]
    out = []
    for row in table.to_dict(orient="records"):
        have = {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, row.get(k)) for k in keys)}
        if any(have == {k: list(v) if isinstance(v, tuple) else v for k, v in w.items()} for w in wanted):
            out.append(row)
    return out


def live(requests: int, mode: str = "error", timeout: float = 420):
    """One stock vLLM 0.20.0 engine (tiny Llama, default graphs) under ``FLEXFIX_GUARD=mode`` serving ``requests``
    at once, in its child process, now: the row :func:`flexfix.edition.tables.guard.engine_guard` reads (notebook
    07 on a GPU)."""
    from dataclasses import asdict

    import pandas as pd

    from flexfix.measure.engine_sweep import run_engine
    from flexfix.measure.record.engines import model_dir
    from flexfix.measure.record.pool import outcome_row

    run = replace(STOCK, guard=mode, generations=(requests,), max_num_seqs=max(48, requests))
    out = run_engine(run, model_dir("tiny"), timeout=timeout)
    return pd.DataFrame([outcome_row(out, engine=run.name, **asdict(run))])


PROG = "flexfix guard"


def _plain(text: str) -> str:
    """The docstring's reStructuredText as a terminal shows it: ``:class:`x.y.Z``` as `x.y.Z`, ````a```` as `a`."""
    import re

    return re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from flexfix.edition.params import HelpFormatter

    p = argparse.ArgumentParser(
        prog=prog,
        description=_plain(__doc__.split("\n\n")[0])
        + " Needs a CUDA GPU and vLLM (0.20.x for most sets, 0.26.0 for guard026_* and backend_speed026). The guard "
        "itself needs no command: FLEXFIX_GUARD=error|eager|log in vLLM's environment (README, 'Guarding a backend').",
        epilog=_plain("\n\n".join(__doc__.split("\n\n")[1:])),
        formatter_class=HelpFormatter,
    )
    p.add_argument("sets", nargs="+", choices=sorted(SETS), metavar="SET", help=f"one or more of {sorted(SETS)}")
    p.add_argument("--out", required=True, help="folder for <set>-cuda.json (partial files while it runs)")
    p.add_argument(
        "--workers",
        type=int,
        default=14,
        help=f"engines side by side on the GPU, each with a fixed KV cache, 1..{MAX_WORKERS} (a timed set runs alone, "
        "after the others; an H200 held 14 of the project's engines)",
    )
    p.add_argument("--replace", action="store_true", help="replace a results file even with fewer records")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    from flexfix.edition import params, results
    from flexfix.measure import children

    p = build_parser(prog)
    args = p.parse_args(argv)
    if len(set(args.sets)) != len(args.sets):
        p.error(f"a set is named twice: {' '.join(args.sets)}")
    try:
        params.positive_int("--workers", args.workers, maximum=MAX_WORKERS)
        params.writable_folder("--out", args.out)
    except ValueError as e:
        p.error(str(e))
    if not params.cuda_available():
        p.error("the guard's sets run vLLM engines: this machine has no usable CUDA GPU")
    try:
        with children.interruptible():
            for path in record_sets(args.sets, args.out, workers=args.workers, replace_file=args.replace):
                print(f"wrote {path}", flush=True)
    except (ValueError, results.ResultsError, OSError) as e:
        print(f"{prog}: {e}; finished engines are in the .partial.json files under {args.out}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(
            f"{prog}: interrupted by {children.signal_name(exc)}; finished engines are in {args.out}", file=sys.stderr
        )
        return children.exit_status(exc)
    return 0


if __name__ == "__main__":
    from flexfix.measure import children

    sys.exit(children.exit_code(main, PROG))
