"""Two kernel timings side by side (notebook 05: this run's GPU against the recorded one): does each kernel's time
follow the copy bandwidth, as a memory-bound kernel's would?"""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import require, require_numbers
from flexfix.edition.narrative import markdown, plural, span
from flexfix.edition.narrative.cost_spread import beyond_spread  # noqa: F401 (re-exported)

__all__ = [
    "compare_runs",
    "flex_over_sdpa",
    "direction",
    "l2_effect",
    "bi_bands",
    "beyond_spread",
]


def _numbers(table: pd.DataFrame, columns, what: str) -> None:
    """Each of ``columns`` of ``table`` present and a finite number in every row (also for :mod:`.cost`)."""
    require(table, what, values=columns)
    for column in columns:
        require_numbers(table[column], what, column)


def _times(timing: pd.DataFrame, ratios: pd.DataFrame, what: str) -> tuple[float, pd.DataFrame]:
    """The copy bandwidth of one run (GB/s, as its notebook prints it) and, per (batch, context), flex's replay time,
    dense SDPA's time (flex's over ``flex_over_sdpa``) and both fractions of the copy bandwidth."""
    require(timing, what, values=("copy_GBps",))
    require(
        ratios, what, values=("batch", "context", "replay_ms", "flex_over_sdpa", "flex_bw_fraction", "sdpa_bw_fraction")
    )
    require_numbers(timing["copy_GBps"], what, "copy_GBps")
    copy = float(timing["copy_GBps"].iloc[0])
    cases = ratios.set_index(["batch", "context"])
    return copy, pd.DataFrame(
        {
            "flex": cases["replay_ms"],
            "sdpa": cases["replay_ms"] / cases["flex_over_sdpa"],
            "flex_fraction": cases["flex_bw_fraction"],
            "sdpa_fraction": cases["sdpa_bw_fraction"],
        }
    )


def _cases_said(
    here: pd.DataFrame, there: pd.DataFrame, here_case: object, there_prov: dict | None
) -> tuple[bool, str]:
    """Whether the two timings can be set side by side: the head layouts (``here_case``, the recording's
    ``parameters.case``) and the (batch, context) cases each timed; a clause that says what differs or is unknown."""
    there_case = ((there_prov or {}).get("parameters") or {}).get("case")
    if here_case is not None and there_case is not None and str(here_case) != str(there_case):
        return False, f"they timed other head layouts ({here_case} here, {there_case} there)"
    said = []
    if here_case is None or there_case is None:
        said.append("whether both timed the same head layout is not recorded")
    cases = [set(zip(t["batch"], t["context"])) for t in (here, there)]
    if cases[0] != cases[1]:
        said.append(
            f"this run timed {len(cases[0])} (batch, context) cases and the recording {len(cases[1])}, "
            f"{len(cases[0] & cases[1])} of them both"
        )
    return True, "; ".join(said)


def compare_runs(
    here: pd.DataFrame,
    here_ratios: pd.DataFrame,
    here_where: str,
    there: pd.DataFrame,
    there_ratios,
    there_where: str,
    here_case: object = None,
    there_prov: dict | None = None,
) -> str:
    """This run's kernel timing against another (``here`` and ``there``: :func:`flexfix.measure.timing.decode_sweep`
    tables, with their :func:`flexfix.edition.tables.timing_ratios`): the copy bandwidths, and over the cases both
    timed at the larger half of batch and context, each kernel's time here over its time there.  A kernel limited by
    memory bandwidth would take about the inverse of the bandwidth ratio; said only from these numbers, and only
    where both timed the same head layout (``here_case``, the :class:`flexfix.measure.timing.DecodeCase` of this
    run, against ``there_prov``'s ``parameters.case``)."""
    if "replay_ms" not in here_ratios or "replay_ms" not in there_ratios:
        return ""
    copy_here, a = _times(here, here_ratios, f"the kernel timings of {here_where}")
    copy_there, b = _times(there, there_ratios, f"the kernel timings of {there_where}")
    comparable, cases = _cases_said(here_ratios, there_ratios, here_case, there_prov)
    if not comparable:
        return markdown(
            f"**{here_where[:1].upper()}{here_where[1:]} against {there_where}**: not compared, {cases}: their "
            "times are not of the same work."
        )
    both = a.add_suffix("_here").join(b.add_suffix("_there"), how="inner")
    if both.empty:
        return ""
    batches = sorted(both.index.get_level_values("batch").unique())
    contexts = sorted(both.index.get_level_values("context").unique())
    big_b, big_c = batches[len(batches) // 2], contexts[len(contexts) // 2]
    big = both[(both.index.get_level_values("batch") >= big_b) & (both.index.get_level_values("context") >= big_c)]
    if big.empty:
        return ""
    bw = copy_here / copy_there
    flex = big["flex_here"] / big["flex_there"]
    sdpa = big["sdpa_here"] / big["sdpa_there"]
    text = (
        f"**{here_where[:1].upper()}{here_where[1:]} against {there_where}** (the cases both timed at batch >= "
        f"{big_b} and context >= {big_c}, "
        f"{len(big)} of them; time here over time there): the copy ran at {copy_here:.0f} GB/s here and "
        f"{copy_there:.0f} GB/s there, {bw:.2f}x, so a kernel limited by memory bandwidth would take about "
        f"{1 / bw:.2f}x the time. Dense SDPA took {span(sdpa, '{:.2f}', 'x')} (read at "
        f"{span(big['sdpa_fraction_here'] * 100, '{:.0f}', '%')} of the copy bandwidth here, "
        f"{span(big['sdpa_fraction_there'] * 100, '{:.0f}', '%')} there); flex (vLLM options, graph replay) took "
        f"{span(flex, '{:.2f}', 'x')} (at {span(big['flex_fraction_here'] * 100, '{:.0f}', '%')} and "
        f"{span(big['flex_fraction_there'] * 100, '{:.0f}', '%')})."
    )
    if cases:
        text += f" ({cases[:1].upper()}{cases[1:]}.)"
    faster = 1 / bw
    if bw > 1.2 and flex.min() > (1 + faster) / 2 and abs(sdpa.median() - faster) < abs(sdpa.median() - 1):
        text += (
            " SDPA's time followed the bandwidth, flex's did not: a sign that on these GPUs and cases something other "
            "than memory bandwidth sets flex's decode time (what, we did not profile)."
        )
    return markdown(text)


def flex_over_sdpa(ratios: pd.DataFrame, where: str) -> str:
    """What the flex / SDPA figure shows, from the ratio table it is drawn from: per context, the batch size where
    flex's time over dense SDPA's is largest, and the ratio at the smallest and the largest batch."""
    require(ratios, f"the kernel timing ratios of {where}", values=("batch", "context", "flex_over_sdpa"))
    parts = []
    for context, rows in ratios.sort_values("batch").groupby("context"):
        peak = int(rows.loc[rows["flex_over_sdpa"].idxmax(), "batch"])
        shown = dict.fromkeys([int(rows.iloc[0]["batch"]), peak, int(rows.iloc[-1]["batch"])])  # each batch once
        value = rows.set_index("batch")["flex_over_sdpa"]
        parts.append(
            f"{context} tokens: "
            + ", ".join(f"{'largest ' if b == peak else ''}{value[b]:.1f}x at {b}" for b in sorted(shown))
        )
    slower = int((ratios["flex_over_sdpa"] > 1).sum())
    return markdown(
        f"*What to see* ({where}, the `flex_over_sdpa` column of the table above; above 1, flex is slower): flex was "
        f"slower than dense SDPA on the same keys and values in {slower} of {len(ratios)} cases. By context, over "
        "the batch sizes (requests): " + "; ".join(parts) + ". Dense SDPA reads keys and values gathered "
        "beforehand (the gather is not timed), so this is flex against a dense reference, not against another "
        "paged kernel."
    )


def _held(row: pd.Series) -> str:
    """Which way a ratio of the summary went over every run: ``"above"`` (all above 1), ``"below"`` or ``"both"``."""
    below = int(row["below_1"])
    return "above" if below == 0 else "below" if below == int(row["ratios"]) else "both"


def kernel_bi_cost(ratios: pd.DataFrame, where: str) -> str:
    """What the attention kernel's batch-invariant options cost against vLLM's in one run (``ratios``'
    ``bi_overhead``, a time ratio: above 1 slower), named by its source ``where`` (r9 A1): the range, the cases more
    than 5% either way, the worst of them with its spread band where ``ratios`` carries one (``spread=True``)."""
    from flexfix.edition.tables.cost import BAND_DIGITS, band_side, round_sig

    if "bi_overhead" not in ratios:
        return f"{where}: no graph replay, so the kernel options' cost was not measured there"
    bi = ratios["bi_overhead"]
    said = f"{where}: {span(bi, '{:.2f}', 'x')} the time of vLLM's"
    off = bi[(bi - 1).abs() > 0.05]
    if off.empty:
        return said + ", within 5% in every case"
    slow, fast = int((off > 1).sum()), int((off < 1).sum())
    counts = [f"more than 5% slower in {slow}" if slow else "", f"more than 5% faster in {fast}" if fast else ""]
    key = (off - 1).abs().idxmax()
    r = float(bi.loc[key])
    at = ratios.reset_index().set_index(ratios.index).loc[key] if isinstance(key, tuple) else ratios.loc[key]
    case = (
        f"{plural(int(at['batch']), 'request')} x {int(at['context'])} tokens, "
        if {"batch", "context"} <= set(at.index)
        else ""
    )
    band = ""
    if {"bi_overhead_lo", "bi_overhead_hi"} <= set(ratios):
        lo, hi = float(ratios.loc[key, "bi_overhead_lo"]), float(ratios.loc[key, "bi_overhead_hi"])
        side, short = band_side(lo, hi), [f"{v:.2f}" for v in (lo, hi)]
        if side != "reaching 1" and "1.00" in short:  # a bound that would print as 1: the bands table's digits (r10 A2)
            short = [str(round_sig(v, BAND_DIGITS)) for v in (lo, hi)]
        band = f"; its spread band {short[0]}–{short[1]}x, {side}"
    return (
        f"{said}, {' and '.join(c for c in counts if c)} of {len(bi)} cases (the most: {case}"
        f"{abs(r - 1) * 100:.0f}% {'slower' if r > 1 else 'faster'}{band})"
    )


def direction(
    summary: pd.DataFrame,
    ratios: pd.DataFrame,
    where: str = "the recorded run",
    also: tuple = (),
    spread: pd.DataFrame | None = None,
    answered: str = "",
) -> str:
    """Which of the published directions these runs share (r0305 A2, B7): full over piecewise graphs (PR #36298: full
    faster), and the cost of batch invariance (the blog: slower), at the engine (``summary``,
    :func:`flexfix.edition.tables.ratio_summary`) and in the attention kernel alone (``ratios``' ``bi_overhead``, a time
    ratio: above 1 slower), each kernel run named by its source: ``ratios`` from ``where``, then each
    ``(ratios, where)`` pair of ``also`` (r9 A1: this run's result beside the recording's).  With ``spread``
    (:func:`flexfix.edition.tables.throughput_spread`), a direction held in every ratio but not beyond the spread
    between engines is called a hint, as the engine ratios' paragraph calls it (r11 A3).  ``answered`` names where the
    engine-level answer was given already (r22 D14): the engine directions are then said against the published ones
    only, in a few words, with models alike said together, and point there for the numbers."""
    said = {
        "above": "the same direction (full faster in every ratio)",
        "below": "the opposite direction (full slower in every ratio)",
        "both": "no direction (its ratios went both ways from run to run)",
    }
    models = list(summary.index.get_level_values(0).unique())
    brief = {"above": "the same direction (full faster)", "below": "the opposite direction (full slower)"}
    full, alike = [], {}
    for m in models:
        if (m, "full/piecewise") not in summary.index:
            continue
        row = summary.loc[(m, "full/piecewise")]
        hint = _held(row) != "both" and not beyond_spread(row, m, spread)[1]
        text = said[_held(row)]
        if hint:
            text = text[:-1] + "; a hint, within the between-engine spread)"
        full.append(f"{m} model: {text}")
        alike.setdefault(brief.get(_held(row), "no direction") + (", a hint only" if hint else ""), []).append(m)
    if answered:  # r22 D14: the engine answer's numbers are not said again; models alike are said together
        full = [f"{' and '.join(ms)} model{'s' if len(ms) > 1 else ''}: {text}" for text, ms in alike.items()]
    engine = {m: _held(summary.loc[(m, "BI1/BI0")]) for m in models if (m, "BI1/BI0") in summary.index}
    both = [m for m, h in engine.items() if h == "both"]
    cost = [
        f"{m} model: {'slower' if h == 'below' else 'faster'} in every ratio" for m, h in engine.items() if h != "both"
    ]
    parts = []
    if both and answered:
        models_ = f"{' and '.join(both)} model{'s' if len(both) > 1 else ''}"
        parts.append(f"at the engine, `BI1/BI0` went both ways from run to run ({models_}): unresolved")
    elif both:
        rows = [summary.loc[(m, "BI1/BI0")] for m in both]
        parts.append(
            "at the engine, `BI1/BI0` went both ways from run to run ("
            + "; ".join(
                f"{m} model: {int(r['ratios'] - r['below_1'])} of {int(r['ratios'])} above 1"
                for m, r in zip(both, rows)
            )
            + "): the engine-level cost is unresolved"
        )
    if cost:
        parts.append("at the engine, batch-invariant mode was " + "; ".join(cost))
    kernels = [(ratios, where), *also]
    if any("bi_overhead" in r for r, _ in kernels):
        parts.append(
            "the attention kernel's batch-invariant options took (a time ratio, above 1 slower), in "
            + "; in ".join(kernel_bi_cost(r, w) for r, w in kernels)
        )
    verdict = (
        "not established here, so these runs neither confirm nor contradict the published cost"
        if both or not engine
        else "measured in every ratio here"
    )
    return (
        "* **Direction.** Full vs piecewise graphs: "
        + ("; ".join(full) if full else "not measured")
        + (f" (the numbers: {answered})" if answered and full else "")
        + ". The cost of batch invariance was "
        + verdict
        + (": " + "; ".join(parts) if parts else "")
        + ". The kernel's options and batch-invariant mode as a whole are measured apart: they need not cost the same."
    )


def l2_effect(effect: pd.DataFrame) -> str:
    """:func:`flexfix.edition.tables.l2_effect` in words: how the flushed medians compare with the warm ones."""
    _numbers(effect, ["flushed_over_warm"], "the L2 effect")
    ratio = effect["flushed_over_warm"]
    slower, faster = int((ratio > 1.05).sum()), int((ratio < 0.95).sum())
    if faster > slower and slower:
        worst = effect.loc[ratio.idxmax()]
        lead = (
            f"With {plural(slower, 'exception')} (the slowest: `{worst['impl']}`, "
            f"{plural(int(worst['batch']), 'request')} of {int(worst['context'])} tokens, {ratio.max():.2f}x slower), "
            "a flushed L2 made no kernel more than 5% slower; more often it made them faster. "
        )
    elif faster > slower:
        top = float(ratio.max())
        lead = (
            f"A flushed L2 made no kernel more than 5% slower (the slowest case: {top:.2f}x its warm time); more "
            "often it made them faster. "
            if top > 1
            else "A flushed L2 made no kernel slower; more often it made them faster. "
        )
    elif slower > faster:
        lead = "A flushed L2 made the kernels slower more often than faster, as a warm cache would explain. "
    else:
        lead = "A flushed L2 changed the timings little either way. "
    text = (
        f"**Flushed over warm L2.** {lead}Over all {plural(len(ratio), 'case')} (implementation x batch x context, "
        f"the `cases`, `min`, `max` and 5% columns of the first table above, added up): {span(ratio, '{:.2f}', 'x')}; "
        f"{slower} more than 5% slower from a cold L2, {faster} more than 5% *faster*. The table's `median at` "
        "columns are medians over the batch sizes, per implementation and context: they hide the extremes, so the "
        "second table above shows them, with their implementation, batch and context: the smallest and the largest "
        "ratio and every case more than 5% slower."
    )
    if faster:
        text += (
            " A flushed repetition faster than a warm one is not what a cache explains; the flush also puts an "
            "untimed pause between repetitions, and we did not isolate why it helps. Read the warm ratios above "
            "with that in mind: neither timing is the one a model's decode step sees."
        )
    return markdown(text)


def bi_bands(timing: pd.DataFrame) -> str:
    """How many cases of ``bi_overhead`` have a band (:func:`flexfix.edition.tables.timing_ratios` with ``spread``,
    the band the figure draws) that does not reach 1, and the largest difference among them: the notebook's rule is
    that a band crossing the reference line is not told apart from it, so a ratio near 1 is not "nothing" where its
    band excludes 1 (r0305 A4).  Empty where the timings kept no quartiles."""
    from flexfix.edition.tables.cost import bands_missing_one, timing_ratios

    bands = timing_ratios(timing, spread=True)
    if "bi_overhead_lo" not in bands:
        return ""
    off = bands_missing_one(bands)  # judged on the bounds as the table prints them (r10 A2)
    if off.empty:
        return f"; every one of the {len(bands)} cases' spread bands reaches 1"
    worst = float((off["bi_overhead"] - 1).abs().max()) * 100
    return (
        f"; {len(off)} of the {len(bands)} cases have a spread band that does not reach 1, so there the options are "
        f"told apart from vLLM's, by at most {worst:.1f}% (those cases, with each band's bounds `bi_overhead_lo` "
        "and `bi_overhead_hi`, are the table printed just above: *batch-invariant cost, bands that miss 1*)"
    )
