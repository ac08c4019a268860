"""Notebook 05: what the flushed-L2 timing says about the graph replay's speed-up (r12 D5), from this run's timings
with a warm and a flushed L2 (:func:`flexfix.edition.tables.l2_effect`)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import markdown, plural, span

__all__ = ["replay_flushed", "replay_cases", "flushed_clause", "flush_takeaway"]

EAGER, GRAPH = "flex vllm eager", "flex vllm graph"
HELD = 1.5  # a flushed speed-up under the warm one divided by this is said not to hold under the flushed timing


def _speedups(effect: pd.DataFrame):
    """The warm and flushed speed-ups per case, the case of the largest warm one, and the two factors there, as the
    flushed paragraph prints them (one decimal); ``None`` where no flushed timing was taken."""
    if effect.empty or not {EAGER, GRAPH} <= set(effect["impl"]):
        return None
    wide = effect.pivot_table(index=["batch", "context"], columns="impl", values=["warm_ms", "flushed_ms"])
    warm = wide[("warm_ms", EAGER)] / wide[("warm_ms", GRAPH)]
    flushed = wide[("flushed_ms", EAGER)] / wide[("flushed_ms", GRAPH)]
    case = warm.idxmax()
    return wide, warm, flushed, case, float(warm.max()), float(flushed.loc[case])


def verdict(w: float, f: float) -> str:
    """What became of the largest warm speed-up ``w`` with the L2 flushed (``f`` at the same case), decided from the
    factors as printed (r16 A1): ``"held"`` only where the flushed one, to one decimal, is not below the warm one;
    ``"gone"`` where the flushed one, to one decimal, is not above 1 (no speed-up left); ``"back to back"`` where it
    fell below ``w / HELD``; else ``"shrank"``."""
    wp, fp = round(w, 1), round(f, 1)
    if fp >= wp:
        return "held"
    if fp <= 1.0:
        return "gone"
    return "back to back" if f < w / HELD else "shrank"


def replay_flushed(effect: pd.DataFrame) -> str:
    """The replay's speed-up (``flex vllm eager`` over ``flex vllm graph``) with a warm and with a flushed L2, at
    the case of the largest warm speed-up and over all cases; what became of it (:func:`verdict`), and where the
    flushed one is much smaller, that the warm one shows back-to-back calls (an inference, said as one).  Empty where
    no flushed timing was taken."""
    got = _speedups(effect)
    if got is None:
        return markdown("")
    wide, _, flushed, (batch, context), w, f = got
    at = wide.loc[(batch, context)]
    text = (  # r13 D4: the measured numbers first, then the untested explanation, said as one
        f"**The replay's speed-up, flushed.** With the L2 flushed before each call, the replay's speed-up at "
        f"{plural(int(batch), 'request')} of {int(context)} tokens is {f:.1f}x, against {w:.1f}x warm (the largest "
        f"warm speed-up); flushed, over all cases, it ranges {span(flushed, '{:.2f}', 'x')} (every case: the table "
        f"below). There `{EAGER}` took "
        f"{at[('warm_ms', EAGER)]:.3f} ms warm and {at[('flushed_ms', EAGER)]:.3f} ms flushed, the replay "
        f"{at[('warm_ms', GRAPH)]:.4f} ms warm and {at[('flushed_ms', GRAPH)]:.4f} ms flushed."
    )
    said = verdict(w, f)
    if said == "held":
        text += " The speed-up held under the flushed timing too."
    elif said == "gone":
        text += f" Flushed, no speed-up remained there ({f:.1f}x, against {w:.1f}x warm)."
    elif said == "shrank":
        text += f" A speed-up remained ({f:.1f}x), smaller than warm ({w:.1f}x)."
    if said in ("gone", "back to back"):
        text += (
            " Both numbers are measured; which one a decode step sees depends on how its calls are issued. One "
            "explanation of the gap, which we did not test: with the flush queued on the GPU before each call, the "
            "host's work for an eager call can overlap it and drop out of the timed span, while the warm timing "
            "issues calls back to back, as the calls of one decode step come."
        )
    return markdown(text)


def replay_cases(effect: pd.DataFrame) -> pd.DataFrame:
    """Every case behind :func:`replay_flushed`'s range (r22 B2): per batch and context, ``flex vllm eager``'s and the
    replay's median with a warm and with a flushed L2, and the speed-up (eager over replay) each way, rounded as the
    sentences print them.  Empty where no flushed timing was taken."""
    got = _speedups(effect)
    if got is None:
        return pd.DataFrame()
    wide, warm, flushed, *_ = got
    return pd.DataFrame(
        {
            "eager_warm_ms": wide[("warm_ms", EAGER)].round(4),
            "replay_warm_ms": wide[("warm_ms", GRAPH)].round(4),
            "speed_up_warm": warm.round(2),
            "eager_flushed_ms": wide[("flushed_ms", EAGER)].round(4),
            "replay_flushed_ms": wide[("flushed_ms", GRAPH)].round(4),
            "speed_up_flushed": flushed.round(2),
        }
    )


def flushed_clause(timing: pd.DataFrame) -> str:
    """For the *In short* line (r15 D6): what the replay's speed-up came to with the L2 flushed before each call, over
    all cases, and what became of the largest warm one there (:func:`verdict`, from the numbers the flushed paragraph
    prints); empty where ``timing`` has no flushed rows."""
    from flexfix.edition.tables.cost import l2_effect

    got = _speedups(l2_effect(timing) if "l2" in timing else pd.DataFrame())
    if got is None:
        return ""
    _, _, flushed, (batch, context), w, f = got
    said = f" With the L2 flushed before each call the speed-up was {span(flushed, '{:.2f}', 'x')} over all cases"
    where = f"at {plural(int(batch), 'request')} of {int(context)} tokens"
    see = " (*The replay's speed-up, flushed*)."
    verdict_ = verdict(w, f)
    if verdict_ == "held":
        return said + f"; the largest, {w:.1f}x {where}, held ({f:.1f}x flushed)" + see
    if verdict_ == "gone":
        return said + (
            f"; the largest, {w:.1f}x warm {where}, was {f:.1f}x flushed: no speed-up remained there, and the "
            f"{w:.1f}x is a figure for calls issued back to back" + see
        )
    if verdict_ == "shrank":
        return said + (
            f"; the largest, {where}, shrank from {w:.1f}x warm to {f:.1f}x flushed (a replay was still faster)" + see
        )
    return said + (
        f"; {where} it fell from {w:.1f}x warm to {f:.1f}x flushed: the {w:.1f}x is a figure for calls issued "
        "back to back" + see
    )


def flush_takeaway(here: str, timing: pd.DataFrame, recorded: str, recorded_timing: pd.DataFrame) -> str:
    """The takeaways' line on the L2 flush (r17 D3): where this edition says what the replay's speed-up came to with
    the L2 flushed (this run: its paragraph *The replay's speed-up, flushed* and its *In short* line; the recording:
    its *In short* line, where it timed a flushed L2 too), or, where neither run did, that this edition does not
    show whether the large factor holds for calls that are not back to back."""
    from flexfix.edition.tables.cost import l2_effect

    def flushed(t: pd.DataFrame) -> bool:
        return "l2" in t and _speedups(l2_effect(t)) is not None

    if flushed(timing):
        return markdown(
            f"*With the L2 flushed*: {here} timed it; its paragraph *The replay's speed-up, flushed* and its *In "
            "short* line say what the factor came to."
        )
    if flushed(recorded_timing):
        return markdown(
            f"*With the L2 flushed*: {here} did not time it; {recorded} did, and the *In short* line under its "
            "kernel table says what the factor came to."
        )
    return markdown(
        f"*With the L2 flushed*: neither {here} nor {recorded} timed it (both timed a warm L2 only), so this edition "
        "does not show whether the large factor holds for calls that are not issued back to back."
    )
