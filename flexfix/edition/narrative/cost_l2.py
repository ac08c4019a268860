"""Notebook 05: what the flushed-L2 timing says about the graph replay's speed-up (r12 D5), from this run's timings
with a warm and a flushed L2 (:func:`flexfix.edition.tables.l2_effect`)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import markdown, plural, span

__all__ = ["replay_flushed", "flushed_clause"]

EAGER, GRAPH = "flex vllm eager", "flex vllm graph"
HELD = 1.5  # a flushed speed-up under the warm one divided by this is said not to hold under the flushed timing


def replay_flushed(effect: pd.DataFrame) -> str:
    """The replay's speed-up (``flex vllm eager`` over ``flex vllm graph``) with a warm and with a flushed L2, at
    the case of the largest warm speed-up and over all cases; where the flushed one is much smaller, that the warm
    one shows back-to-back calls (an inference, said as one).  Empty where no flushed timing was taken."""
    if effect.empty or not {EAGER, GRAPH} <= set(effect["impl"]):
        return markdown("")
    wide = effect.pivot_table(index=["batch", "context"], columns="impl", values=["warm_ms", "flushed_ms"])
    warm = wide[("warm_ms", EAGER)] / wide[("warm_ms", GRAPH)]
    flushed = wide[("flushed_ms", EAGER)] / wide[("flushed_ms", GRAPH)]
    batch, context = warm.idxmax()
    at = wide.loc[(batch, context)]
    w, f = float(warm.max()), float(flushed.loc[(batch, context)])
    text = (  # r13 D4: the measured numbers first, then the untested explanation, said as one
        f"**The replay's speed-up, flushed.** With the L2 flushed before each call, the replay's speed-up at "
        f"{plural(int(batch), 'request')} of {int(context)} tokens is {f:.1f}x, against {w:.1f}x warm (the largest "
        f"warm speed-up); flushed, over all cases, it ranges {span(flushed, '{:.2f}', 'x')}. There `{EAGER}` took "
        f"{at[('warm_ms', EAGER)]:.3f} ms warm and {at[('flushed_ms', EAGER)]:.3f} ms flushed, the replay "
        f"{at[('warm_ms', GRAPH)]:.4f} ms warm and {at[('flushed_ms', GRAPH)]:.4f} ms flushed."
    )
    if f < w / HELD:
        text += (
            " Both numbers are measured; which one a decode step sees depends on how its calls are issued. One "
            "explanation of the gap, which we did not test: with the flush queued on the GPU before each call, the "
            "host's work for an eager call can overlap it and drop out of the timed span, while the warm timing "
            "issues calls back to back, as the calls of one decode step come."
        )
    else:
        text += " The speed-up held under the flushed timing too."
    return markdown(text)


def flushed_clause(timing: pd.DataFrame) -> str:
    """For the *In short* line (r15 D6): what the replay's speed-up came to with the L2 flushed before each call, over
    all cases, and whether the largest warm one held; empty where ``timing`` has no flushed rows."""
    from flexfix.edition.tables.cost import l2_effect

    effect = l2_effect(timing) if "l2" in timing else pd.DataFrame()
    if effect.empty or not {EAGER, GRAPH} <= set(effect["impl"]):
        return ""
    wide = effect.pivot_table(index=["batch", "context"], columns="impl", values=["warm_ms", "flushed_ms"])
    warm = wide[("warm_ms", EAGER)] / wide[("warm_ms", GRAPH)]
    flushed = wide[("flushed_ms", EAGER)] / wide[("flushed_ms", GRAPH)]
    w, f = float(warm.max()), float(flushed.loc[warm.idxmax()])
    said = f" With the L2 flushed before each call the speed-up was {span(flushed, '{:.2f}', 'x')} over all cases"
    if f < w / HELD:
        return said + f": the {w:.1f}x is a figure for calls issued back to back (*The replay's speed-up, flushed*)."
    return said + f", and the {w:.1f}x held (*The replay's speed-up, flushed*)."
