"""Crash or wrong answer, decided on purpose: the torch-only reproduction with the KV cache placed by hand.

::

    python -m flexfix.measure.outcome_cause --device cuda --out data   # data/outcome_cause-cuda.json
    python -m flexfix.measure.outcome_cause --device cpu --out build   # build/outcome_cause_reads-cpu.json

What the misread ``kv_indices`` cells hold is fixed by the scenario (:mod:`flexfix.mechanism.misreads`): pages of other
rows, and ``-1`` pads, which make the kernel load one page of KV head 0 *in front of* the K and V caches.  So the
outcome should be decided by whether those bytes are mapped -- by where the caches sit, not by the values.  This
experiment controls that (:mod:`flexfix.mechanism.cache_placement`): each run of the reproduction (its own child
process: an illegal memory access poisons the process) places both caches ``default`` (the caching allocator, as
every earlier run), ``guarded`` (mapped zeros in front, same allocation) or ``fenced`` (reserved, unmapped address
space in front), and asks the driver, before the first replay, whether the first byte a ``-1`` page reads is inside
an allocation.  Controls: the sliced copy and a batch of one query block, fenced.

On CPU there is no kernel to fault; the command writes what can be shown there: which cells each replay's rows read
and how many bytes in front of the cache their ``-1`` pads point to (``outcome_cause_reads-cpu.json``).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence

import pandas as pd

from flexfix.measure.outcomes import json_child_argv, json_child_main, run_child, worst
from flexfix.measure.record.pool import no_save, outcome_row, pooled

__all__ = ["PROG", "SCENARIOS", "plan", "reads_table", "run_scenarios", "predicted", "build_parser", "main"]

PROG = "python -m flexfix.measure.outcome_cause"
MODULE = "flexfix.measure.outcome_cause"
# The experiment, then where each cache's front matters, then direct reads of a front, then the controls.  Keys:
# copy, placement (the K cache's; "v" the V cache's if different), batch, touch (read the bytes in front of the "k" or
# "v" cache with a kernel of its own just before the first replay), seeds (how many of the seeds; all if absent).
SCENARIOS = (
    {"placement": "default"},
    {"placement": "guarded"},
    {"placement": "fenced"},
    {"placement": "guarded", "v": "fenced", "seeds": 2},
    {"placement": "fenced", "v": "guarded", "seeds": 2},
    {"placement": "default", "touch": "v", "seeds": 2},
    {"placement": "default", "touch": "k", "seeds": 1},
    {"placement": "fenced", "touch": "v", "seeds": 1},
    {"copy": "sliced", "placement": "fenced", "seeds": 2},
    {"placement": "fenced", "batch": 16, "seeds": 1},
)


def plan(seeds: Sequence[int], scenarios=SCENARIOS) -> list[dict]:
    """One child spec per scenario and seed (a scenario with ``seeds`` runs on the first ones only)."""
    specs = []
    for sc in scenarios:
        base = {
            "copy": sc.get("copy", "as_strided"),
            "placement": sc["placement"],
            "v_placement": sc.get("v", sc["placement"]),
            "batch": sc.get("batch", 48),
            "touch": sc.get("touch"),
            "device": "cuda",
        }
        count = sc.get("seeds", len(seeds))
        specs += [{**base, "seed": seed} for seed in seeds[:count]]
    return specs


def reads_table(seeds: Sequence[int], batch: int = 48, copies=("as_strided", "sliced")) -> pd.DataFrame:
    """The misread cells of every replay, per copy and seed (CPU, no kernel): :func:`misread_steps` rows."""
    from flexfix.mechanism.kernel_repro import KernelScenario
    from flexfix.mechanism.misreads import misread_steps

    rows = []
    for copy in copies:
        for seed in seeds:
            sc = KernelScenario(copy=copy, batch=batch, seed=seed)
            rows += [{"copy": copy, "batch": batch, "seed": seed, **r} for r in misread_steps(sc)]
    return pd.DataFrame(rows)


def predicted(front_k: bool | None, front_v: bool | None, pads_read: int) -> str:
    """What the mechanism predicts: no ``-1`` pad read, no read in front of the caches (ok or wrong by the pages
    alone); otherwise a fault if the bytes in front of either cache are unmapped, a wrong answer if both are mapped."""
    if not pads_read:
        return "no_front_read"
    if front_k is None or front_v is None:
        return "unknown"
    return "wrong_result" if front_k and front_v else "illegal_memory_access"


def _child(spec: dict, reporter) -> None:
    import torch

    from flexfix.mechanism.cache_placement import front_of, read_front
    from flexfix.mechanism.kernel_repro import KernelScenario, run_kernel_scenario
    from flexfix.mechanism.misreads import front_bytes

    device = spec.get("device", "cuda")  # cpu: the frozen analog (tests); its read in front is an IndexError
    sc = KernelScenario(
        copy=spec["copy"],
        device=device,
        batch=spec["batch"],
        seed=spec["seed"],
        placement=spec["placement"],
        v_placement=spec.get("v_placement"),
    )
    reach = front_bytes(sc.shape, sc.dtype)

    def on_cache(moment: str, k_cache, v_cache) -> None:
        reporter.record({"cache": moment, "k": front_of(k_cache, reach), "v": front_of(v_cache, reach)})
        if moment == "captured" and spec.get("touch"):  # a fault here is the touch's, not the replay's
            reporter.record({"touch": spec["touch"], "read": None})
            total = read_front(k_cache if spec["touch"] == "k" else v_cache, reach)
            reporter.record({"touch": spec["touch"], "read": total})

    records = run_kernel_scenario(sc, report=reporter.record, on_cache=on_cache)
    reporter.finish(worst([r["outcome"] for r in records]), f"{sc.copy} copy, {sc.placement} cache, seed {sc.seed}")
    if device == "cuda":
        torch.cuda.synchronize()


def _row(spec: dict, outcome, pads: dict[tuple, int]) -> dict:
    probes = {r["cache"]: r for r in outcome.records if "cache" in r}
    steps = [r for r in outcome.records if "step" in r]
    touches = [r for r in outcome.records if "touch" in r]
    probe = probes.get("captured") or probes.get("placed") or {}
    k, v = probe.get("k") or {}, probe.get("v") or {}
    pads_read = pads[(spec["copy"], spec["batch"], spec["seed"])]
    row = outcome_row(outcome, **spec, launch="graph" if spec["device"] == "cuda" else "frozen")
    row.update(
        records=steps,
        probe_moment=probe.get("cache"),
        k_address=k.get("address"),
        v_address=v.get("address"),
        front_k_mapped=k.get("front_mapped"),
        front_v_mapped=v.get("front_mapped"),
        front_k_size=k.get("front_size"),
        front_v_size=v.get("front_size"),
        pads_read=pads_read,
        predicted=predicted(k.get("front_mapped"), v.get("front_mapped"), pads_read),
        touch_result=_touched(touches, outcome.status),
    )
    return row


def _touched(touches: list[dict], status: str) -> str | None:
    """What reading the bytes in front of a cache did: "read" (no fault), "faulted" (the run's illegal memory access
    came from that read: it started and never finished), None (no read asked, or it never started)."""
    if not touches:
        return None
    if any(t.get("read") is not None for t in touches):
        return "read"
    return "faulted" if status == "illegal_memory_access" else None


def run_scenarios(
    seeds: Sequence[int],
    *,
    workers: int = 1,
    timeout: float = 300,
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = no_save,
) -> pd.DataFrame:
    """Every scenario x seed of :func:`plan`, each in its own child on CUDA, ``workers`` at a time."""
    specs = plan(seeds)
    reads = pd.concat([reads_table(seeds, batch) for batch in sorted({s["batch"] for s in specs})])
    first_replay = reads[reads.step == "replay 1"]
    pads = {(r.copy, r.batch, r.seed): int(r.pad) for r in first_replay.itertuples()}

    def job(spec: dict, stop) -> tuple[dict, str]:
        out = run_child(json_child_argv(MODULE, spec), timeout=timeout, stop=stop)
        row = _row(spec, out, pads)
        where = f"K {spec['placement']}, V {spec['v_placement']}" + (
            f", touch {spec['touch']}" if spec["touch"] else ""
        )
        line = f"{spec['copy']:>10} {where} batch {spec['batch']} seed {spec['seed']}: {out}"
        return (
            row,
            f"{line} (front mapped: K {row['front_k_mapped']}, V {row['front_v_mapped']}, {row['touch_result']})",
        )

    return pooled([functools.partial(job, spec) for spec in specs], workers, progress, save)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from flexfix.edition.params import HelpFormatter

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda runs the children; cpu the reads")
    p.add_argument("--out", required=True, help="folder for the results file")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds, each >= 0")
    p.add_argument("--workers", type=int, default=1, help="children at a time (cuda), 1..16")
    p.add_argument("--timeout", type=float, default=300, help="seconds each child may run, in (0, 1800]")
    p.add_argument("--replace", action="store_true", help="replace a results file holding more records")
    p.add_argument("--child", help=argparse.SUPPRESS)  # a child's own run (internal)
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return json_child_main(MODULE, _child, argv)
    from flexfix.edition import params, results

    p = build_parser(prog)
    args = p.parse_args(argv)
    try:
        seeds = params.parse_ints("--seeds", args.seeds, minimum=0, maximum=2**31 - 1)
        params.positive_int("--workers", args.workers, maximum=16)
        if not 0 < args.timeout <= 1800:  # also refuses nan
            raise ValueError(f"--timeout must be in (0, 1800] seconds, got {args.timeout}")
        out = params.writable_folder("--out", args.out)
    except ValueError as e:
        p.error(str(e))
    if args.device == "cuda" and not params.cuda_available():
        p.error("--device cuda: this machine has no usable CUDA GPU (torch.cuda.is_available() is False)")
    from flexfix.mechanism.cache_placement import GUARD_BYTES
    from flexfix.mechanism.kernel_repro import KernelScenario

    sc = KernelScenario()
    parameters = {
        "seeds": seeds,
        "capture_len": sc.capture_len,
        "replay_lens": list(sc.replay_lens),
        "guard_bytes": GUARD_BYTES,
        "scenarios": [dict(s) for s in SCENARIOS],
        "workers": args.workers,
    }
    try:
        if args.device == "cpu":
            table = reads_table(seeds)
            print(table.to_string(index=False))
            path = results.write_results(out, "outcome_cause_reads", table, "cpu", parameters, replace=args.replace)
        else:
            table = run_scenarios(seeds, workers=args.workers, timeout=args.timeout)
            path = results.write_results(out, "outcome_cause", table, "cuda", parameters, replace=args.replace)
    except results.ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from flexfix.measure import children

    children.run_main(main, PROG)
