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
]


def scenario_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per scenario: its settings (the model first: the scenarios need not share one) and what happened
    (``outcome``); the recording's expectation columns are left out, its sentences say what each outcome means."""
    cols = [
        "scenario",
        "model",
        "FLEXFIX_PATCH",
        "VLLM_BATCH_INVARIANT",
        "requests",
        "outcome",
        "ima_in_log",
        "plugin_lines",
        "server_exited_with",
        "startup_seconds",
        "detail",
    ]
    table = table.rename(columns={"status": "outcome"})
    return table[[c for c in cols if c in table]].set_index("scenario")


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


def stage_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per scenario x stage: requests ok / errored, comparisons with the request alone.  Each compared
    request is counted in exactly one of ``bitwise_equal``, ``same_tokens_other_logprobs`` and ``tokens_differ`` (a
    request with other tokens has other logprobs too, and counts only there): the three add up to ``compared``, and
    are the counts of :func:`flexfix.edition.plots.serving_figure`'s bars (:func:`stage_counts`)."""
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
