"""Does the fix hold in ``vllm serve``?  Concurrent OpenAI-client completions against a served Llama.

Each scenario (``SCENARIOS``) starts its own server (:class:`flexfix.integration.serving.VllmServer`:
``vllm serve`` with FLEX_ATTENTION, default CUDA graphs) with its ``FLEXFIX_PATCH`` and
``VLLM_BATCH_INVARIANT``, and with the real ``openai.AsyncOpenAI`` client:

1. ``alone``: each of the ``max(requests)`` requests by itself, one after another;
2. ``together``: for each N of ``requests``, the first N requests at once (``asyncio.gather``), each
   compared with itself alone by :func:`flexfix.measure.engine_sweep.compare_generations` (token ids, then
   the per-token logprobs bitwise);
3. ``stream``: request 0 again with ``stream=True``, collected chunk by chunk and compared with its
   non-streamed answer.

Requests are token-id prompts (:func:`flexfix.integration.engine.prompts`), seeded sampling at temperature 1,
``max_tokens`` with ``ignore_eos``, ``logprobs=1`` and ``return_tokens_as_token_ids`` so that tokens come
back as ids.  Every request's outcome is kept: its tokens and logprobs, or its error (HTTP status,
message).  A server that dies (the stock engine's illegal memory access) ends the scenario; its log's
last lines and whether it names an illegal memory access are recorded.

    flexfix serve record --out build/results --name serve \\
        --scenarios stock,patched_bi1,patched_bi0            # on a GPU: writes serve-cuda.json
    flexfix serve record --fake tests/fake_vllm_server.py --requests 20,32 ...   # CPU, FAKE server

One row per scenario, the stages nested in ``records`` (as :func:`flexfix.measure.record.outcome_row`);
:func:`scenario_table`, :func:`stage_table`, :func:`failed_requests` and :func:`differences` are the views.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from flexfix.edition import results
from flexfix.edition.params import positive_int
from flexfix.integration.engine import LLAMA_CONFIGS, prompts
from flexfix.integration.serving import VLLM_LAUNCHER, ServerError, VllmServer, group_members
from flexfix.measure.engine_sweep import PROMPT_LENGTHS, compare_generations

__all__ = [
    "SERVED_NAME",
    "STATUSES",
    "ServeScenario",
    "SCENARIOS",
    "Request",
    "vllm_args",
    "requests_for",
    "prepare_model",
    "complete_alone",
    "complete_together",
    "complete_streamed",
    "run_scenario",
    "plan",
    "record",
    "recorded_run",
    "show_recorded",
    "scenario_table",
    "stage_table",
    "failed_requests",
    "differences",
    "error_summary",
    "log_tail",
    "print_log_tails",
    "serving_figure",
    "notebook_plan",
    "tokenizer_check",
    "manager_demo",
]

SERVED_NAME = "flexfix-llama"
STATUSES = ("ok", "differs", "errors", "server_died", "illegal_memory_access", "startup_failed")
IMA_WORDS = "illegal memory access"
PLUGIN_LINE = "flexfix: patched vLLM's FlexAttention backend"
GPU_MEMORY_UTILIZATION = 0.3
MAX_NUM_SEQS = 128
SEED_BASE = 2000  # request i samples with seed SEED_BASE + i
PROMPT_SEED = 2


@dataclass(frozen=True)
class ServeScenario:
    name: str
    patch: bool  # FLEXFIX_PATCH
    batch_invariant: bool  # VLLM_BATCH_INVARIANT
    requests: tuple[int, ...]  # concurrent batch sizes, each compared with every request alone
    model: str
    expect: tuple[str, ...]
    what: str

    def __post_init__(self) -> None:
        if self.model not in LLAMA_CONFIGS:
            raise ValueError(f"model must be one of {sorted(LLAMA_CONFIGS)}, got {self.model!r}")
        if not self.requests:
            raise ValueError("requests must not be empty")
        for n in self.requests:
            positive_int("requests", n, maximum=1024)

    def env(self) -> dict[str, str]:
        return {
            "FLEXFIX_PATCH": "1" if self.patch else "0",
            "VLLM_BATCH_INVARIANT": "1" if self.batch_invariant else "0",
        }


SCENARIOS = {
    s.name: s
    for s in (
        ServeScenario(
            "stock",
            False,
            False,
            (48,),
            "tiny",
            ("illegal_memory_access",),
            "stock vLLM 0.20.0: FLEXFIX_PATCH=0, VLLM_BATCH_INVARIANT=0",
        ),
        ServeScenario(
            "patched_bi1",
            True,
            True,
            (48, 128),
            "variance",
            ("ok",),
            "the fix through the plugin: FLEXFIX_PATCH=1, VLLM_BATCH_INVARIANT=1",
        ),
        ServeScenario(
            "patched_bi0",
            True,
            False,
            (48, 128),
            "variance",
            ("ok", "differs"),
            "the fix through the plugin: FLEXFIX_PATCH=1, VLLM_BATCH_INVARIANT=0",
        ),
    )
}


def vllm_args(model: str, max_concurrent: int) -> list[str]:
    """``vllm serve`` options of a scenario (besides model, backend, host, port): default CUDA graphs."""
    return [
        "--served-model-name",
        SERVED_NAME,
        "--max-num-seqs",
        str(max(MAX_NUM_SEQS, max_concurrent)),
        "--max-model-len",
        str(LLAMA_CONFIGS[model]["max_position_embeddings"]),
        "--gpu-memory-utilization",
        str(GPU_MEMORY_UTILIZATION),
        "--dtype",
        "bfloat16",
        "--seed",
        "0",
        # a request's prompt must be computed in its batch, not read back from the cache its alone run filled
        "--no-enable-prefix-caching",
    ]


@dataclass(frozen=True)
class Request:
    index: int
    prompt: list[int]
    seed: int


def requests_for(model: str, n: int) -> list[Request]:
    """The ``n`` requests of a scenario: seeded token-id prompts of the model's lengths, seed 2000+i."""
    vocab = LLAMA_CONFIGS[model]["vocab_size"]
    batch = prompts(n, vocab, seed=PROMPT_SEED, lengths=PROMPT_LENGTHS[model])
    return [Request(i, p, SEED_BASE + i) for i, p in enumerate(batch)]


def prepare_model(model: str, models_dir: str | os.PathLike | None = None) -> Path:
    """The Llama checkpoint of ``model`` (``engine.write_llama``) with a local tokenizer, written once."""
    from flexfix.integration.engine import write_llama
    from flexfix.integration.local_tokenizer import write_tokenizer

    root = Path(models_dir) if models_dir is not None else Path(tempfile.gettempdir()) / "flexfix-models"
    path = root / f"serve-{model}"
    if not (path / "config.json").exists():  # (write_llama would import transformers to find that out)
        write_llama(path, model)
    return write_tokenizer(path)


# The client.


def _token_id(token: str) -> int:
    return int(token.split(":", 1)[1]) if token.startswith("token_id:") else int(token)


def _failure(req: Request, exc: BaseException, start: float) -> dict:
    import openai

    status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return {
        "index": req.index,
        "ok": False,
        "status_code": status,
        "error": f"{type(exc).__name__}: {message}"[:300],
        "tokens": [],
        "logprobs": [],
        "finish_reason": None,
        "seconds": round(time.monotonic() - start, 3),
    }


async def _complete(client, req: Request, max_tokens: int, temperature: float, stream: bool = False) -> dict:
    import openai

    start = time.monotonic()
    body = dict(
        model=SERVED_NAME,
        prompt=req.prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=req.seed,
        logprobs=1,
        extra_body={"return_tokens_as_token_ids": True, "ignore_eos": True},
    )
    tokens, logprobs, finish, chunks = [], [], None, 0
    try:
        if stream:
            async with await client.completions.create(**body, stream=True) as events:
                async for chunk in events:
                    chunks += 1
                    for choice in chunk.choices:
                        if choice.logprobs is not None:
                            tokens += [_token_id(t) for t in choice.logprobs.tokens]
                            logprobs += list(choice.logprobs.token_logprobs)
                        finish = choice.finish_reason or finish
        else:
            choice = (await client.completions.create(**body)).choices[0]
            tokens = [_token_id(t) for t in choice.logprobs.tokens]
            logprobs = list(choice.logprobs.token_logprobs)
            finish = choice.finish_reason
    except openai.APIError as exc:  # HTTP errors, refused connections, timeouts: what the client saw
        return _failure(req, exc, start)
    out = {
        "index": req.index,
        "ok": True,
        "status_code": 200,
        "error": None,
        "tokens": tokens,
        "logprobs": logprobs,
        "finish_reason": finish,
        "seconds": round(time.monotonic() - start, 3),
    }
    if stream:
        out["chunks"] = chunks
    return out


def _client(base_url: str, timeout: float):
    import openai

    # max_retries=0: a request that failed is recorded as it failed, never retried behind our back.
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", max_retries=0, timeout=timeout)


async def _alone(base_url, reqs, max_tokens, temperature, timeout):
    async with _client(base_url, timeout) as client:
        return [await _complete(client, r, max_tokens, temperature) for r in reqs]


async def _together(base_url, reqs, max_tokens, temperature, timeout):
    async with _client(base_url, timeout) as client:
        return list(await asyncio.gather(*(_complete(client, r, max_tokens, temperature) for r in reqs)))


async def _streamed(base_url, req, max_tokens, temperature, timeout):
    async with _client(base_url, timeout) as client:
        return await _complete(client, req, max_tokens, temperature, stream=True)


def _run(coro):
    """Run a coroutine to the end, also from a notebook whose event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def complete_alone(
    base_url: str, reqs: Sequence[Request], *, max_tokens: int = 32, temperature: float = 1.0, timeout: float = 120
) -> list[dict]:
    """Each request by itself, one after another (the engine holds one request at a time)."""
    return _run(_alone(base_url, list(reqs), max_tokens, temperature, timeout))


def complete_together(
    base_url: str, reqs: Sequence[Request], *, max_tokens: int = 32, temperature: float = 1.0, timeout: float = 120
) -> list[dict]:
    """All requests at once; one outcome per request, in request order."""
    return _run(_together(base_url, list(reqs), max_tokens, temperature, timeout))


def complete_streamed(
    base_url: str, req: Request, *, max_tokens: int = 32, temperature: float = 1.0, timeout: float = 120
) -> dict:
    """One request with ``stream=True``, its chunks' tokens and logprobs concatenated."""
    return _run(_streamed(base_url, req, max_tokens, temperature, timeout))


# One scenario.


def _error_counts(outs: Sequence[dict]) -> dict[str, int]:
    return dict(
        Counter(
            f"HTTP {o['status_code']}" if o["status_code"] else o["error"].split(":")[0] for o in outs if not o["ok"]
        )
    )


def _stage(stage: str, outs: Sequence[dict], alone: Sequence[dict] | None, seconds: float) -> dict:
    rec = {
        "stage": stage,
        "requests": len(outs),
        "ok": sum(o["ok"] for o in outs),
        "errored": sum(not o["ok"] for o in outs),
        "errors": _error_counts(outs),
        "failed": [{k: o[k] for k in ("index", "status_code", "error")} for o in outs if not o["ok"]],
        "seconds": round(seconds, 2),
    }
    if alone is None:
        rec["finish_reasons"] = dict(Counter(str(o["finish_reason"]) for o in outs if o["ok"]))
        return rec
    pairs = [(a, o) for a, o in zip(alone, outs) if a["ok"] and o["ok"]]
    compared = [
        (o["index"], compare_generations(a["tokens"], a["logprobs"], o["tokens"], o["logprobs"])) for a, o in pairs
    ]
    diffs = [c["max_abs_logprob_diff"] for _, c in compared if c["max_abs_logprob_diff"] is not None]
    rec.update(
        compared=len(compared),
        bitwise_equal=sum(c["logprobs_bitwise_equal"] for _, c in compared),
        tokens_differ=[i for i, c in compared if not c["tokens_equal"]],
        logprobs_differ=[i for i, c in compared if not c["logprobs_bitwise_equal"]],
        max_abs_logprob_diff=max(diffs) if diffs else None,
        differ=[{"index": i, **c} for i, c in compared if not c["logprobs_bitwise_equal"]],
        distinct_tokens_request0=compared[0][1]["distinct_tokens"] if compared and compared[0][0] == 0 else None,
    )
    return rec


def _status(row: dict, stages: list[dict]) -> tuple[str, str]:
    errored = sum(s.get("errored", 0) for s in stages)
    compared = sum(s.get("compared", 0) for s in stages)
    differ = sum(len(s.get("logprobs_differ", [])) for s in stages)
    died = row["server_exited_with"] is not None
    what = f"{errored} requests errored, {differ} of {compared} comparisons differ"
    if row["ima_in_log"]:
        return "illegal_memory_access", f"{what}; the server's log names an illegal memory access"
    if died:
        return "server_died", f"{what}; the server exited with status {row['server_exited_with']}"
    if errored:
        return "errors", what
    if differ:
        return "differs", what
    return "ok", what


def run_scenario(
    sc: ServeScenario,
    model_dir: str | os.PathLike,
    log_path: str | os.PathLike,
    *,
    launcher: Sequence[str] = VLLM_LAUNCHER,
    max_tokens: int = 32,
    temperature: float = 1.0,
    startup_timeout: float = 480,
    request_timeout: float = 120,
    grace: float = 10,
    progress: Callable[[str], None] = print,
) -> dict:
    """One scenario against its own server, started and stopped here; one row (stages in ``records``)."""
    reqs = requests_for(sc.model, max(sc.requests))
    kw = dict(max_tokens=max_tokens, temperature=temperature, timeout=request_timeout)
    server = VllmServer(
        model_dir,
        args=vllm_args(sc.model, max(sc.requests)),
        env=sc.env(),
        log_path=log_path,
        startup_timeout=startup_timeout,
        grace=grace,
        launcher=launcher,
    )
    row = {
        "scenario": sc.name,
        "what": sc.what,
        "model": sc.model,
        **sc.env(),
        "requests": list(sc.requests),
        "expected": list(sc.expect),
        "command": server.command(),
        "log_file": str(log_path),
    }
    stages: list[dict] = []
    start = time.monotonic()
    exited = None
    try:
        with server:
            progress(f"{sc.name}: server healthy after {server.startup_seconds} s at {server.base_url}")
            t = time.monotonic()
            alone = complete_alone(server.base_url, reqs, **kw)
            stages.append(_stage("alone", alone, None, time.monotonic() - t))
            for n in sc.requests:
                if not server.alive():
                    stages.append({"stage": "together", "requests": n, "skipped": "the server is no longer running"})
                    continue
                t = time.monotonic()
                together = complete_together(server.base_url, reqs[:n], **kw)
                rec = _stage("together", together, alone[:n], time.monotonic() - t)
                if rec["errored"] and not server.healthy():
                    server.wait(15)  # a dying server takes a moment to exit
                rec["server_alive_after"] = server.alive()
                stages.append(rec)
                progress(f"{sc.name}: {n} together: {rec['ok']} ok, errors {rec['errors']}")
            if server.alive():
                t = time.monotonic()
                streamed = complete_streamed(server.base_url, reqs[0], **kw)
                rec = _stage("stream", [streamed], alone[:1], time.monotonic() - t)
                rec["chunks"] = streamed.get("chunks")
                stages.append(rec)
            else:
                stages.append({"stage": "stream", "requests": 1, "skipped": "the server is no longer running"})
            exited = server.returncode
        row["startup_seconds"] = server.startup_seconds
        failed_start = None
    except ServerError as exc:
        failed_start = str(exc)
        exited = server.returncode
    text = server.log_text()
    row.update(
        server_exited_with=exited,
        ima_in_log=IMA_WORDS in text,
        ima_lines=[ln.strip() for ln in text.splitlines() if IMA_WORDS in ln][:5],
        plugin_lines=text.count(PLUGIN_LINE),
        log_tail=server.log_tail(20),
        group_left_after_stop=len(group_members(server.pid)) if server.pid else 0,
        seconds=round(time.monotonic() - start, 1),
        records=stages,
    )
    if failed_start is not None:
        row.update(status="startup_failed", detail=failed_start.splitlines()[0], startup_seconds=None)
    else:
        row["status"], row["detail"] = _status(row, stages)
    if sc.patch and not row["plugin_lines"] and tuple(launcher) == tuple(VLLM_LAUNCHER):
        row["detail"] += "; no process logged flexfix's patch: was the plugin loaded?"
    row["as_expected"] = row["status"] in sc.expect
    return row


# A run of several scenarios: checked first, then recorded one after another.


def plan(
    scenarios: str | Sequence[str],
    *,
    model: str | None = None,
    requests: Sequence[int] | None = None,
    max_tokens: int = 32,
    fake_server: str | os.PathLike | None = None,
) -> list[ServeScenario]:
    """The scenarios to run, with ``model`` / ``requests`` overriding each one's own; ValueError naming
    any bad value (unknown scenario or model, counts <= 0), before anything starts.

    Without ``fake_server`` this needs a GPU, and for the patched scenarios flexfix's vLLM plugin
    (the ``vllm.general_plugins`` entry point, installed with flexfix) -- checked here too."""
    names = [s.strip() for s in (scenarios.split(",") if isinstance(scenarios, str) else scenarios)]
    if not names or not all(names):
        raise ValueError(f"scenarios must be a non-empty list of names, got {scenarios!r}")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {unknown[0]!r}; expected some of {sorted(SCENARIOS)}")
    if model is not None and model not in LLAMA_CONFIGS:
        raise ValueError(f"model must be one of {sorted(LLAMA_CONFIGS)}, got {model!r}")
    if requests is not None:
        requests = tuple(requests)
        if not requests:
            raise ValueError("requests must not be empty")
        for n in requests:
            positive_int("requests", n, maximum=1024)
    positive_int("max_tokens", max_tokens, maximum=512)
    chosen = [
        dataclasses.replace(SCENARIOS[n], model=model or SCENARIOS[n].model, requests=requests or SCENARIOS[n].requests)
        for n in names
    ]
    if fake_server is not None:
        if not Path(fake_server).is_file():
            raise ValueError(f"fake server script {str(fake_server)!r} does not exist")
        return chosen
    from flexfix.edition.params import cuda_available

    if not cuda_available():
        raise ValueError(
            "no GPU here: vllm serve needs CUDA; pass fake_server (--fake tests/fake_vllm_server.py) "
            "to run the same code against the FAKE server"
        )
    if any(sc.patch for sc in chosen):
        from importlib.metadata import entry_points

        if not any(e.name == "flexfix" for e in entry_points(group="vllm.general_plugins")):
            raise ValueError(
                "FLEXFIX_PATCH=1 needs flexfix's vllm.general_plugins entry point, which is not installed "
                "in this Python: `pip install --no-deps -e .` from the repository (vLLM would run unpatched)"
            )
    return chosen


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

    from flexfix.edition.tables import provenance_line

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


def scenario_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per scenario: its settings, what was expected, what happened."""
    cols = [
        "scenario",
        "model",
        "FLEXFIX_PATCH",
        "VLLM_BATCH_INVARIANT",
        "requests",
        "expected",
        "status",
        "as_expected",
        "ima_in_log",
        "plugin_lines",
        "server_exited_with",
        "startup_seconds",
        "detail",
    ]
    return table[[c for c in cols if c in table]].set_index("scenario")


def stage_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per scenario x stage: requests ok / errored, comparisons with the request alone."""
    rows = []
    for _, r in table.iterrows():
        for s in r["records"]:
            rows.append(
                {
                    "scenario": r["scenario"],
                    "stage": s["stage"],
                    "requests": s["requests"],
                    "ok": s.get("ok"),
                    "errored": s.get("errored"),
                    "errors": ", ".join(f"{n} x {k}" for k, n in (s.get("errors") or {}).items()),
                    "compared": s.get("compared"),
                    "bitwise_equal": s.get("bitwise_equal"),
                    "tokens_differ": len(s["tokens_differ"]) if "tokens_differ" in s else None,
                    "logprobs_differ": len(s["logprobs_differ"]) if "logprobs_differ" in s else None,
                    "max_abs_logprob_diff": s.get("max_abs_logprob_diff"),
                    "seconds": s.get("seconds"),
                    "skipped": s.get("skipped", ""),
                }
            )
    counts = ["ok", "errored", "compared", "bitwise_equal", "tokens_differ", "logprobs_differ"]
    return pd.DataFrame(rows).astype({c: "Int64" for c in counts})


def failed_requests(table: pd.DataFrame) -> pd.DataFrame:
    """Every request that got an error: which stage, which request, what the client saw."""
    rows = [
        {"scenario": r["scenario"], "stage": s["stage"], "requests": s["requests"], **f}
        for _, r in table.iterrows()
        for s in r["records"]
        for f in s.get("failed", [])
    ]
    return pd.DataFrame(rows, columns=["scenario", "stage", "requests", "index", "status_code", "error"])


def differences(table: pd.DataFrame) -> pd.DataFrame:
    """Every request whose answer in a batch (or streamed) differs from its answer alone."""
    rows = [
        {"scenario": r["scenario"], "stage": s["stage"], "requests": s["requests"], **d}
        for _, r in table.iterrows()
        for s in r["records"]
        for d in s.get("differ", [])
    ]
    cols = ["scenario", "stage", "requests", "index", "tokens_equal", "logprobs_bitwise_equal"]
    cols += ["max_abs_logprob_diff", "first_token_mismatch"]
    return pd.DataFrame(rows, columns=cols)


def error_summary(table: pd.DataFrame) -> pd.DataFrame:
    """How many requests of each scenario and stage failed, with which error."""
    failed = failed_requests(table)
    return (
        failed.groupby(["scenario", "stage", "requests", "status_code", "error"], dropna=False)
        .size()
        .rename("count")
        .reset_index()
    )


def log_tail(table: pd.DataFrame, scenario: str, n: int = 20) -> str:
    """The last ``n`` (at most 20: what was kept) lines of a scenario's server log."""
    row = table.set_index("scenario").loc[scenario]
    return "\n".join(list(row["log_tail"])[-n:])


def print_log_tails(table: pd.DataFrame, n: int = 8) -> None:
    """Each scenario's lines naming an illegal memory access (if any), then its log's last ``n`` lines."""
    for _, row in table.iterrows():
        for line in row.get("ima_lines") or []:
            print(f"--- {row['scenario']}: {line}")
        print(f"--- {row['scenario']}: last {n} lines of the server's log ---")
        print(log_tail(table, row["scenario"], n))


def serving_figure(table: pd.DataFrame, where: str = ""):
    """Per scenario and stage, the requests that were bitwise equal to themselves alone, had the same
    tokens but other logprobs, other tokens, or an error (a stacked bar each); ``where`` names the run
    (this run, the FAKE server, a recorded GPU run) in the title."""
    from flexfix.edition.plots import OUTCOME_COLOURS, _figure

    kinds = {
        "bitwise equal to alone": OUTCOME_COLOURS["ok"],
        "same tokens, logprobs differ": OUTCOME_COLOURS["wrong_result"],
        "tokens differ": OUTCOME_COLOURS["index_error"],
        "error": OUTCOME_COLOURS["illegal_memory_access"],
        "not run (server gone)": OUTCOME_COLOURS["refused"],
    }
    bars = []
    for _, r in table.iterrows():
        for s in r["records"]:
            if s["stage"] == "alone":
                continue
            label = f"{r['scenario']}: {s['stage']} {s['requests']}"
            if s.get("skipped"):
                bars.append((label, {"not run (server gone)": s["requests"]}))
                continue
            tokens = len(s["tokens_differ"])
            bars.append(
                (
                    label,
                    {
                        "bitwise equal to alone": s["bitwise_equal"],
                        "same tokens, logprobs differ": len(s["logprobs_differ"]) - tokens,
                        "tokens differ": tokens,
                        "error": s["errored"],
                    },
                )
            )
    fig, ax = _figure((8, 0.45 * len(bars) + 1.2))
    for y, (_, counts) in enumerate(bars):
        left = 0
        for kind, colour in kinds.items():
            n = counts.get(kind, 0)
            if n:
                ax.barh(y, n, left=left, color=colour, label=kind)
                left += n
    ax.set_yticks(range(len(bars)), [b[0] for b in bars])
    ax.invert_yaxis()
    ax.set_xlabel("requests")
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
    shown = [k for k in kinds if k in handles]
    ax.legend([handles[k] for k in shown], shown, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("each request in a batch vs the same request alone" + (f" ({where})" if where else ""))
    return fig


# Notebook helpers: what runs where, the tokenizer, the manager on CPU.


def notebook_plan(
    device: str,
    run_server: bool,
    scenarios: Sequence[str],
    requests: Sequence[int] | None,
    fake_requests: Sequence[int],
    model: str | None,
    max_tokens: int,
    fake_server: str | os.PathLike,
) -> dict:
    """The :func:`record` arguments of notebook 06: the real ``vllm serve`` on a GPU with ``run_server``,
    otherwise the FAKE server with the tiny config and ``fake_requests``; says which."""
    real = device == "cuda" and run_server
    if real:
        chosen = plan(scenarios, model=model, requests=requests, max_tokens=max_tokens)
        print("server: vllm serve with FLEX_ATTENTION, one per scenario (a few minutes each)")
    else:
        chosen = plan(scenarios, model="tiny", requests=fake_requests, max_tokens=max_tokens, fake_server=fake_server)
        why = "no GPU here" if device != "cuda" else "RUN_SERVER is False"
        print(
            f"server: the FAKE server {fake_server} ({why}): no model, no GPU; it answers deterministic tokens and "
            "emulates the crash (FLEXFIX_PATCH=0) and batch variance (VLLM_BATCH_INVARIANT=0) beyond 16 requests "
            "in flight. The recorded GPU run is shown at the end."
        )
    for sc in chosen:
        print(f"  {sc.name}: {sc.what}; model {sc.model}; concurrent {list(sc.requests)}")
    return {"scenarios": chosen, "fake_server": None if real else fake_server, "max_tokens": max_tokens}


def tokenizer_check(model_dir: str | os.PathLike, texts: Sequence[str] = ("Hello, world!", "def f(x): return 2 * x")):
    """Load the model directory's tokenizer as vLLM does (``AutoTokenizer``, local files only): size,
    special ids, and a round trip per text."""
    import json

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    rows = []
    for text in texts:
        ids = tok(text)["input_ids"]
        rows.append(
            {
                "text": text,
                "ids": ids,
                "decoded": tok.decode(ids, skip_special_tokens=True),
                "round_trip": tok.decode(ids, skip_special_tokens=True) == text,
                "ids_below_vocab": max(ids) < config["vocab_size"],
            }
        )
    summary = {
        "len(tokenizer)": len(tok),
        "config vocab_size": config["vocab_size"],
        "bos": (tok.bos_token, tok.bos_token_id, config.get("bos_token_id")),
        "eos": (tok.eos_token, tok.eos_token_id, config.get("eos_token_id")),
    }
    return summary, pd.DataFrame(rows)


def manager_demo(
    model_dir: str | os.PathLike, fake_server: str | os.PathLike, log_dir: str | os.PathLike
) -> pd.DataFrame:
    """The manager's cases against the FAKE server: healthy (one completion, then stopped), exits at
    start, never healthy, ignores SIGTERM; what each did and whether any process of its group was left."""
    cases = [
        ("healthy", [], 10),
        ("exit_at_start", ["--mode", "exit_at_start"], 10),
        ("never_healthy", ["--mode", "never_healthy"], 2),
        ("ignore_sigterm", ["--mode", "ignore_sigterm"], 10),
    ]
    rows = []
    for case, extra, timeout in cases:
        server = VllmServer(
            model_dir,
            log_path=Path(log_dir) / f"manager-{case}.log",
            startup_timeout=timeout,
            grace=1.0,
            launcher=(sys.executable, str(fake_server), *extra),
            env={"FLEXFIX_PATCH": "1", "VLLM_BATCH_INVARIANT": "1"},
        )
        start, what = time.monotonic(), ""
        try:
            with server:
                out = complete_alone(server.base_url, requests_for("tiny", 1), max_tokens=4)[0]
                what = f"healthy; a completion: ok={out['ok']}, tokens {out['tokens']}"
        except ServerError as exc:
            what = f"ServerError: {str(exc).splitlines()[0].split(' (')[0]}; log: {server.log_tail(1)[-1:]}"
        rows.append(
            {
                "case": case,
                "what happened": what,
                "exit status": server.returncode,
                "seconds": round(time.monotonic() - start, 1),
                "processes left": len(group_members(server.pid)),
            }
        )
    return pd.DataFrame(rows)


# Command line.


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexfix.integration.serving", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="run the serving scenarios and write NAME-<device>.json")
    r.add_argument("--out", default="build/results")
    r.add_argument("--name", default="serve")
    r.add_argument("--scenarios", default="stock,patched_bi1,patched_bi0", help=f"some of {','.join(SCENARIOS)}")
    r.add_argument("--model", default=None, help="Llama config for every scenario (default: each scenario's own)")
    r.add_argument("--requests", default=None, help="concurrent batch sizes for every scenario, e.g. 48,128")
    r.add_argument("--max-tokens", type=int, default=32)
    r.add_argument("--startup-timeout", type=float, default=480)
    r.add_argument("--request-timeout", type=float, default=120)
    r.add_argument("--models-dir", default=None, help="where model directories are written (default: temp folder)")
    r.add_argument("--fake", default=None, metavar="SCRIPT", help="run this FAKE server instead of vLLM (CPU tests)")
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
        print(f"flexfix serve record: error: {exc}", file=sys.stderr)
        return 2
    from flexfix.measure.children import exit_status, interruptible, signal_name

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


if __name__ == "__main__":
    sys.exit(main())
