"""What the serving scenarios measured, in words (notebook 06)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import require
from flexfix.edition.narrative import OUTCOME_WORDS, markdown, plural

__all__ = ["scenarios"]


def _check(table: pd.DataFrame, stages: pd.DataFrame, where: str) -> None:
    """What the sentences state: each scenario's status and what its server did; each stage run, its counts; each
    comparison, its results; each difference, its size."""
    require(table, f"the serving scenarios of {where}", values=("scenario", "status", "ima_in_log", "plugin_lines"))
    require(table, f"the serving scenarios of {where}", ["server_exited_with"])
    what = f"the serving stages of {where}"
    require(stages, what, ["skipped", "errors", "compared"], values=("scenario", "stage"))
    run = dict(where=lambda t: ~t["skipped"].fillna("").astype(bool), condition="of stages that ran")
    require(stages, what, values=("requests", "ok", "errored"), **run)
    compared = dict(where=lambda t: t["compared"].fillna(0) > 0, condition="with comparisons")
    require(stages, what, values=("bitwise_equal", "tokens_differ", "logprobs_differ"), **compared)
    differ = dict(
        where=lambda t: (t["tokens_differ"].fillna(0) + t["logprobs_differ"].fillna(0)) > 0,
        condition="with differences",
    )
    require(stages, what, values=("max_abs_logprob_diff",), **differ)


def _stage(row: pd.Series) -> str:
    if row.get("skipped"):
        return f"{row['stage']}: not run ({row['skipped']})"
    n, ok = int(row["requests"]), int(row["ok"]) if pd.notna(row["ok"]) else 0
    text = f"{row['stage']} {n}: {ok} of {n} answered"
    if pd.notna(row.get("errored")) and int(row["errored"]):
        text += f" ({row['errors'] or plural(int(row['errored']), 'error')})"
    compared = row.get("compared")
    if pd.notna(compared) and int(compared):
        versus = "its non-streamed answer" if row["stage"] == "stream" else "the same request alone"
        text += f", {int(row['bitwise_equal'])} of {int(compared)} bitwise equal to {versus}"
        if int(row["tokens_differ"]):
            text += f" ({plural(int(row['tokens_differ']), 'request')} with other tokens"
            text += f", {int(row['logprobs_differ'])} with other logprobs"
            text += f", by up to {row['max_abs_logprob_diff']:.3g})"
        elif int(row["logprobs_differ"]):
            text += f" ({int(row['logprobs_differ'])} with other logprobs, by up to {row['max_abs_logprob_diff']:.3g})"
    return text


def scenarios(table: pd.DataFrame, stages: pd.DataFrame, where: str) -> str:
    """Per scenario (``table``: :func:`flexfix.integration.serve_load.record`; ``stages``: its
    :func:`flexfix.integration.serve_load.stage_table`): what the clients got at each stage, and what the server did."""
    _check(table, stages, where)
    lines = []
    for _, sc in table.iterrows():
        mine = stages[stages["scenario"] == sc["scenario"]]
        server = []
        if sc.get("ima_in_log"):
            server.append("an illegal memory access in its log")
        if pd.notna(sc.get("server_exited_with")):
            server.append(f"the server exited with status {int(sc['server_exited_with'])}")
        if sc.get("plugin_lines"):
            server.append(
                f"flexfix's plugin announced itself in {plural(int(sc['plugin_lines']), 'process', 'processes')}"
            )
        status = OUTCOME_WORDS.get(sc["status"], sc["status"]).replace("correct at every step", "ok")
        line = f"* **{sc['scenario']}** ({status}): " + "; ".join(_stage(r) for _, r in mine.iterrows())
        lines.append(line + (f"; {', '.join(server)}" if server else "") + ".")
    return markdown(f"**What {where} measured**", "\n".join(lines))
