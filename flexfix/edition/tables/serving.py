"""Views of a serving run (:func:`flexfix.integration.serving.record`): per scenario, per stage, per request."""

from __future__ import annotations

import pandas as pd

__all__ = [
    "scenario_table",
    "stage_table",
    "stage_counts",
    "failed_requests",
    "differences",
    "error_summary",
    "log_tail",
    "print_log_tails",
    "print_errors",
    "print_whole",
    "model_table",
    "is_fake",
    "server_settings",
    "dispatch_cases",
    "first_differences",
]

FAKE = "fake_vllm_server"  # a scenario whose command runs this script served no vLLM: it loads no plugin


def is_fake(row) -> bool:
    """Whether a serving row ran the FAKE server (its command runs :data:`FAKE`): what it shows is emulated."""
    return _is_fake(row)


def _is_fake(row) -> bool:
    return any(FAKE in str(part) for part in (row.get("command") or []))


def _requests_sent(row) -> str:
    """The batch sizes the scenario planned, each one whose stage could not run marked ``not sent``."""
    skipped = {s["requests"] for s in row["records"] if s.get("stage") == "together" and s.get("skipped")}
    sent = ", ".join(str(n) for n in row["requests"] if n not in skipped)
    gone = ", ".join(str(n) for n in row["requests"] if n in skipped)
    return f"{sent}; {gone} not sent (server gone)" if gone else sent


def _exited(value) -> str:
    """``server_exited_with`` in words: null means the server was still running when the stages ended (the manager
    then stopped it), not a missing value."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "still running at the end (stopped by the manager)"
    return f"exited by itself, status {int(value)}"


def scenario_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per scenario: its settings (the model first: the scenarios need not share one) and what happened
    (``outcome``); the recording's expectation columns are left out, its sentences say what each outcome means.
    ``requests`` marks a batch size that was never sent (its server had stopped); ``server`` says in words whether
    the server exited by itself (and with which status) or was still running; ``plugin_lines`` notes that the FAKE
    server loads no plugin, and its ``outcome`` and ``ima_in_log`` say ``emulated``: no vLLM ran, no GPU faulted."""
    cols = [
        "scenario",
        "model",
        "FLEXFIX_PATCH",
        "VLLM_BATCH_INVARIANT",
        "requests",
        "outcome",
        "ima_in_log",
        "plugin_lines",
        "server",
        "startup_seconds",
        "detail",
    ]
    table = table.rename(columns={"status": "outcome"}).copy()
    table["requests"] = [_requests_sent(r) for _, r in table.iterrows()]
    table["server"] = [_exited(v) for v in table["server_exited_with"]]
    if "command" in table:
        fake = [_is_fake(r) for _, r in table.iterrows()]
        table["outcome"] = [f"{o} (emulated)" if f else o for o, f in zip(table["outcome"], fake)]
        table["ima_in_log"] = [f"{v} (emulated)" if f and v else v for v, f in zip(table["ima_in_log"], fake)]
        table["plugin_lines"] = [
            f"{r['plugin_lines']} (the FAKE server loads no plugin)" if _is_fake(r) else r["plugin_lines"]
            for _, r in table.iterrows()
        ]
    return table[[c for c in cols if c in table]].set_index("scenario")


def model_table() -> pd.DataFrame:
    """The project's two Llama configs (:data:`flexfix.integration.engine.LLAMA_CONFIGS`) and the prompt lengths
    their requests draw from (:data:`flexfix.measure.engine_sweep.PROMPT_LENGTHS`, shortest and longest)."""
    from flexfix.integration.engine import LLAMA_CONFIGS
    from flexfix.measure.engine_sweep import PROMPT_LENGTHS

    names = {
        "num_hidden_layers": "layers",
        "hidden_size": "hidden size",
        "intermediate_size": "MLP size",
        "num_attention_heads": "query heads",
        "num_key_value_heads": "KV heads",
        "head_dim": "head_dim",
        "vocab_size": "vocabulary",
    }
    rows = []
    for model, config in LLAMA_CONFIGS.items():
        shortest, longest = PROMPT_LENGTHS[model]
        rows.append(
            {"model": model, **{label: config[key] for key, label in names.items()}}
            | {"shortest prompt (tokens)": shortest, "longest prompt (tokens)": longest}
        )
    return pd.DataFrame(rows).set_index("model")


def stage_counts(stage: dict) -> dict[str, int]:
    """What the requests of one recorded stage came to, each request counted once: ``not_run`` (the stage was
    skipped), or ``bitwise_equal``, ``same_tokens_other_logprobs``, ``tokens_differ`` (other tokens, and so other
    logprobs too) and ``errored``."""
    if stage.get("skipped"):
        return {"not_run": stage["requests"]}
    tokens = set(stage.get("tokens_differ") or [])
    return {
        "bitwise_equal": stage.get("bitwise_equal") or 0,
        "same_tokens_other_logprobs": len(set(stage.get("logprobs_differ") or []) - tokens),
        "tokens_differ": len(tokens),
        "errored": stage.get("errored") or 0,
    }


def same_tokens_diff(stage: dict) -> float | None:
    """The largest |logprob difference| over the stage's requests with the same tokens as alone (its ``differ``
    records with ``tokens_equal``): a request with other tokens compares the logprobs of other tokens, so
    ``max_abs_logprob_diff``, which includes it, does not say how far the logprobs of the same text moved."""
    if "logprobs_differ" not in stage or not stage.get("compared"):
        return None
    moved = [
        d["max_abs_logprob_diff"]
        for d in stage.get("differ") or []
        if d.get("tokens_equal") and d.get("max_abs_logprob_diff") is not None
    ]
    return max(moved) if moved else 0.0


def stage_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per scenario x stage: requests ok / errored, comparisons with the request alone.  Each compared
    request is counted in exactly one of ``bitwise_equal``, ``same_tokens_other_logprobs`` and ``tokens_differ`` (a
    request with other tokens has other logprobs too, and counts only there): the three add up to ``compared``, and
    are the counts of :func:`flexfix.edition.plots.serving_figure`'s bars (:func:`stage_counts`).
    ``max_abs_logprob_diff`` is over every compared request, ``max_logprob_diff_same_tokens`` over those with the
    same tokens only (:func:`same_tokens_diff`)."""
    rows = []
    for _, r in table.iterrows():
        for s in r["records"]:
            compared = "logprobs_differ" in s
            counts = stage_counts(s) if compared else {}
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
                    "same_tokens_other_logprobs": counts.get("same_tokens_other_logprobs"),
                    "tokens_differ": counts.get("tokens_differ"),
                    "max_abs_logprob_diff": s.get("max_abs_logprob_diff"),
                    "max_logprob_diff_same_tokens": same_tokens_diff(s),
                    "seconds": s.get("seconds"),
                    "skipped": s.get("skipped", ""),
                }
            )
    counts = ["ok", "errored", "compared", "bitwise_equal", "same_tokens_other_logprobs", "tokens_differ"]
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


def print_errors(table: pd.DataFrame) -> None:
    """Each error the clients got (:func:`error_summary`), whole: the cell of a table cuts it off."""
    for _, r in error_summary(table).iterrows():
        print(f"--- {r['scenario']}, {r['stage']} {r['requests']}: {r['count']} x HTTP {r['status_code']}:")
        print(r["error"])


def print_whole(table: pd.DataFrame, column: str, key: str) -> None:
    """Each row's ``column``, whole, under its ``key`` (a table cell cuts a long text off)."""
    for _, r in table.iterrows():
        print(f"--- {r[key]}: {r[column]}")


def log_tail(table: pd.DataFrame, scenario: str, n: int = 20) -> str:
    """The last ``n`` (at most 20: what was kept) lines of a scenario's server log."""
    row = table.set_index("scenario").loc[scenario]
    return "\n".join(list(row["log_tail"])[-n:])


def print_log_tails(table: pd.DataFrame, n: int = 8) -> None:
    """Each scenario's lines naming an illegal memory access and flexfix's plugin's lines (if any), then its log's
    last ``n`` lines."""
    for _, row in table.iterrows():
        for line in row.get("ima_lines") or []:
            print(f"--- {row['scenario']}: {line}")
        plugin = row.get("plugin_processes")
        for line in plugin if isinstance(plugin, list) else []:  # recordings before it kept only the count
            print(f"--- {row['scenario']}: {line}")
        print(f"--- {row['scenario']}: last {n} lines of the server's log ---")
        print(log_tail(table, row["scenario"], n))


def _vllm_args(prov: dict, scenario: str) -> list[str]:
    from flexfix.edition.checks import DataError

    args = ((prov.get("parameters") or {}).get("vllm_args") or {}).get(scenario)
    if not args:
        raise DataError(f"refusing to show the server settings of {scenario}: the recording kept no vLLM arguments")
    return [str(a) for a in args]


def _max_num_seqs(args: list[str]) -> int | None:
    return int(args[args.index("--max-num-seqs") + 1]) if "--max-num-seqs" in args else None


def server_settings(table: pd.DataFrame, prov: dict) -> pd.DataFrame:
    """One line per served scenario: its model, its environment (the flexfix and vLLM variables it set) and the
    ``vllm serve`` arguments the recording kept (``prov["parameters"]["vllm_args"]``), ``--max-num-seqs`` also in
    a column of its own."""
    rows = []
    for _, r in table.iterrows():
        args = _vllm_args(prov, r["scenario"])
        env = ((prov.get("parameters") or {}).get("environment") or {}).get(r["scenario"]) or {}
        rows.append(
            {
                "scenario": r["scenario"],
                "model": r.get("model"),
                "environment": " ".join(f"{k}={v}" for k, v in env.items()),
                "max_num_seqs": _max_num_seqs(args),
                "vllm serve arguments": " ".join(args),
            }
        )
    return pd.DataFrame(rows).set_index("scenario")


def dispatch_cases(table: pd.DataFrame, prov: dict) -> list[tuple[int, int]]:
    """``(max_num_seqs, batch)`` of each concurrent batch a recorded server was sent (its ``together`` stages
    that ran), each once: what :func:`flexfix.edition.glossary.decode_dispatch` asks vLLM about."""
    cases = []
    for _, r in table.iterrows():
        m = _max_num_seqs(_vllm_args(prov, r["scenario"]))
        for s in r["records"]:
            if s.get("stage") == "together" and not s.get("skipped") and m is not None:
                cases.append((m, int(s["requests"])))
    return list(dict.fromkeys(cases))


def first_differences(table: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The first ``n`` rows of :func:`differences`, after a line saying how many requests differ in all."""
    found = differences(table)
    print(f"{len(found)} answer(s) in a batch or streamed differ from the same request alone; the first {n}:")
    return found.head(n)
