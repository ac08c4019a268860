"""What the serving scenarios measured, in words (notebook 06): per scenario, first what it means, then the
evidence stage by stage."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.checks import DataError, require
from flexfix.edition.narrative import OUTCOME_WORDS, listing, markdown, plural
from flexfix.edition.narrative.serving_live import FAKE_LEAD, REAL_BESIDE, skip_line, what_runs
from flexfix.edition.narrative.serving_manager import manager_times
from flexfix.edition.tables.serving import FAKE_MODEL, is_fake, model_label

__all__ = [
    "scenarios",
    "conclusion",
    "meaning",
    "manager_times",
    "plugin_processes",
    "what_runs",
    "result_lead",
    "FAKE_LEAD",
    "skip_line",
    "REAL_BESIDE",
]


def _check(table: pd.DataFrame, stages: pd.DataFrame, where: str) -> None:
    """What the sentences state: each scenario's status and what its server did; each stage run, its counts; each
    comparison, its results; each difference, its size."""
    require(table, f"the serving scenarios of {where}", values=("scenario", "status", "ima_in_log", "plugin_lines"))
    require(table, f"the serving scenarios of {where}", ["server_exited_with"])
    for _, r in table.iterrows():
        if not isinstance(r.get("requests"), list) or not r["requests"]:
            raise DataError(f"refusing to describe the serving scenarios of {where}: {r['scenario']} lists no requests")
    what = f"the serving stages of {where}"
    require(stages, what, ["skipped", "errors", "compared"], values=("scenario", "stage"))
    run = dict(where=lambda t: ~t["skipped"].fillna("").astype(bool), condition="of stages that ran")
    require(stages, what, values=("requests", "ok", "errored"), **run)
    compared = dict(where=lambda t: t["compared"].fillna(0) > 0, condition="with comparisons")
    require(stages, what, values=("bitwise_equal", "same_tokens_other_logprobs", "tokens_differ"), **compared)
    differ = dict(
        where=lambda t: (t["tokens_differ"].fillna(0) + t["same_tokens_other_logprobs"].fillna(0)) > 0,
        condition="with differences",
    )
    require(stages, what, values=("max_abs_logprob_diff",), **differ)


def _counts(mine: pd.DataFrame) -> dict[str, int]:
    """Counts of the stages that ran: the batched answers (``together``, each against the same request alone) and
    the streamed ones (``stream``, each against its non-streamed answer) apart, as they have two references."""
    ran = mine[~mine["skipped"].fillna("").astype(bool)]
    batch, stream = ran[ran["stage"] == "together"], ran[ran["stage"] == "stream"]

    def total(frame, column):
        return int(frame[column].fillna(0).sum())

    return {
        "errored": total(ran, "errored"),
        "compared": total(batch, "compared") + total(stream, "compared"),
        "equal": total(batch, "bitwise_equal") + total(stream, "bitwise_equal"),
        "batched": total(batch, "compared"),
        "batched_equal": total(batch, "bitwise_equal"),
        "tokens": total(batch, "tokens_differ"),
        "streamed": total(stream, "compared"),
        "streamed_equal": total(stream, "bitwise_equal"),
        "skipped": int(mine["skipped"].fillna("").astype(bool).sum()),
    }


def _batched(c: dict[str, int]) -> str:
    """The batched answers against the same request alone, in words (empty where none was compared)."""
    n, equal = c["batched"], c["batched_equal"]
    if not n:
        return ""
    if equal == n:
        return f"all {plural(n, 'batched answer')} were bitwise the same as the same request alone"
    said = f"all {n} batched answers" if equal == 0 else f"{n - equal} of {n} batched answers"
    said += " differed from the same request alone"
    return said + (f" ({c['tokens']} with other tokens, another text)" if c["tokens"] else " (only logprobs, no token)")


def _streamed(c: dict[str, int]) -> str:
    """The streamed answers against their non-streamed ones, in words (empty where none was compared)."""
    n, equal = c["streamed"], c["streamed_equal"]
    if not n:
        return ""
    if n == 1:
        return f"the streamed answer {'equalled' if equal else 'differed from'} its non-streamed one, bitwise"
    return f"{equal} of {n} streamed answers equalled their non-streamed ones, bitwise"


def meaning(sc: pd.Series, mine: pd.DataFrame, emulated: bool = False) -> str:
    """One scenario's result in words, before its evidence: what a client of that server would conclude
    (``emulated``: the FAKE server played it, no vLLM ran)."""
    c = _counts(mine)
    status = sc["status"]
    if status == "illegal_memory_access":
        first = mine[mine["errored"].fillna(0).astype(int) > 0]
        at = f" when {int(first.iloc[0]['requests'])} requests were sent together" if len(first) else ""
        died = "the FAKE server emulated an engine dying of" if emulated else "the engine died of"
        text = f"{died} an illegal memory access{at}: {plural(c['errored'], 'request')} got an error"
        if c["skipped"]:
            text += f"; {plural(c['skipped'], 'later stage')} could not run"
        return text
    compared = "; ".join(part for part in (_batched(c), _streamed(c)) if part)
    if status == "ok":
        return compared or "no answer was compared"
    if status == "differs":
        text = f"every request was answered, but {compared or 'no answer was compared'}"
        same = pd.to_numeric(mine["max_logprob_diff_same_tokens"], errors="coerce").max()
        if pd.notna(same) and same > 0:  # over the requests with the same tokens only: the others compare other tokens
            text += f"; where the tokens were the same, logprobs moved by up to {same:.3g}"
        return text
    return OUTCOME_WORDS.get(status, status.replace("_", " "))


def plugin_processes(lines) -> list[str]:
    """The vLLM processes named by the plugin's log lines ("(APIServer pid=1)" -> "APIServer"), in order."""
    names = []
    for line in lines if isinstance(lines, list) else []:
        m = re.match(r"\(?(\w+) pid=\d+\)?", str(line))
        if m and m.group(1) not in names:
            names.append(m.group(1))
    return names


def _server(sc: pd.Series, emulated: bool = False) -> list[str]:
    server = []
    if sc.get("ima_in_log"):
        server.append(
            "an emulated illegal-memory-access line in its log" if emulated else "an illegal memory access in its log"
        )
    if pd.notna(sc.get("server_exited_with")):
        server.append(f"the server exited with status {int(sc['server_exited_with'])}")
    if sc.get("plugin_lines"):
        text = f"flexfix's plugin announced itself in {plural(int(sc['plugin_lines']), 'log line')}"
        named = plugin_processes(sc.get("plugin_processes"))
        if named:
            text += f", from the {listing(named)} process{'es' if len(named) > 1 else ''}"
        else:
            text += " (this recording kept how many, not which processes wrote them, nor the lines)"
        server.append(text)
    return server


def scenarios(table: pd.DataFrame, stages: pd.DataFrame, where: str, stated_above: bool = False) -> str:
    """Per scenario (``table``: :func:`flexfix.integration.serving.record`; ``stages``: its
    :func:`flexfix.edition.tables.stage_table`): what it means, then what the clients got at each stage and what the
    server did (``stated_above``: the meaning is :func:`result_lead`'s, under the title; only what the server did is
    said, r20 D1)."""
    _check(table, stages, where)
    lines = []
    fake = bool(len(table)) and all(is_fake(sc) for _, sc in table.iterrows())  # r20 D3: then said once, above
    for _, sc in table.iterrows():
        mine = stages[stages["scenario"] == sc["scenario"]]
        emulated = is_fake(sc)
        server = _server(sc, emulated)
        label = model_label(sc)
        if emulated:
            model = (
                f" (model {FAKE_MODEL})" if fake else f" (model {FAKE_MODEL}: the FAKE server emulated it, no vLLM ran)"
            )
        else:
            model = f" ({label} model)" if label else ""
        said = [] if stated_above else [meaning(sc, mine, emulated)]
        if server or not stated_above:
            lines.append(f"* **{sc['scenario']}**{model}: {'; '.join([*said, ', '.join(server)] if server else said)}.")
    labels = {r["scenario"]: model_label(r) for _, r in table.iterrows()}
    models = {m for m in labels.values() if m}
    head = ""
    if len(models) > 1:
        which = ", ".join(f"{scenario}: {model}" for scenario, model in labels.items())
        sizes = "; ".join(f"{r.scenario}: {listing([str(n) for n in r.requests])}" for r in table.itertuples())
        head = (  # r22 D1: that they are not one model with and without the fix is said once, in result_lead
            f"The scenarios ran different models ({which}) and batch sizes ({sizes}): each scenario compares its "
            "own requests in a batch with the same requests alone (the one-model question: the result at the top, "
            "answered in the cell that ends this section)."
        )
    verb = "emulated (no vLLM ran: nothing here is a measurement of vLLM)" if fake else "measured"
    servers = "Each scenario's result, in words, is the one under the title; what each server did besides:"
    parts = [conclusion(table, stages), *([head] if head else []), *([servers] if stated_above and lines else [])]
    return markdown(f"**What {where} {verb}**", *parts, "\n".join(lines))


def conclusion(table: pd.DataFrame, stages: pd.DataFrame) -> str:
    """One sentence before the scenarios: which servers answered every batched or streamed request bitwise as
    alone, which answered otherwise, which died; the counts stage by stage are the stage table's."""
    groups: dict[str, list[str]] = {}
    for _, sc in table.iterrows():
        mine = stages[stages["scenario"] == sc["scenario"]]
        c = _counts(mine)
        if sc["status"] == "ok" and c["compared"] and c["equal"] == c["compared"]:
            key = "bitwise"
        elif sc["status"] == "differs" and c["batched"] and c["batched_equal"] == c["batched"]:
            key = "stream only"
        elif sc["status"] == "differs":
            key = ("other tokens" if c["tokens"] else "other logprobs") + (" every" * (c["batched_equal"] == 0))
        elif sc["status"] == "illegal_memory_access":
            key = "died"
        else:
            key = OUTCOME_WORDS.get(sc["status"], str(sc["status"]).replace("_", " "))
        groups.setdefault((key, is_fake(sc)), []).append(str(sc["scenario"]))
    words = {
        "bitwise": "every batched answer was bitwise equal to the same request alone, and every streamed answer to "
        "its non-streamed one",
        "stream only": "every batched answer was bitwise equal to the same request alone, but not every streamed "
        "answer to its non-streamed one",
        "other logprobs": "every request was answered, some batched answers not bitwise as alone: other logprobs, "
        "never other tokens",
        "other logprobs every": "every request was answered, but no batched answer bitwise as alone: other "
        "logprobs, never other tokens",
        "other tokens": "every request was answered, some batched answers not bitwise as alone, some even with other "
        "tokens",
        "other tokens every": "every request was answered, but no batched answer bitwise as alone, some even with "
        "other tokens",
        "died": "the engine died of an illegal memory access and its clients got errors",
    }
    emulated = {"died": "the FAKE server emulated an engine dying of an illegal memory access; its clients got errors"}
    parts = []
    every = bool(groups) and all(fake for _key, fake in groups)  # r20 D3: all emulated, said once
    for (key, fake), names in groups.items():
        who = f"in {'all ' + str(len(names)) + ' scenarios ' if len(names) > 2 else ''}{listing(names)}"
        said = words.get(key, key)
        if every and key == "died":
            said = "an engine dying of an illegal memory access was emulated; its clients got errors"
        elif fake and not every:  # the FAKE server's outcome is never said as an engine's (no vLLM ran)
            said = emulated.get(key, f"as the FAKE server emulated it (no vLLM ran), {said}")
        parts.append(f"{who}, {said}")
    lead = "In short, all emulated by the FAKE server: " if every else "In short: "
    return lead + "; ".join(parts) + ". The counts, stage by stage, are the stage table's."


# Before the result's bullets: the words they use, defined in one line (*The scenarios* defines them in full).
STAGES_LINE = (
    "Each scenario's server is sent every request alone (the reference), then several at once (`together`, each "
    "answer compared with the same request alone), then one streamed (`stream`, compared with its non-streamed "
    "answer): a **stage** is one of these three. `FLEXFIX_PATCH=1` is the fix, applied by flexfix's plugin; "
    "`VLLM_BATCH_INVARIANT=1` asks vLLM for kernels whose answer does not depend on the batch."
)

# Why each model was served (the parameters cell's default: stock tiny, patched variance).
MODEL_REASONS = {
    "tiny": "the model on which notebook 01 reproduces the crash",
    "variance": "the larger model, on which notebook 04 saw `VLLM_BATCH_INVARIANT=0` engines vary, even the same "
    "request alone run again (the batch's share, 04 did not establish)",
}


def why_models(table: pd.DataFrame) -> str:
    """One sentence, only where the recorded servers ran more than one model: which scenarios served which model
    and why (:data:`MODEL_REASONS`), so that this recording cannot answer the one-model question by itself."""
    if "model" not in table or table["model"].nunique() < 2:
        return ""
    said = []
    for model, rows in table.groupby("model", sort=False):
        names = listing([f"`{n}`" for n in rows["scenario"]])
        label = model_label(rows.iloc[0]) or str(model)
        reason = MODEL_REASONS.get(label)
        said.append(f"{names} the {label} model" + (f", {reason}" if reason else ""))
    return (
        " This notebook's recorded servers cannot answer it by themselves: they ran different models, "
        + "; ".join(said)
        + "."
    )


def result_lead(data_dir, then: str = "") -> str:
    """The result first, under the title: each recorded real server's outcome (:func:`meaning`, from the recorded
    GPU run's stage table, read as *The recorded GPU run* reads it), then notebook 07's one-model *Serving* result
    (:func:`flexfix.edition.narrative.guard_serving.in_short`) pointed to, not repeated: it is printed once, at the end
    of *The recorded GPU run*; says so where either is not recorded. ``then``: what
    follows it in the same output (the notebook's :func:`what_runs`)."""
    from flexfix.edition import tables
    from flexfix.integration.serving.recording import recorded_run

    loaded = recorded_run(data_dir)
    if loaded is None:
        lines = ["* the real `vllm serve` run is not recorded yet."]
    else:
        table = loaded[0]
        stages = tables.stage_table(table)
        _check(table, stages, "the recorded GPU run")
        lines = []
        for _, sc in table.iterrows():
            mine = stages[stages["scenario"] == sc["scenario"]]
            label = model_label(sc)
            settings = [f"{label} model"] * bool(label)
            settings += [f"`FLEXFIX_PATCH={sc['FLEXFIX_PATCH']}`"] * pd.notna(sc.get("FLEXFIX_PATCH"))
            settings += [f"`VLLM_BATCH_INVARIANT={sc['VLLM_BATCH_INVARIANT']}`"] * pd.notna(
                sc.get("VLLM_BATCH_INVARIANT")
            )
            said = meaning(sc, mine, is_fake(sc))
            if sc.get("ima_in_log") and not is_fake(sc):
                said += "; its log names the illegal memory access"
            lines.append(f"* **{sc['scenario']}** ({', '.join(settings)}): {said}." if settings else f"* {said}.")
    from flexfix.edition.narrative import guard_servers

    guarded = guard_servers.one_model(data_dir) + (why_models(loaded[0]) if loaded is not None else "")
    return markdown(
        "**The result, from the recorded real servers** (the evidence is *The recorded GPU run*, after *The "
        "scenarios*):",
        STAGES_LINE,
        "\n".join(lines),
        guarded,
        then,
    )
