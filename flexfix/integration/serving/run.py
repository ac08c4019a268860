"""One serving scenario against its own server: every request alone, then together, then one streamed.

1. ``alone``: each of the ``max(requests)`` requests by itself, one after another;
2. ``together``: for each N of ``requests``, the first N requests at once, each compared with itself alone by
   :func:`flexfix.measure.engine_sweep.compare_generations` (token ids, then the per-token logprobs bitwise);
3. ``stream``: request 0 again with ``stream=True``, compared with its non-streamed answer.

A server that dies (the stock engine's illegal memory access) ends the scenario; its log's last lines and whether
it names an illegal memory access are recorded.  One row per scenario, the stages nested in ``records``.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence

from flexfix.integration.serving.client import complete_alone, complete_streamed, complete_together
from flexfix.integration.serving.manager import VLLM_LAUNCHER, ServerError, VllmServer, group_members
from flexfix.integration.serving.scenarios import ServeScenario, requests_for, vllm_args
from flexfix.measure.engine_sweep import compare_generations
from flexfix.measure.outcomes import IMA_TEXT

__all__ = ["STATUSES", "IMA_WORDS", "PLUGIN_LINE", "log_findings", "run_scenario"]

STATUSES = ("ok", "differs", "errors", "server_died", "illegal_memory_access", "guard_refused", "startup_failed")
# CUDA's own words (not merely "illegal memory access": the replay guard's refusal says that a replay would risk one)
IMA_WORDS = IMA_TEXT
PLUGIN_LINE = "flexfix: patched vLLM's FlexAttention backend"
GUARD_WORDS = "flexfix replay guard"  # the guard's lines in a server's log (flexfix.guard)
GUARD_REFUSAL = "flexfix replay guard: refusing"


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
        # every answer as it came, so that two servers' answers to the same requests can be compared afterwards
        streams=[{"index": o["index"], "tokens": o["tokens"], "logprobs": o["logprobs"]} for o in outs if o["ok"]],
        compared=len(compared),
        bitwise_equal=sum(c["logprobs_bitwise_equal"] for _, c in compared),
        tokens_differ=[i for i, c in compared if not c["tokens_equal"]],
        logprobs_differ=[i for i, c in compared if not c["logprobs_bitwise_equal"]],
        max_abs_logprob_diff=max(diffs) if diffs else None,
        differ=[{"index": i, **c} for i, c in compared if not c["logprobs_bitwise_equal"]],
        distinct_tokens_request0=compared[0][1]["distinct_tokens"] if compared and compared[0][0] == 0 else None,
    )
    return rec


def _what(errored: int, compared: int, differ: int) -> str:
    """A scenario's requests in a plain sentence: how many failed, and how many of the compared answers differ
    from their reference (none compared: every request in a batch failed, or none was sent)."""
    failed = f"{errored} request{'' if errored == 1 else 's'} failed" if errored else "no request failed"
    if not compared:
        return f"{failed}; no answer could be compared"
    answers = f"compared answer{'' if compared == 1 else 's'}"
    return f"{failed}; {differ} of {compared} {answers} differ from their reference (alone, or not streamed)"


_OLD_DETAIL = re.compile(r"(\d+) requests errored, (\d+) of (\d+) comparisons differ")


def plain_detail(detail):
    """A recording's ``detail`` in the words :func:`_what` writes now: recordings made before it say ``48 requests
    errored, 0 of 0 comparisons differ``; the counts are kept, only the words change."""
    if not isinstance(detail, str):
        return detail
    return _OLD_DETAIL.sub(lambda m: _what(int(m[1]), int(m[3]), int(m[2])), detail)


def _status(row: dict, stages: list[dict]) -> tuple[str, str]:
    errored = sum(s.get("errored", 0) for s in stages)
    compared = sum(s.get("compared", 0) for s in stages)
    differ = sum(len(s.get("logprobs_differ", [])) for s in stages)
    died = row["server_exited_with"] is not None
    what = _what(errored, compared, differ)
    if row["ima_in_log"]:
        return "illegal_memory_access", f"{what}; the server's log names an illegal memory access"
    if row["guard_refused_in_log"]:
        return "guard_refused", f"{what}; the server's log has the replay guard's refusal"
    if died:
        return "server_died", f"{what}; the server exited with status {row['server_exited_with']}"
    if errored:
        return "errors", what
    if differ:
        return "differs", what
    return "ok", what


def log_findings(text: str) -> dict:
    """What a server's log says of the crash, the plugin's patch and the replay guard."""
    lines = text.splitlines()
    return {
        "ima_in_log": IMA_WORDS in text,
        "ima_lines": [ln.strip() for ln in lines if IMA_WORDS in ln][:5],
        "plugin_lines": text.count(PLUGIN_LINE),
        # the lines themselves: vLLM prefixes each with its process ("(APIServer pid=...)", "(EngineCore pid=...)")
        "plugin_processes": [ln.strip() for ln in lines if PLUGIN_LINE in ln][:8],
        "guard_refused_in_log": GUARD_REFUSAL in text,
        "guard_lines": [ln.strip() for ln in lines if GUARD_WORDS in ln][:8],
    }


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
        **log_findings(text),
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
