"""Notebook 05: the spread band's rule shown on the timings it judges (r15 D5): one case whose ``bi_overhead`` band
misses one and, where there is one, one whose band reaches it, each with its ratio and bounds as the tables print
them (:func:`flexfix.edition.tables.cost.bi_band_cases`)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import markdown, plural
from flexfix.edition.tables.cost import BAND_DIGITS, band_side, bi_band_cases, round_sig, timing_ratios

__all__ = ["band_example"]


def _case(row, side: str) -> str:
    lo, hi = (round_sig(float(row[c]), BAND_DIGITS) for c in ("bi_overhead_lo", "bi_overhead_hi"))
    ratio = round_sig(float(row["bi_overhead"]), BAND_DIGITS)
    verdict = "told apart from one" if side != "reaching 1" else "not told apart from one"
    where = "reaches one" if side == "reaching 1" else "lies " + side.replace(" 1", " one")
    return (
        f"at {plural(int(row['batch']), 'request')} and context {int(row['context'])}, `bi_overhead` is {ratio}, "
        f"its band {lo} to {hi}, which {where}: {verdict}"
    )


def band_example(timing: pd.DataFrame) -> str:
    """A worked example of the band rule, from ``timing``'s own cases; empty where it kept no quartiles."""
    bands = timing_ratios(timing, spread=True)
    if not {"bi_overhead_lo", "bi_overhead_hi"} <= set(bands):
        return markdown("")
    off = bi_band_cases(timing)
    sides = [band_side(lo, hi) for lo, hi in zip(bands["bi_overhead_lo"], bands["bi_overhead_hi"])]
    reach = bands[[s == "reaching 1" for s in sides]]
    said = []
    if len(off):
        said.append(_case(off.iloc[0], off["band"].iloc[0]))
    if len(reach):
        said.append(_case(reach.iloc[0], "reaching 1"))
    if not said:
        return markdown("")
    return markdown("*The band rule on these timings*: " + "; and ".join(said) + ".")


def band_example_recorded(data_dir) -> str:
    """The worked example of the band rule right after the rule (r16 D7), on the recorded GPU timings (``data_dir``'s
    ``decode_timing``, shown in full in the section *The kernel timings recorded on an H100*), named as such."""
    from flexfix.edition import schemas, tables

    timing, prov = schemas.recorded(data_dir, "decode_timing", schemas.DECODE_TIMING)
    said = str(band_example(timing))
    if not said.strip():
        return markdown("")
    return markdown(
        said.replace(
            "*The band rule on these timings*:",
            f"*The band rule at work*, on {tables.recorded_where(prov)} (its tables are further down, under "
            "*The kernel timings recorded on an H100*):",
        )
    )


def recorded_figure(where: str, here: str, again: bool = False) -> str:
    """A caption directly above a figure of the recorded kernel run (r16 D6): which run it draws (``where``, e.g.
    "the recorded run on NVIDIA H100 ...") and that it is not ``here``, this run, whose own values are in its table
    further up.  ``again``: a figure after the first of the same run, whose caption says only that (r20 D9: the
    whole disclaimer stood above each of three figures in a row)."""
    if again:
        return markdown(f"*The figure below draws the same recorded run* ({where}).")
    return markdown(
        f"*The figure below, and the two after it, draw {where}, not {here}*: this run's own values of each ratio, "
        "where it measured them, are in its table further up, not drawn."
    )
