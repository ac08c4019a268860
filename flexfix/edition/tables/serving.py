"""Views of a serving run (:func:`flexfix.integration.serving.record`): per scenario, per stage, per request."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from flexfix.edition.checks import DataError

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
    "model_table",
    "is_fake",
    "server_settings",
    "dispatch_cases",
    "first_differences",
    "FAKE_MODEL",
    "model_label",
    "dispatch_table",
    "servers_agree",
    "print_guard_lines",
    "served",
]

FAKE = "fake_vllm_server"  # a scenario whose command runs this script served no vLLM: it loads no plugin
FAKE_MODEL = "none (FAKE)"  # the model a FAKE row names: the FAKE server loads none (its prompts are drawn as for tiny)
SERVED_BY = "served by"  # the column that marks each row of a view as the FAKE server's (emulated) or vLLM's


def is_fake(row) -> bool:
    """Whether a serving row ran the FAKE server (its command runs :data:`FAKE`): what it shows is emulated."""
    return _is_fake(row)


def _is_fake(row) -> bool:
    return any(FAKE in str(part) for part in (row.get("command") or []))


def model_label(row) -> str | None:
    """The model a serving row names in tables, sentences and bar labels: :data:`FAKE_MODEL` for a row the FAKE
    server played (it runs no model, whatever config its requests were drawn for), else the recorded model."""
    if _is_fake(row):
        return FAKE_MODEL
    model = row.get("model")
    return model if isinstance(model, str) else None


def _served_by(row) -> str:
    return "FAKE server (emulated)" if _is_fake(row) else "vllm serve"


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
    if "detail" in table:
        from flexfix.integration.serving.run import plain_detail

        table["detail"] = [plain_detail(d) for d in table["detail"]]
    if "model" in table:
        table["model"] = [model_label(r) for _, r in table.iterrows()]
    if "command" in table:
        fake = [_is_fake(r) for _, r in table.iterrows()]
        table["outcome"] = [f"{o} (emulated)" if f else o for o, f in zip(table["outcome"], fake)]
        for column in [c for c in ("ima_in_log", "server", "detail") if c in table]:  # the FAKE server: emulated
            table[column] = [f"{v} (emulated)" if f else v for v, f in zip(table[column], fake)]
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
                    SERVED_BY: _served_by(r),
                }
            )
    counts = ["ok", "errored", "compared", "bitwise_equal", "same_tokens_other_logprobs", "tokens_differ"]
    return pd.DataFrame(rows).astype({c: "Int64" for c in counts})


def failed_requests(table: pd.DataFrame) -> pd.DataFrame:
    """Every request that got an error: which stage, which request, what the client saw."""
    rows = [
        {"scenario": r["scenario"], "stage": s["stage"], "requests": s["requests"], **f, SERVED_BY: _served_by(r)}
        for _, r in table.iterrows()
        for s in r["records"]
        for f in s.get("failed", [])
    ]
    return pd.DataFrame(rows, columns=["scenario", "stage", "requests", "index", "status_code", "error", SERVED_BY])


def differences(table: pd.DataFrame) -> pd.DataFrame:
    """Every request whose answer in a batch (or streamed) differs from its answer alone; ``first_token_mismatch``
    (the first position whose token differs) is empty where every token is the same; ``served by`` marks the FAKE
    server's rows as emulated."""
    rows = [
        {"scenario": r["scenario"], "stage": s["stage"], "requests": s["requests"], **d, SERVED_BY: _served_by(r)}
        for _, r in table.iterrows()
        for s in r["records"]
        for d in s.get("differ", [])
    ]
    cols = ["scenario", "stage", "requests", "index", "tokens_equal", "logprobs_bitwise_equal"]
    cols += ["max_abs_logprob_diff", "first_token_mismatch", SERVED_BY]
    return pd.DataFrame(rows, columns=cols).astype({"first_token_mismatch": "Int64"})


def error_summary(table: pd.DataFrame) -> pd.DataFrame:
    """How many requests of each scenario and stage failed, with which error."""
    keys = ["scenario", "stage", "requests", "status_code", "error", SERVED_BY]
    return failed_requests(table).groupby(keys, dropna=False).size().rename("count").reset_index()


def print_errors(table: pd.DataFrame) -> None:
    """Each error the clients got (:func:`error_summary`), whole: the cell of a table cuts it off; the FAKE server's
    are marked emulated (it writes vLLM's words, no vLLM ran)."""
    for _, r in error_summary(table).iterrows():
        fake = " (emulated by the FAKE server: no vLLM ran)" if r[SERVED_BY].startswith("FAKE") else ""
        print(f"--- {r['scenario']}, {r['stage']} {r['requests']}: {r['count']} x HTTP {r['status_code']}{fake}:")
        print(r["error"])


def log_tail(table: pd.DataFrame, scenario: str, n: int = 20) -> str:
    """The last ``n`` (at most 20: what was kept) lines of a scenario's server log."""
    row = table.set_index("scenario").loc[scenario]
    return "\n".join(list(row["log_tail"])[-n:])


def print_log_tails(table: pd.DataFrame, n: int = 8) -> None:
    """Each scenario's lines naming an illegal memory access (each distinct line once) and flexfix's plugin's lines
    (if any), then its log's last ``n`` lines; a FAKE server's log is marked so."""
    for _, row in table.iterrows():
        for line in dict.fromkeys(row.get("ima_lines") or []):
            print(f"--- {row['scenario']}: {line}")
        plugin = row.get("plugin_processes")
        for line in plugin if isinstance(plugin, list) else []:  # recordings before it kept only the count
            print(f"--- {row['scenario']}: {line}")
        fake = " (the FAKE server's log: emulated)" if _is_fake(row) else ""
        print(f"--- {row['scenario']}: last {n} lines of the server's log{fake} ---")
        print(log_tail(table, row["scenario"], n))


def _vllm_args(prov: dict, scenario: str) -> list[str]:
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


def _dispatch(table: pd.DataFrame, prov: dict) -> list[tuple[str, int, int]]:
    """``(scenario, max_num_seqs, batch)`` of each concurrent batch a recorded server was sent (its ``together``
    stages that ran)."""
    cases = []
    for _, r in table.iterrows():
        m = _max_num_seqs(_vllm_args(prov, r["scenario"]))
        for s in r["records"]:
            if s.get("stage") == "together" and not s.get("skipped") and m is not None:
                cases.append((r["scenario"], m, int(s["requests"])))
    return list(dict.fromkeys(cases))


def dispatch_cases(table: pd.DataFrame, prov: dict) -> list[tuple[int, int]]:
    """``(max_num_seqs, batch)`` of each concurrent batch a recorded server was sent (its ``together`` stages
    that ran), each once: what :func:`flexfix.edition.glossary.decode_dispatch` asks vLLM about."""
    return list(dict.fromkeys((m, n) for _, m, n in _dispatch(table, prov)))


def dispatch_table(table: pd.DataFrame, prov: dict) -> pd.DataFrame:
    """:func:`flexfix.edition.glossary.decode_dispatch` of each scenario's concurrent batches, the scenario in the
    first column: what vLLM's own ``CudagraphDispatcher`` runs each batch of each server with."""
    from flexfix.edition.glossary import decode_dispatch

    return decode_dispatch(_dispatch(table, prov)).rename(columns={"engine": "scenario"})


def first_differences(table: pd.DataFrame, per_stage: int = 5) -> pd.DataFrame:
    """Of :func:`differences`, each scenario's stage's first ``per_stage`` rows with other tokens, then its first
    ``per_stage`` with the same tokens, after a line saying how many requests differ in all and in how many stages."""
    found = differences(table)
    order = found.groupby(["scenario", "stage", "requests"], sort=False).ngroup()  # each stage where it first shows
    found = found.assign(_o=order).sort_values(["_o", "tokens_equal"], kind="stable")
    answers = "1 answer" if len(found) == 1 else f"{len(found)} answers"
    stages = "1 stage" if order.nunique() == 1 else f"{order.nunique()} stages"
    print(
        f"{answers} differ from their reference (a batched answer from the same request alone, a streamed one from "
        f"its non-streamed answer), in {stages}; of each stage the first "
        f"{per_stage} with other tokens, then the first {per_stage} with the same. `request` is the request's number "
        "in its batch; `first_token_mismatch` is the position (from 0) of its first generated token that differs "
        "from its reference's, empty where every token is the same:"
    )
    shown = found.groupby(["_o", "tokens_equal"], sort=False).head(per_stage).drop(columns="_o")
    return shown.rename(columns={"index": "request"}).reset_index(drop=True)


# The guard's serving run (notebook 07, *Serving*).


def servers_agree(table: pd.DataFrame, pairs: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """For each pair of serving scenarios and each concurrent batch both served: how many of its requests got the
    same token ids from both servers, and bitwise the same logprobs."""
    from flexfix.measure.generations import compare_generations

    by_name = table.set_index("scenario")
    rows = []
    for a, b in pairs:
        if a not in by_name.index or b not in by_name.index:
            continue
        left, right = (_served(by_name.loc[name, "records"]) for name in (a, b))
        for n in sorted(set(left) & set(right)):
            pairs_ = [
                compare_generations(x["tokens"], x["logprobs"], right[n][i]["tokens"], right[n][i]["logprobs"])
                for i, x in left[n].items()
                if i in right[n]
            ]
            rows.append(
                {
                    "servers": f"{a} vs {b}",
                    "concurrent requests": n,
                    "same tokens": sum(p["tokens_equal"] for p in pairs_),
                    "bitwise equal": sum(p["logprobs_bitwise_equal"] for p in pairs_),
                    "of": n,
                }
            )
    return pd.DataFrame(rows)


def _served(stages: Iterable[dict]) -> dict[int, dict[int, dict]]:
    """concurrent batch size -> request index -> its answer, from a serving row's ``together`` stages."""
    return {
        s["requests"]: {o["index"]: o for o in s.get("streams", [])}
        for s in stages
        if s.get("stage") == "together" and "streams" in s
    }


def print_guard_lines(table: pd.DataFrame, scenario: str, n: int = 2) -> None:
    """The first ``n`` lines of a served scenario's log that the guard wrote (its recorded ``guard_lines``)."""
    lines = list(table.set_index("scenario").loc[scenario, "guard_lines"] or [])
    if not lines:
        raise DataError(f"refusing to print the guard's lines of {scenario}: the serving run recorded none")
    print(f"--- {scenario}: {len(lines)} line(s) of the guard in the server's log; the first {min(n, len(lines))}:")
    for line in lines[:n]:
        print(line)


def served(data_dir) -> tuple[pd.DataFrame, dict]:
    """The guard's serving run (``serve_guard-cuda.json``), read through
    :data:`flexfix.edition.schemas.GUARD_SERVING`: (table, provenance)."""
    from flexfix.edition import schemas

    return schemas.recorded(data_dir, "serve_guard", schemas.GUARD_SERVING)
