"""Notebook 05: what the flushed-L2 timing says about the graph replay's speed-up (r12 D5), from this run's timings
with a warm and a flushed L2 (:func:`flexfix.edition.tables.l2_effect`)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import markdown, plural, span

__all__ = ["replay_flushed"]

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
    text = (
        f"**The replay's speed-up, flushed.** Where the warm speed-up of the replay is largest, at "
        f"{plural(int(batch), 'request')} of {int(context)} tokens ({w:.1f}x), `{EAGER}` took "
        f"{at[('warm_ms', EAGER)]:.3f} ms warm and {at[('flushed_ms', EAGER)]:.3f} ms flushed, the replay "
        f"{at[('warm_ms', GRAPH)]:.4f} ms warm and {at[('flushed_ms', GRAPH)]:.4f} ms flushed: a flushed speed-up "
        f"of {f:.1f}x there (flushed, over all cases: {span(flushed, '{:.2f}', 'x')})."
    )
    if f < w / HELD:
        text += (
            " So the warm speed-up there is what calls issued back to back show (as the warm timing issues them, "
            "and as the calls of one decode step come): with the flush queued on the GPU before each call, the "
            "host's work for an eager call can overlap it and drop out of the timed span. That is one explanation, "
            "which we did not test; read the warm speed-up as depending on how the calls are"
            " issued, not as time the kernel itself saves."
        )
    else:
        text += " The speed-up held under the flushed timing too."
    return markdown(text)
