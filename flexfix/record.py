"""Record the GPU evidence: every crash scenario in its child process, written with provenance.

    python -m flexfix.record kernel --out build/results      # torch-only repro + sanitizer
    python -m flexfix.record engine --out build/results      # vLLM 0.20.0 engine scenarios

Meant for a GPU machine with vLLM 0.20.0; the files it writes are what ``data/`` holds.
On CPU, ``kernel`` runs the frozen-launch analog instead (and says so in provenance).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from flexfix import results
from flexfix.repro import Outcome, run_kernel_in_child

# The engine tables recorded on the H100, in data/ (one run could not hold every scenario).
RECORDED_ENGINE_TABLES = ["engine_scenarios", "engine_scenarios_part2", "engine_scenarios_part3",
                          "engine_scenarios_part4"]

__all__ = ["RECORDED_ENGINE_TABLES", "kernel_outcomes", "sanitizer_outcomes", "engine_outcomes", "record_engine", "outcome_row"]


def outcome_row(outcome: Outcome, **keys) -> dict:
    return {**keys, "status": outcome.status, "detail": outcome.detail, "exit_code": outcome.exit_code,
            "signal": outcome.signal, "seconds": outcome.seconds, "records": outcome.records,
            "stderr_tail": outcome.stderr_tail[-6:], **outcome.extra}


def kernel_outcomes(device: str, seeds: Sequence[int], batches: Sequence[int], copies=("as_strided", "sliced"),
                    progress: Callable[[str], None] = print) -> pd.DataFrame:
    """The torch-only repro for every copy x batch x seed, each in its own child."""
    rows = []
    for copy in copies:
        for batch in batches:
            for seed in seeds:
                out = run_kernel_in_child(copy, device, batch, seed, timeout=240)
                progress(f"{copy:>10} batch {batch:3d} seed {seed}: {out}")
                rows.append(outcome_row(out, copy=copy, batch=batch, seed=seed, device=device,
                                        launch="graph" if device == "cuda" else "frozen"))
    return pd.DataFrame(rows)


def sanitizer_outcomes(batch: int = 48, seed: int = 0, progress: Callable[[str], None] = print) -> pd.DataFrame:
    """Both copies under compute-sanitizer memcheck (frozen launch, no caching allocator)."""
    rows = []
    for copy in ("as_strided", "sliced"):
        out = run_kernel_in_child(copy, "cuda", batch, seed, sanitizer=True, timeout=240)
        progress(f"sanitizer {copy}: {out} ({out.extra.get('sanitizer_errors')} errors)")
        rows.append(outcome_row(out, copy=copy, batch=batch, seed=seed, device="cuda", launch="frozen"))
    return pd.DataFrame(rows)


def engine_outcomes(names: Sequence[str], model_dir: Path, progress: Callable[[str], None] = print,
                    save: Callable[[pd.DataFrame], None] = lambda table: None) -> pd.DataFrame:
    """Engine scenarios one after another (vLLM's memory profiling cannot share the GPU with
    another starting engine); ``save`` gets the table after each, so a cut-off run keeps them."""
    from flexfix.engine import SCENARIOS, run_scenario

    rows = []
    for name in names:
        out = run_scenario(name, model_dir)
        progress(f"engine {name}: {out}")
        sc = SCENARIOS[name]
        rows.append(outcome_row(out, scenario=name, what=sc.what, expected=sc.expect, patch=sc.patch,
                                batch_invariant=sc.batch_invariant, requests=list(sc.requests)))
        save(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def record_engine(names: Sequence[str], out_dir, device: str, name: str = "engine_scenarios",
                  progress: Callable[[str], None] = print) -> tuple[pd.DataFrame, Path]:
    """Write the tiny Llama, run ``names`` one after another, save the table after each."""
    from flexfix.engine import write_llama

    params = {"scenarios": list(names), "model": "tiny", "max_tokens": 32}
    model = write_llama(Path(tempfile.gettempdir()) / "flexfix-models" / "tiny", "tiny")
    table = engine_outcomes(names, model, progress,
                            save=lambda t: results.write_results(out_dir, name, t, device, params))
    return table, results.write_results(out_dir, name, table, device, params)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexfix.record")
    p.add_argument("part", choices=["kernel", "sanitizer", "engine"])
    p.add_argument("--out", default="build/results")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--batches", default="48")
    p.add_argument("--scenarios", default="a,b,c,d,threshold,stock_16,stock_17,stock_24,stock_32,"
                                          "patched_inprocess,patched_plugin")
    args = p.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batches = [int(b) for b in args.batches.split(",")]
    if args.part == "kernel":
        params = {"seeds": list(range(args.seeds)), "batches": batches}
        table = kernel_outcomes(device, params["seeds"], batches)
        name = "ima_kernel"
    elif args.part == "sanitizer":
        params = {"batch": batches[0], "seed": 0}
        table = sanitizer_outcomes(batches[0])
        name = "ima_sanitizer"
    else:
        _, path = record_engine(args.scenarios.split(","), args.out, device)
        print(f"wrote {path}")
        return 0
    path = results.write_results(args.out, name, table, device, params)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
