"""Views of a serving run (:func:`flexfix.integration.serving.record`): per scenario, per stage, per request."""

from __future__ import annotations

import pandas as pd

__all__ = [
    "scenario_table",
    "stage_table",
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
