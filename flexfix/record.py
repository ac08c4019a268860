"""Record the GPU evidence: every crash scenario in its child process, written with provenance.

    python -m flexfix.record kernel --out build/results      # torch-only repro + sanitizer
    python -m flexfix.record engine --out build/results      # vLLM 0.20.0 engine scenarios
    python -m flexfix.record invariance --out build/results  # kernel-level batch invariance (notebook 04)
    python -m flexfix.record timing --out build/results      # decode attention timing (notebook 05)
    python -m flexfix.record engine-sweep --runs tiny:bi1:full,tiny:bi0:eager --name engine_sweep
                                             # engine invariance / every request / throughput (04, 05, 01)

Meant for a GPU machine with vLLM 0.20.0; the files it writes are what ``data/`` holds.
On CPU, ``kernel`` runs the frozen-launch analog instead (and says so in provenance).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from flexfix import results
from flexfix.repro import Outcome, run_kernel_in_child

# The engine tables recorded on the H100, in data/ (one run could not hold every scenario).
RECORDED_ENGINE_TABLES = [
    "engine_scenarios",
    "engine_scenarios_part2",
    "engine_scenarios_part3",
    "engine_scenarios_part4",
    "engine_scenarios_repeats",
]

# The kernel-level needle sweep recorded on the H100 (the second file: cells the first run's time limit cut off).
RECORDED_KERNEL_INVARIANCE = ["kernel_invariance", "kernel_invariance_part2"]
# Every request of a batch against itself alone: stock vLLM 0.20.0, and the patched engine as the control.
RECORDED_EVERY_REQUEST = ["engine_every_request_stock", "engine_sweep_tiny_full"]

# The engine sweeps recorded on the H100 (notebooks 04 and 05; the every-request check of notebook 01).
RECORDED_SWEEP_TABLES = [
    "engine_sweep_tiny_full",
    "engine_sweep_variance_full",
    "engine_sweep_tiny_more",
    "engine_sweep_variance_eager",
]

# Output tokens per second, each file one command: per model every graph mode x BI, back to back.
RECORDED_THROUGHPUT_TABLES = [
    "engine_throughput_variance",
    "engine_throughput_variance_repeat",
    "engine_throughput_tiny",
    "engine_throughput_tiny_repeat",
]

__all__ = [
    "RECORDED_ENGINE_TABLES",
    "RECORDED_SWEEP_TABLES",
    "RECORDED_THROUGHPUT_TABLES",
    "RECORDED_KERNEL_INVARIANCE",
    "RECORDED_EVERY_REQUEST",
    "kernel_outcomes",
    "sanitizer_outcomes",
    "engine_outcomes",
    "record_engine",
    "outcome_row",
    "engine_sweep",
    "model_dir",
]


def outcome_row(outcome: Outcome, **keys) -> dict:
    return {
        **keys,
        "status": outcome.status,
        "detail": outcome.detail,
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "seconds": outcome.seconds,
        "records": outcome.records,
        "stderr_tail": outcome.stderr_tail[-6:],
        **outcome.extra,
    }


def kernel_outcomes(
    device: str,
    seeds: Sequence[int],
    batches: Sequence[int],
    copies=("as_strided", "sliced"),
    progress: Callable[[str], None] = print,
) -> pd.DataFrame:
    """The torch-only repro for every copy x batch x seed, each in its own child."""
    rows = []
    for copy in copies:
        for batch in batches:
            for seed in seeds:
                out = run_kernel_in_child(copy, device, batch, seed, timeout=240)
                progress(f"{copy:>10} batch {batch:3d} seed {seed}: {out}")
                rows.append(
                    outcome_row(
                        out,
                        copy=copy,
                        batch=batch,
                        seed=seed,
                        device=device,
                        launch="graph" if device == "cuda" else "frozen",
                    )
                )
    return pd.DataFrame(rows)


def sanitizer_outcomes(batch: int = 48, seed: int = 0, progress: Callable[[str], None] = print) -> pd.DataFrame:
    """Both copies under compute-sanitizer memcheck (frozen launch, no caching allocator)."""
    rows = []
    for copy in ("as_strided", "sliced"):
        out = run_kernel_in_child(copy, "cuda", batch, seed, sanitizer=True, timeout=240)
        progress(f"sanitizer {copy}: {out} ({out.extra.get('sanitizer_errors')} errors)")
        rows.append(outcome_row(out, copy=copy, batch=batch, seed=seed, device="cuda", launch="frozen"))
    return pd.DataFrame(rows)


def engine_outcomes(
    names: Sequence[str],
    model_dir: Path,
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = lambda table: None,
) -> pd.DataFrame:
    """Engine scenarios one after another (vLLM's memory profiling cannot share the GPU with
    another starting engine); ``save`` gets the table after each, so a cut-off run keeps them."""
    from flexfix.engine import SCENARIOS, run_scenario

    rows = []
    for name in names:
        out = run_scenario(name, model_dir)
        progress(f"engine {name}: {out}")
        sc = SCENARIOS[name]
        rows.append(
            outcome_row(
                out,
                scenario=name,
                what=sc.what,
                expected=sc.expect,
                patch=sc.patch,
                batch_invariant=sc.batch_invariant,
                requests=list(sc.requests),
            )
        )
        save(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def model_dir(config: str) -> Path:
    """The Llama checkpoint of ``config`` (written once per machine, in the temp folder)."""
    from flexfix.engine import write_llama

    return write_llama(Path(tempfile.gettempdir()) / "flexfix-models" / config, config)


def engine_sweep(
    runs: Sequence,
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = lambda table: None,
    timeout: float = 480,
) -> pd.DataFrame:
    """:class:`flexfix.engine_sweep.EngineRun` s one after another, each in its own child."""
    from dataclasses import asdict

    from tqdm.auto import tqdm

    from flexfix.engine_sweep import run_engine

    rows = []
    for run in tqdm(list(runs), desc="engine sweep", unit="engine"):
        out = run_engine(run, model_dir(run.model), timeout=timeout)
        progress(f"engine {run.name}: {out}")
        rows.append(outcome_row(out, engine=run.name, **asdict(run)))
        save(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def record_engine(
    names: Sequence[str], out_dir, device: str, name: str = "engine_scenarios", progress: Callable[[str], None] = print
) -> tuple[pd.DataFrame, Path]:
    """Write the tiny Llama, run ``names`` one after another, save the table after each."""
    params = {"scenarios": list(names), "model": "tiny", "max_tokens": 32}
    model = model_dir("tiny")
    table = engine_outcomes(
        names, model, progress, save=lambda t: results.write_results(out_dir, name, t, device, params)
    )
    return table, results.write_results(out_dir, name, table, device, params)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexfix.record")
    p.add_argument("part", choices=["kernel", "sanitizer", "engine", "invariance", "timing", "engine-sweep"])
    p.add_argument("--name", default=None, help="results name (default: the part's)")
    p.add_argument("--runs", default="tiny:bi1:full", help="engine-sweep: MODEL:bi0|bi1|stock:full|piecewise|eager,...")
    p.add_argument("--requests", default=None, help="engine-sweep: needle batch sizes (default: all of REQUESTS)")
    p.add_argument("--every-request", default="", help="engine-sweep: N for which every request is checked")
    p.add_argument("--throughput", default="", help="engine-sweep: N for output tokens per second")
    p.add_argument("--repeats", type=int, default=3, help="engine-sweep: timed repetitions per throughput N")
    p.add_argument("--configs", default="", help="invariance: KERNEL:OPTIONS:LAUNCH:COPY,... (default: all)")
    p.add_argument("--workers", type=int, default=1, help="invariance: child processes at a time")
    p.add_argument("--capture-len", type=int, default=500, help="invariance: longest sequence at graph capture")
    p.add_argument("--contexts", default="256,1024,4096,8192", help="timing: context lengths")
    p.add_argument("--out", default="build/results")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument(
        "--batches",
        default="",
        help="batch sizes (defaults: kernel/sanitizer 48; invariance "
        "flexfix.invariance.BATCHES; timing 1,8,16,32,64,128)",
    )
    p.add_argument(
        "--scenarios", default="a,b,c,d,threshold,stock_16,stock_17,stock_24,stock_32,patched_inprocess,patched_plugin"
    )
    args = p.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def ints(text):
        return tuple(int(x) for x in text.split(",") if x)

    batches = list(ints(args.batches))
    if args.part in ("kernel", "sanitizer"):
        batches = batches or [48]
    elif args.part == "timing":
        batches = batches or [1, 8, 16, 32, 64, 128]

    def save(name, params):
        return lambda table: results.write_results(args.out, name, table, device, params)

    if args.part == "invariance":
        from flexfix import invariance

        name = args.name or "kernel_invariance"
        configs = (
            invariance.parse_configs(args.configs)
            if args.configs
            else invariance.gpu_configs()
            if device == "cuda"
            else invariance.cpu_configs()
        )
        sweep = invariance.SweepShape(capture_len=args.capture_len)
        batches = batches or list(invariance.BATCHES)
        params = {
            "configs": [c.name for c in configs],
            "batches": batches,
            "positions": list(invariance.POSITIONS),
            "needle_len": sweep.needle_len,
            "capture_len": sweep.capture_len,
            "shape": str(sweep.paged),
        }
        table = invariance.kernel_sweep(configs, sweep, device, batches, workers=args.workers, save=save(name, params))
    elif args.part == "timing":
        from flexfix import timing

        name = args.name or "decode_timing"
        params = {"batches": batches, "contexts": list(ints(args.contexts)), "case": str(timing.DecodeCase())}
        table = timing.decode_sweep(batches, params["contexts"], device, save=save(name, params))
    elif args.part == "engine-sweep":
        from flexfix.engine_sweep import REQUESTS, parse_runs

        name = args.name or "engine_sweep"
        runs = parse_runs(
            args.runs,
            requests=REQUESTS if args.requests is None else ints(args.requests),
            every_request=ints(args.every_request),
            throughput=ints(args.throughput),
            repeats=args.repeats,
        )
        params = {"runs": [r.name for r in runs], "repeats": args.repeats}
        table = engine_sweep(runs, save=save(name, params))
    elif args.part == "kernel":
        params = {"seeds": list(range(args.seeds)), "batches": batches}
        table = kernel_outcomes(device, params["seeds"], batches)
        name = "ima_kernel"
    elif args.part == "sanitizer":
        params = {"batch": batches[0], "seed": 0}
        table = sanitizer_outcomes(batches[0])
        name = "ima_sanitizer"
    else:
        _, path = record_engine(args.scenarios.split(","), args.out, device, name=args.name or "engine_scenarios")
        print(f"wrote {path}")
        return 0
    path = results.write_results(args.out, name, table, device, params)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
