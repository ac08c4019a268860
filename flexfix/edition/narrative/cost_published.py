"""Notebook 05, *Next to the published numbers*: how the setups behind our rows differ from the published ones,
the engine rows and the kernel rows apart (r12 A1), each said from what its own run printed."""

from __future__ import annotations

import pandas as pd

from flexfix.edition import anchors
from flexfix.edition.narrative import listing, markdown

__all__ = ["head_shape", "setups_differ"]


def head_shape(case: object) -> tuple[int, int, int] | None:
    """(query heads, KV heads, head dim) of a printed ``DecodeCase(num_heads=.., num_kv_heads=.., head_dim=..)``,
    or of a :class:`~flexfix.measure.timing.DecodeCase`; None where one of them is not printed."""
    from flexfix.edition.printed import printed_ints

    fields = printed_ints(case)
    shape = tuple(fields.get(k) for k in ("num_heads", "num_kv_heads", "head_dim"))
    return None if None in shape else shape  # type: ignore[return-value]


def _shape_words(shape: tuple[int, int, int] | None) -> str:
    """The head shape in words, and whether it is the published model's."""
    if shape is None:
        return "a head shape its results file does not print"
    model = anchors.PR_36298["model"]
    same = (
        f": {model}'s head shape" if tuple(shape) == tuple(anchors.PR_36298["heads"]) else f": not {model}'s head shape"
    )
    return f"{shape[0]} query heads, {shape[1]} KV heads, head dim {shape[2]}{same}"


def setups_differ(engine_where: str, kernel_runs: list[tuple[str, object, pd.DataFrame]]) -> str:
    """How the setups of the rows under *Next to the published numbers* differ from the published ones, one line for
    the engine rows and one for the kernel rows, so that no difference said of one is read as true of the other (r12
    A1). ``engine_where`` names the engine recordings and their GPU
    (:func:`~flexfix.edition.tables.recorded_where`); ``kernel_runs`` lists ``(where, case, ratios)`` of each kernel
    run the lines above may quote: a run is named only where its ``ratios`` carry a ratio they quote (the replay's
    speed-up or the kernel options' cost: a run without graph replay quotes neither)."""
    pr, blog = anchors.PR_36298, anchors.TORCHTITAN_BITWISE_RL
    quoted = [(w, c) for w, c, r in kernel_runs if {"graph_speedup", "bi_overhead"} & set(r.columns)]
    lines = [
        f"* **The published rows**: PR #36298 on its own setup ({pr['setup']}): the end-to-end latency of one "
        f"batch, on vLLM's main branch; the blog on its own ({blog['setup']}): training and generation.",
        f"* **Our engine rows** (full over piecewise or eager graphs, `BI1/BI0`): {engine_where}; the small Llama "
        "models with seeded random weights printed above, not a trained model; output tokens per second of many "
        "concurrent requests, not the latency of one batch; vLLM 0.20.0 with flexfix's patch; inference only.",
    ]
    if quoted:
        runs = listing([f"{where} ({_shape_words(head_shape(case))})" for where, case in quoted], sep="; ")
        lines.append(
            f"* **Our kernel rows** (the attention kernel alone): {runs}; the median time of one decode-attention "
            "call, with no model around it and no engine, not an end-to-end latency or a throughput; flex with vLLM "
            "0.20.0's kernel options and the batch-invariant ones; inference only."
        )
    lead = (
        "**How the setups differ from the published ones.** The **Direction** line says which published directions "
        "these runs share; beyond those, the setups differ, and not the same way for our engine rows and our kernel "
        "rows:"
    )
    return markdown(lead + "\n\n" + "\n".join(lines))
