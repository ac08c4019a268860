"""``flexfix serve record``: the serving scenarios recorded one after another, with provenance.

::

    flexfix serve record --out build/results --name serve \\
        --scenarios stock,patched_bi1,patched_bi0            # on a GPU: writes serve-cuda.json
    flexfix serve record --fake tests/fake_vllm_server.py --model tiny --requests 20,32 --out build/results
                                                             # CPU: the same code against a FAKE server

Every argument is checked before any server starts (:func:`check_run`): the scenarios and batch sizes (none
twice), finite timeouts, a writable ``--out`` and ``--models-dir``, and nothing there the run would replace
unasked: a results file with more scenarios than this run records, or a partial file of an interrupted run
(``--replace`` allows both, as for ``flexfix record``).  The table goes to ``<name>-<device>.partial.json`` after
each scenario and to ``<name>-<device>.json`` at the end; each run's server logs go to a folder of their own
(``<name>-logs/<UTC time>/<scenario>.log``), so a later run never overwrites the log a kept table points to.
Ctrl-C, SIGTERM or SIGHUP stops the server's process group and keeps the finished scenarios; the command exits 1
when a server did not start.  :func:`recorded_run` and :func:`show_recorded` read the GPU run kept in ``data/``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from flexfix.edition import params as params_mod
from flexfix.edition import results
from flexfix.edition.params import HelpFormatter
from flexfix.integration.serving.manager import VLLM_LAUNCHER
from flexfix.integration.serving.run import run_scenario
from flexfix.integration.serving.scenarios import SCENARIOS, SEED_BASE, ServeScenario, plan, prepare_model, vllm_args
from flexfix.measure import children
from flexfix.measure.engine_sweep import PROMPT_LENGTHS

__all__ = [
    "PROG",
    "MAX_STARTUP_TIMEOUT",
    "MAX_REQUEST_TIMEOUT",
    "Kept",
    "check_run",
    "record",
    "recorded_run",
    "show_recorded",
    "build_parser",
    "main",
]

PROG = "flexfix serve"
MAX_STARTUP_TIMEOUT = 7200.0  # seconds a server may take to be healthy
MAX_REQUEST_TIMEOUT = 3600.0  # seconds a request may take


@dataclass
class Kept:
    """Where a run's finished scenarios are, as it goes (the partial file), for the line an interrupt prints."""

    path: Path | None = None
    count: int = 0

    def line(self) -> str:
        if self.path is None:
            return "no scenario had finished: nothing written"
        return f"the {self.count} finished scenarios are kept in {self.path}"


def _recorded(path: Path) -> tuple[str | None, int | None] | None:
    """(device kind, records) of a results file at ``path``; None if there is none; Nones if unreadable."""
    if not path.exists():
        return None
    try:
        table, prov = results.read_results(path)
    except results.ResultsError:
        return None, None
    return prov["device_kind"], len(table)


def check_run(
    scenarios: Sequence[ServeScenario],
    out_dir: str | os.PathLike,
    name: str,
    device: str,
    *,
    models_dir: str | os.PathLike | None = None,
    startup_timeout: float = 480,
    request_timeout: float = 120,
    replace: bool = False,
    names: tuple[str, str] = ("out_dir", "models_dir"),
) -> None:
    """Everything a run is refused for, before any server starts: ValueError naming it (``names``: how the
    output and models folders are called in the message, e.g. ``("--out", "--models-dir")``)."""
    results.results_path(out_dir, name, device)  # a bad name
    children.check_timeout("startup_timeout", startup_timeout, maximum=MAX_STARTUP_TIMEOUT)
    children.check_timeout("request_timeout", request_timeout, maximum=MAX_REQUEST_TIMEOUT)
    params_mod.writable_folder(names[0], out_dir)
    if models_dir is not None:
        params_mod.writable_folder(names[1], models_dir)
    final = results.results_path(out_dir, name, device)
    partial = results.results_path(out_dir, name, device, partial=True)
    old = _recorded(final)
    if device == "cpu" and old is not None and old[0] == "cuda":
        raise ValueError(f"{names[0]}: {final} holds a GPU-recorded result; a CPU run does not replace it")
    if old is not None and old[1] is not None and old[1] > len(scenarios) and not replace:
        raise ValueError(
            f"{names[0]}: {final} holds {old[1]} scenarios and this run would write {len(scenarios)}: pass "
            "--replace (replace=True) to replace it, or choose another output folder or name"
        )
    if partial.exists() and not replace:
        raise ValueError(
            f"{names[0]}: {partial} holds the scenarios of an interrupted run: move it away first, or pass "
            "--replace (replace=True) to overwrite it"
        )


def _log_folder(out_dir: str | os.PathLike, name: str) -> Path:
    """A new folder for this run's server logs, ``<out>/<name>-logs/<UTC time>[-n]``: never one a kept table uses."""
    root = Path(out_dir) / f"{name}-logs"
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        folder = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"{root}: no free folder for this run's logs")


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
    kept: Kept | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Run ``scenarios`` (from :func:`plan`) one after another, each with its own server, after
    :func:`check_run` (a ValueError before anything starts).  The table goes to the partial file after each
    scenario (``kept`` says where, as it goes) and to ``out_dir/name-<device>.json`` at the end; a complete file
    with more scenarios, or a partial file, is replaced only with ``replace`` (a notebook run again replaces
    its own results).  Logs go to a new ``out_dir/name-logs/<UTC time>/<scenario>.log``.  With ``fake_server`` the
    FAKE server runs instead of vLLM and the device is ``cpu``.  A final write that fails raises
    :class:`flexfix.edition.results.ResultsError` saying where the finished scenarios are."""
    device = "cpu" if fake_server is not None else "cuda"
    check_run(
        scenarios,
        out_dir,
        name,
        device,
        models_dir=models_dir,
        startup_timeout=startup_timeout,
        request_timeout=request_timeout,
        replace=replace,
    )
    if fake_server is not None:
        launcher, server = (sys.executable, str(fake_server)), f"FAKE ({Path(fake_server).name})"
    else:
        launcher, server = VLLM_LAUNCHER, "vllm serve (python -m vllm.entrypoints.cli.main serve)"
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
    kept = kept if kept is not None else Kept()
    logs = _log_folder(out_dir, name)
    rows: list[dict] = []
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
        with children.deferred_signals():  # an interrupt now lands after the row is saved, not between
            rows.append(row)
            kept.path = results.write_results(out_dir, name, rows, device, params, partial=True, replace=True)
            kept.count = len(rows)
        emulated = " (emulated by the FAKE server: no vLLM ran)" if fake_server is not None else ""
        progress(f"{sc.name}: {row['status']} ({row['detail']}){emulated}, {row['seconds']} s; saved {kept.path}")
    try:
        path = results.write_results(out_dir, name, rows, device, params, replace=replace)
    except (results.ResultsError, OSError) as e:
        raise results.ResultsError(f"{e}; {kept.line()}") from None
    kept.path = path
    return pd.DataFrame(rows), path


# Reading and showing.


def recorded_run(data_dir: str | os.PathLike, name: str = "serve") -> tuple[pd.DataFrame, dict] | None:
    """The GPU serving run recorded in ``data_dir`` with its provenance (checked against
    :data:`flexfix.edition.schemas.SERVING`: what the views, the figure and the sentences read), or None (saying so)
    until it exists."""
    path = results.results_path(data_dir, name, "cuda")
    if not path.exists():
        print(
            f"The GPU serving run is not recorded yet: it will be {path} "
            f"(flexfix serve record --out build/results --name {name} on a GPU, then copied to data/)."
        )
        return None
    from flexfix.edition import schemas

    return schemas.recorded(data_dir, name, schemas.SERVING)


def request_settings(prov: dict) -> str:
    """One line under the recorded run's provenance (r0607 round 20, B2): what its clients asked of every request, as
    the recording saved it; where it kept none, says that notebook 06's description is this code's, not recorded."""
    params = (prov or {}).get("parameters") or {}
    kept = [f"{key} {params[key]}" for key in ("max_tokens", "temperature", "sampling") if params.get(key) is not None]
    if not kept:
        return "requests: this recording kept no request settings; those *The scenarios* describes are this code's"
    return "requests, as this recording saved them: " + "; ".join(kept)


def show_recorded(data_dir: str | os.PathLike, name: str = "serve", tail: int | None = None) -> pd.DataFrame | None:
    """Print the recorded GPU run's provenance, then show, in this order, each server's settings (model,
    environment, ``vllm serve`` arguments), what vLLM's dispatcher runs each of its concurrent batches with, and the
    scenario, stage and error tables, and, given ``tail``, the last ``tail`` lines of each server's log (or say it is
    not recorded yet). Notebook 06 prints the tails itself (:func:`flexfix.edition.tables.print_log_tails`), last in
    its cell, right above its note on them (round 22, D6)."""
    from IPython.display import display

    from flexfix.edition.narrative.guard_serving import capture_sizes
    from flexfix.edition.tables import error_summary, print_log_tails, provenance_line, scenario_table, stage_table
    from flexfix.edition.tables.serving import dispatch_table, server_settings

    loaded = recorded_run(data_dir, name)
    if loaded is None:
        return None
    table, prov = loaded
    print(provenance_line(prov))
    print(f"server: {prov['parameters'].get('server')}; its arguments per scenario are in the first table")
    print(request_settings(prov))
    display(server_settings(table, prov))
    print(
        "what vLLM's CudagraphDispatcher runs each batch with: asked now, of the installed vLLM, from the recorded "
        "arguments (the server recorded no dispatch)"
    )
    dispatch = dispatch_table(table, prov)
    display(dispatch)
    display(capture_sizes(dispatch))
    display(scenario_table(table))
    display(stage_table(table))
    display(error_summary(table))
    if tail is not None:
        print_log_tails(table, tail)
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
    r.add_argument(
        "--startup-timeout",
        type=float,
        default=480,
        help=f"seconds a server may take to be healthy (at most {MAX_STARTUP_TIMEOUT:g})",
    )
    r.add_argument(
        "--request-timeout",
        type=float,
        default=120,
        help=f"seconds a request may take (at most {MAX_REQUEST_TIMEOUT:g})",
    )
    r.add_argument("--models-dir", default=None, help="where model directories are written (default: temp folder)")
    r.add_argument("--fake", default=None, metavar="SCRIPT", help="run this FAKE server instead of vLLM (CPU tests)")
    r.add_argument(
        "--replace",
        action="store_true",
        help="replace a results file holding more scenarios than this run records (or a partial file left by an "
        "interrupted run); without it such a run is refused before it starts",
    )
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    from flexfix.edition.tables import scenario_table

    p = build_parser(prog)
    args = p.parse_args(argv)
    prog = f"{p.prog} record"
    try:
        requests = None if args.requests is None else params_mod.parse_ints("--requests", args.requests, maximum=1024)
        scenarios = plan(
            args.scenarios, model=args.model, requests=requests, max_tokens=args.max_tokens, fake_server=args.fake
        )
        device = "cpu" if args.fake else "cuda"
        check_run(
            scenarios,
            args.out,
            args.name,
            device,
            models_dir=args.models_dir,
            startup_timeout=args.startup_timeout,
            request_timeout=args.request_timeout,
            replace=args.replace,
            names=("--out", "--models-dir"),
        )
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    kept = Kept()
    try:
        with children.interruptible():  # SIGTERM and SIGHUP too raise an interrupt, so that the server is stopped
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
                replace=args.replace,
                kept=kept,
            )
    except KeyboardInterrupt as exc:
        name = children.signal_name(exc)
        print(f"{prog}: interrupted by {name}: the server was stopped; {kept.line()}", file=sys.stderr)
        return children.exit_status(exc)
    except (results.ResultsError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    print(scenario_table(table).to_string())
    print(f"wrote {path}")
    failed = [row.scenario for row in table.itertuples() if row.status == "startup_failed"]
    if failed:
        print(
            f"{prog}: the server did not start in {len(failed)} of {len(table)} scenarios ({', '.join(failed)}): "
            "nothing was measured there (see each scenario's detail and log)",
            file=sys.stderr,
        )
        return 1
    return 0
