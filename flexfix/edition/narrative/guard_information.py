"""Notebook 07's sentences on what its guard tables leave to the reader: how often each information field changed
against the replays checked (:func:`changed`, *No false alarms*), and the engine settings of the planted-bug runs
(:func:`mutant_settings`, *Planted bugs*), every number read from the recorded rows."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.checks import DataError, is_missing
from flexfix.edition.narrative import listing, markdown, plural
from flexfix.edition.narrative.guard import _need

__all__ = ["changed", "mutant_settings", "own_steps"]


def changed(information: pd.DataFrame, engines: pd.DataFrame) -> str:
    """``information``: :func:`flexfix.edition.tables.guard.information`; ``engines``: the same runs'
    :func:`flexfix.edition.tables.guard.false_alarms` (``engine``, ``replays checked``): for each counted field, in
    how many of the engines that have it the count equals the replays checked (changed at every replay), and where a
    ``kv_indices`` shape count falls short, what a replay that kept the capture's shape means."""
    if "engine" not in information.columns:
        information = information.reset_index()
    _need(information, ["engine"], "changed")
    _need(engines, ["engine", "replays checked"], "changed")
    replays = dict(zip(engines["engine"], engines["replays checked"]))
    every, fewer = [], []
    for column in information.columns.drop("engine"):
        counts = [(e, int(n), int(replays[e])) for e, n in zip(information["engine"], information[column])
                  if e in replays and int(n) > 0]  # fmt: skip
        if not counts:
            continue
        short = [(e, n, r) for e, n, r in counts if n != r]
        name = f"`{column}`"
        if not short:
            every.append(f"{name} (in {plural(len(counts), 'engine')})")
        else:
            rest = len(counts) - len(short)
            fewer.append(
                f"{name} at {listing([f'{n} of {r}' for _, n, r in short])} replays"
                + (f" (at every replay in the other {plural(rest, 'engine')})" if rest > 1 else "")
                + (" (at every replay in the other engine)" if rest == 1 else "")
            )
    if not every and not fewer:
        return ""
    said = [f"at every replay the guard checked, {listing(every, '; ')}"] if every else []
    said += [f"at fewer, {listing(fewer, '; ')}"] if fewer else []
    why = (
        " A `kv_indices` row is `K = 16 * cdiv(max_seq_len, 16)` entries wide: its shape stays the capture's at a "
        "replay whose longest sequence needs as many KV blocks as the capture's did, even where `max_seq_len` itself "
        "differs (the recording does not say which replay that was)."
        if any("kv_indices" in f for f in fewer)
        else ""
    )
    return markdown(
        "**How often each counted field changed, against `replays checked`**: " + "; ".join(said) + "." + why
    )


def mutant_settings(table: pd.DataFrame, where: str) -> str:
    """``table``: the recorded planted-bug runs (rows with ``model``, ``generations``, ``max_tokens``, ``backend``,
    ``max_num_seqs``), ``where``: :func:`flexfix.edition.tables.recorded_where` of their recording: the settings of
    their engines, with the prompt lengths and ``max_model_len`` flexfix's engine runs give that model, and the KV block
    size read from a recorded ``block_table`` capture shape where one was named."""
    from flexfix.edition.tables.guard import max_num_seqs, mutant_table
    from flexfix.measure.engine_sweep import MAX_MODEL_LEN, PROMPT_LENGTHS

    _need(table, ["model", "generations", "max_tokens", "backend", "max_num_seqs", "records"], "mutant_settings")
    for field in ("model", "generations", "max_tokens", "backend"):
        for value in table[field]:
            if is_missing(value) if not isinstance(value, (list, tuple)) else not value:
                raise DataError(f"refusing to state the planted-bug engines' settings: a run's `{field}` is missing")
    if any(m not in PROMPT_LENGTHS or m not in MAX_MODEL_LEN for m in table["model"]):
        raise DataError(f"refusing to state the planted-bug engines' settings: unknown model in {set(table['model'])}")
    models = list(dict.fromkeys(table["model"]))
    parts = []
    for model in models:
        runs = table[table["model"] == model]
        batches = listing(sorted({str(n) for g in runs["generations"] for n in (g if isinstance(g, list) else [])}))
        seqs = listing(sorted({str(max_num_seqs(r)) for _, r in runs.iterrows()}))
        lo, hi = PROMPT_LENGTHS[model]
        parts.append(
            f"the `{model}` model, {batches} requests at once (`max_num_seqs` {seqs}), prompts of {lo} to {hi} "
            f"tokens, {listing(sorted({str(int(t)) for t in runs['max_tokens']}))} tokens generated each, "
            f"`max_model_len` {MAX_MODEL_LEN[model]}, attention backend {listing(sorted(set(runs['backend'])))}"
        )
    block = _block_size(mutant_table(table), MAX_MODEL_LEN[models[0]]) if len(models) == 1 else None
    own = ""
    if block and block[1] < PROMPT_LENGTHS[models[0]][0]:
        own = (
            ", shorter than any of these prompts: a step vLLM ran of its own, outside these requests (such as "
            "its warm-up or dummy runs; the recording does not say which)"
            + own_steps(block, PROMPT_LENGTHS[models[0]], int(max(table["max_tokens"])))
        )
    return markdown(
        f"**The planted-bug engines** ({where}): "
        + "; ".join(parts)
        + "."
        + (
            f" The `block_table` named at capture is {block[0]} blocks wide, `max_model_len` in KV blocks of "
            f"{block[1]} tokens; a replay whose `block_table` has one column is a step whose longest sequence fit "
            "in one KV block" + own + "."
            if block
            else ""
        )
    )


def own_steps(block: tuple[int, int], prompts: tuple[int, int], max_tokens: int) -> str:
    """Whether the requests' own decode steps would alarm too, said as an inference (under ``error`` the engine
    stops at its first alarm, so no recorded alarm is of their steps): ``block`` is ``(capture width, KV block
    size)``, ``prompts`` the shortest and longest prompt, ``max_tokens`` the tokens each request generates. Their
    rows would be ``cdiv(shortest prompt, block)`` to ``cdiv(longest prompt + max_tokens, block)`` entries wide; the
    sentence says they would alarm only where that range does not reach the capture's width (a row stride other
    than the capture's alarms, whichever way it moved)."""
    width, size = block
    narrow, wide = -(-prompts[0] // size), -(-(prompts[1] + max_tokens) // size)
    if wide < width or narrow > width:
        return (
            ". That the requests' own decode steps would alarm too is an inference, not a recorded alarm (under "
            "`error` the engine stopped at its first): their sequences hold from "
            f"{prompts[0]} tokens (the shortest prompt) to at most {prompts[1] + max_tokens} (the longest prompt "
            f"and {max_tokens} generated), so their rows would be {narrow} to {wide} entries wide (one per KV block "
            f"of {size} tokens), never the capture's {width}, and the guard compares every replay of "
            "the graph with its capture, whichever step asks for it"
        )
    return (
        ". Whether the requests' own decode steps would alarm too is not recorded (under `error` the engine stopped "
        f"at its first), nor follows from their lengths: their rows would be {narrow} to {wide} entries wide (one "
        f"per KV block of {size} tokens), a range that reaches the capture's {width}"
    )


def _block_size(mutants: pd.DataFrame, max_model_len: int) -> tuple[int, int] | None:
    """``(width, block size)`` from a ``block_table`` alarm's capture shape ``[rows, width]`` in the mutant table's
    first alarms, where ``max_model_len`` divides into that many blocks; None where no such alarm was recorded."""
    for text in mutants.get("the first alarm found", []):
        found = re.search(r"block_table:.*shape \[\d+, (\d+)\] -> \[\d+, 1\]", str(text))
        if found and max_model_len % int(found.group(1)) == 0:
            return int(found.group(1)), max_model_len // int(found.group(1))
    return None


def cost_parts(table: pd.DataFrame) -> tuple[str, str]:
    """:func:`flexfix.edition.narrative.guard.cost` in two: its bold conclusion, to say before the cost table, and the
    rest (its numbers), to say after it; the rest is empty where the conclusion is all it says."""
    from flexfix.edition.narrative.guard import cost

    text = str(cost(table))
    end = text.find(".** ")
    if end < 0:
        return markdown(text), markdown("")
    return markdown(text[: end + 3]), markdown(text[end + 4 :])
