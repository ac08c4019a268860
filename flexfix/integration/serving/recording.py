"""``flexfix serve record``: the serving scenarios recorded one after another, with provenance.

::

    flexfix serve record --out build/results --name serve \\
        --scenarios stock,patched_bi1,patched_bi0            # on a GPU: writes serve-cuda.json
    flexfix serve record --fake tests/fake_vllm_server.py --model tiny --requests 20,32 --out build/results
                                                             # CPU: the same code against a FAKE server

The table is saved after each scenario; Ctrl-C or SIGTERM stops the server's process group and keeps the finished
scenarios.  :func:`recorded_run` and :func:`show_recorded` read the GPU run kept in ``data/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from flexfix.edition import results
from flexfix.edition.params import HelpFormatter
from flexfix.integration.serving.manager import VLLM_LAUNCHER
from flexfix.integration.serving.run import run_scenario
from flexfix.integration.serving.scenarios import SCENARIOS, SEED_BASE, ServeScenario, plan, prepare_model, vllm_args
from flexfix.measure.engine_sweep import PROMPT_LENGTHS

__all__ = ["PROG", "record", "recorded_run", "show_recorded", "build_parser", "main"]

PROG = "flexfix serve"


def record(
    scenarios: Sequence[ServeScenario],
    out_dir: str | os.PathLike,
    name: str = "serve",
    *,
    max_tokens: int = 32,
    fake_server: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    startup_timeout: float = 480,
    request_timeout: float = 120,
    progress: Callable[[str], None] = print,
    replace: bool = False,
) -> tuple[pd.DataFrame, Path | None]:
    """Run ``scenarios`` (from :func:`plan`) one after another, each with its own server; the table is
    written (``out_dir/name-<device>.json``, with provenance) after each, so an interrupted run keeps
    the finished ones.  An existing file with more records is replaced only with ``replace`` (a notebook
    run again replaces its own results).  Logs go to ``out_dir/name-logs/<scenario>.log``.  With ``fake_server`` the
    FAKE server runs instead of vLLM and the device is ``cpu``."""
    results.results_path(out_dir, name, "cpu")  # refuses a bad name before anything starts
    if fake_server is not None:
        launcher, device, server = (sys.executable, str(fake_server)), "cpu", f"FAKE ({Path(fake_server).name})"
    else:
        launcher, device, server = VLLM_LAUNCHER, "cuda", "vllm serve (python -m vllm.entrypoints.cli.main serve)"
    params = {
        "server": server,
        "scenarios": [sc.name for sc in scenarios],
        "models": {sc.name: sc.model for sc in scenarios},
        "requests": {sc.name: list(sc.requests) for sc in scenarios},
        "environment": {sc.name: sc.env() for sc in scenarios},
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "sampling": f"seeded, seed {SEED_BASE}+i, ignore_eos, logprobs=1, token ids",
        "prompt_lengths": {sc.name: list(PROMPT_LENGTHS[sc.model]) for sc in scenarios},
        "vllm_args": {
            sc.name: ["--attention-backend", "FLEX_ATTENTION", *vllm_args(sc.model, max(sc.requests))]
            for sc in scenarios
        },
        "startup_timeout": startup_timeout,
    }
    logs = Path(out_dir) / f"{name}-logs"
    rows, path = [], None
    for sc in scenarios:
        model_dir = prepare_model(sc.model, models_dir)
        progress(f"{sc.name}: starting {server} on {model_dir} ({sc.what})")
        row = run_scenario(
            sc,
            model_dir,
            logs / f"{sc.name}.log",
            launcher=launcher,
            max_tokens=max_tokens,
            startup_timeout=startup_timeout,
            request_timeout=request_timeout,
            progress=progress,
        )
        rows.append(row)
        path = results.write_results(out_dir, name, rows, device, params, replace=replace)
        progress(f"{sc.name}: {row['status']} ({row['detail']}), {row['seconds']} s; saved {path}")
    return pd.DataFrame(rows), path


# Reading and showing.


def recorded_run(data_dir: str | os.PathLike, name: str = "serve") -> tuple[pd.DataFrame, dict] | None:
    """The GPU serving run recorded in ``data_dir`` with its provenance, or None (saying so) until it exists."""
    path = results.results_path(data_dir, name, "cuda")
    if not path.exists():
        print(
            f"The GPU serving run is not recorded yet: it will be {path} "
            f"(flexfix serve record --out build/results --name {name} on a GPU, then copied to data/)."
        )
        return None
    return results.read_results(path)


def show_recorded(data_dir: str | os.PathLike, name: str = "serve") -> pd.DataFrame | None:
    """Print the recorded GPU run's provenance and show its tables (or say it is not recorded yet)."""
    from IPython.display import display

    from flexfix.edition.tables import error_summary, print_log_tails, provenance_line, scenario_table, stage_table

    loaded = recorded_run(data_dir, name)
    if loaded is None:
        return None
    table, prov = loaded
    print(provenance_line(prov))
    print(f"server: {prov['parameters'].get('server')}; vLLM args: {prov['parameters'].get('vllm_args')}")
    display(scenario_table(table))
    display(stage_table(table))
    display(error_summary(table))
    print_log_tails(table, 20)
    return table


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Does the fix hold in vllm serve? Concurrent OpenAI-client completions against a served Llama.",
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{record}", help="record is the one command")
    r = sub.add_parser(
        "record", help="run the serving scenarios and write NAME-<device>.json", formatter_class=HelpFormatter
    )
    r.add_argument("--out", default="build/results", help="results folder (logs go to NAME-logs/ below it)")
    r.add_argument("--name", default="serve", help="results name")
    r.add_argument("--scenarios", default="stock,patched_bi1,patched_bi0", help=f"some of {','.join(SCENARIOS)}")
    r.add_argument("--model", default=None, help="Llama config for every scenario (default: each scenario's own)")
    r.add_argument("--requests", default=None, help="concurrent batch sizes for every scenario, e.g. 48,128")
    r.add_argument("--max-tokens", type=int, default=32, help="tokens generated per request")
    r.add_argument("--startup-timeout", type=float, default=480, help="seconds a server may take to be healthy")
    r.add_argument("--request-timeout", type=float, default=120, help="seconds a request may take")
    r.add_argument("--models-dir", default=None, help="where model directories are written (default: temp folder)")
    r.add_argument("--fake", default=None, metavar="SCRIPT", help="run this FAKE server instead of vLLM (CPU tests)")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    from flexfix.edition.tables import scenario_table
    from flexfix.measure.children import exit_status, interruptible, signal_name

    p = build_parser(prog)
    args = p.parse_args(argv)
    try:
        requests = None
        if args.requests is not None:
            try:
                requests = [int(x) for x in args.requests.split(",")]
            except ValueError:
                raise ValueError(f"requests must be comma-separated integers, got {args.requests!r}") from None
        scenarios = plan(
            args.scenarios, model=args.model, requests=requests, max_tokens=args.max_tokens, fake_server=args.fake
        )
        results.results_path(args.out, args.name, "cpu")
        if args.startup_timeout <= 0 or args.request_timeout <= 0:
            raise ValueError("startup and request timeouts must be > 0")
    except ValueError as exc:
        print(f"{prog} record: error: {exc}", file=sys.stderr)
        return 2
    saved = results.results_path(args.out, args.name, "cpu" if args.fake else "cuda")
    started = time.time()
    try:
        with interruptible():  # SIGTERM too raises an interrupt, so that the server's group is stopped
            table, path = record(
                scenarios,
                args.out,
                args.name,
                max_tokens=args.max_tokens,
                fake_server=args.fake,
                models_dir=args.models_dir,
                startup_timeout=args.startup_timeout,
                request_timeout=args.request_timeout,
                progress=lambda line: print(line, flush=True),
            )
    except KeyboardInterrupt as exc:
        fresh = saved.exists() and saved.stat().st_mtime >= started
        kept = f"the finished scenarios are kept in {saved}" if fresh else "no scenario had finished"
        print(f"interrupted by {signal_name(exc)}: the server was stopped; {kept}", file=sys.stderr)
        return exit_status(exc)
    print(scenario_table(table).to_string())
    print(f"wrote {path}")
    return 0
