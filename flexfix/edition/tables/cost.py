"""Cost (notebook 05): decode-attention timing ratios and engine throughput."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import require_numbers

__all__ = [
    "timing_ratios",
    "timing_parameters",
    "significant",
    "l2_effect_summary",
    "l2_effect",
    "throughput_runs",
    "throughput_ratios",
    "throughput_table",
    "ratio_summary",
    "throughput_spread",
    "timing_spread",
]


def _with_l2(timing: pd.DataFrame) -> pd.DataFrame:
    """Timings with their ``l2`` column (files recorded before it existed timed with a warm L2 only)."""
    return timing if "l2" in timing else timing.assign(l2="warm")


def timing_ratios(timing: pd.DataFrame, l2: str = "warm", *, spread: bool = False) -> pd.DataFrame:
    """Per batch x context: the ratios the notebook plots, from the timings taken with a ``"warm"`` or a
    ``"flushed"`` L2 cache (:func:`flexfix.measure.timing.time_fn`); on a GPU also the eager and replay medians of
    flex (vLLM options) in ms and their difference, what a replay saves per call.

    ``spread``: also, for every ratio ``r``, ``r_lo`` and ``r_hi``, how far the repetitions spread it: the ratio
    taken from the quartiles, the wide way round (numerator's first quartile over the denominator's third, and the
    other way), so that the band holds the middle half of either side's repetitions (timings that kept no
    quartiles give none)."""
    timing = _with_l2(timing)
    if l2 not in set(timing["l2"]):
        raise ValueError(f"no timings with l2={l2!r} here (have {sorted(set(timing['l2']))})")
    timing = timing[timing["l2"] == l2]
    wide = timing.pivot_table(index=["batch", "context"], columns="impl", values="median_ms")
    frac = timing.pivot_table(index=["batch", "context"], columns="impl", values="fraction_of_copy_bw")
    out = pd.DataFrame(index=wide.index)
    if "flex vllm graph" in wide:
        out["graph_speedup"] = wide["flex vllm eager"] / wide["flex vllm graph"]
        # the absolute times behind it: what a replay saves per call is the difference (host work), in ms
        out["eager_ms"] = wide["flex vllm eager"]
        out["replay_ms"] = wide["flex vllm graph"]
        out["replay_saves_ms"] = wide["flex vllm eager"] - wide["flex vllm graph"]
        out["bi_overhead"] = wide["flex batch_invariant graph"] / wide["flex vllm graph"]
        out["flex_over_sdpa"] = wide["flex vllm graph"] / wide["sdpa dense"]
        out["flex_bw_fraction"] = frac["flex vllm graph"]
    else:  # CPU: eager flex only
        out["flex_over_sdpa"] = wide["flex pytorch eager"] / wide["sdpa dense"]
        out["flex_bw_fraction"] = frac["flex pytorch eager"]
    out["sdpa_bw_fraction"] = frac["sdpa dense"]
    if spread and {"q25_ms", "q75_ms"} <= set(timing):
        for q in QS:
            require_numbers(timing[q], "the kernel timings", q)  # a missing quartile is refused, never a gap
        _add_bands(out, wide, *(timing.pivot_table(index=["batch", "context"], columns="impl", values=q) for q in QS))
    return out.reset_index()


QS = ("q25_ms", "q75_ms")
# each ratio of timing_ratios as (numerator, denominator) implementations, a time over a time; a bandwidth fraction
# (bytes over a time) as (None, its implementation): its band is the fraction at the denominator's quartiles
_RATIO_PARTS = {
    "graph_speedup": ("flex vllm eager", "flex vllm graph"),
    "bi_overhead": ("flex batch_invariant graph", "flex vllm graph"),
    "flex_over_sdpa": ("flex vllm graph", "sdpa dense"),
    "flex_bw_fraction": (None, "flex vllm graph"),
    "sdpa_bw_fraction": (None, "sdpa dense"),
}


def _add_bands(out: pd.DataFrame, median: pd.DataFrame, q25: pd.DataFrame, q75: pd.DataFrame) -> None:
    """``r_lo`` and ``r_hi`` of every ratio ``r`` in ``out``: see :func:`timing_ratios`."""
    eager = "flex pytorch eager"  # the CPU's only flex
    for name, (num, den) in _RATIO_PARTS.items():
        if name not in out:
            continue
        num, den = (eager if c not in median and c is not None and eager in median else c for c in (num, den))
        if num is None:  # bytes / time: a slow repetition lowers the fraction
            lo, hi = out[name] * median[den] / q75[den], out[name] * median[den] / q25[den]
        else:
            lo, hi = q25[num] / q75[den], q75[num] / q25[den]
        out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi


def timing_parameters(prov: dict, timing: pd.DataFrame) -> str:
    """What a recorded kernel timing was run with, for a notebook to print: the parameters its provenance recorded
    (batch sizes, contexts, head layout) and the timed calls per case from its ``reps`` column."""
    params = prov.get("parameters") or {}
    shown = ", ".join(f"{k} {v}" for k, v in params.items()) or "none recorded"
    reps = (
        sorted({int(r) for r in require_numbers(timing["reps"], "the kernel timings", "reps")})
        if "reps" in timing
        else []
    )
    calls = "/".join(map(str, reps)) if reps else "not recorded"
    l2 = "warm and flushed L2" if "l2" in timing and "flushed" in set(timing["l2"]) else "warm L2 only"
    warmup = "" if "warmup" in params else "; untimed warm-up calls: not recorded"
    return f"  parameters: {shown}; timed calls per case (REPS): {calls} ({l2}){warmup}"


def significant(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``table`` with every float column rounded to ``digits`` significant digits (not decimals): a small fraction
    such as 0.00021 stays readable where rounding to decimals would show 0.000.  A value from 0.1 to 10 (a ratio near
    1) keeps three decimals at least: 1.0149 shows as 1.015, never as 1.01 padded to 1.010 by its column; a value
    from 10 on keeps one decimal at least, as the sentences print it: 406.5 shows as 406.5, never as 406.0."""
    floats = table.select_dtypes("float").columns
    return table.assign(**{c: table[c].map(lambda v: round_sig(v, digits)) for c in floats})


def round_sig(v, digits: int = 3):
    """One value as :func:`significant` prints it (anything but a finite non-zero float unchanged)."""
    import math

    if not isinstance(v, float) or not math.isfinite(v) or v == 0:
        return v
    decimals = digits - 1 - math.floor(math.log10(abs(v)))
    # r11 A2: from 10 on, one decimal at least, as the sentences print a ratio (406.5, never 406.0 for 406.5)
    return round(v, max(decimals, 3) if 0.1 <= abs(v) < 10 else max(decimals, 1) if abs(v) >= 10 else decimals)


BAND_DIGITS = 5  # the significant digits a spread band's bounds are printed with, in tables and sentences


def band_side(lo: float, hi: float) -> str:
    """Where a spread band lies against 1, judged on its bounds as printed (:data:`BAND_DIGITS`), so that a bound
    that prints as 1 counts as reaching 1 (r10 A2): ``"wholly above 1"``, ``"wholly below 1"`` or ``"reaching 1"``."""
    lo, hi = round_sig(float(lo), BAND_DIGITS), round_sig(float(hi), BAND_DIGITS)
    return "wholly above 1" if lo > 1 else "wholly below 1" if hi < 1 else "reaching 1"


def bands_missing_one(bands: pd.DataFrame, name: str = "bi_overhead") -> pd.DataFrame:
    """The rows of ``bands`` (:func:`timing_ratios` with ``spread``) whose ``name`` band misses 1 as printed."""
    side = [band_side(lo, hi) for lo, hi in zip(bands[f"{name}_lo"], bands[f"{name}_hi"])]
    return bands[[s != "reaching 1" for s in side]]


def l2_effect_summary(timing: pd.DataFrame) -> pd.DataFrame:
    """:func:`l2_effect` in one screen: per implementation (rows) and context (columns ``median at <context>``), the
    median over the batch sizes of flushed / warm (above 1: a cold L2 is slower; the column names say flushed/warm);
    then over each implementation's
    cases (batch x context) their number, the smallest and largest ratio and how many were more than 5% slower or
    faster: the numbers :func:`flexfix.edition.narrative.cost.l2_effect` adds up over all the cases.  Empty where
    only warm timings exist."""
    effect = l2_effect(timing)
    if effect.empty:
        return effect
    out = effect.pivot_table(index="impl", columns="context", values="flushed_over_warm", aggfunc="median")
    out.columns = [f"flushed/warm, median at {c}" for c in out.columns]  # above 1: slower with a cold L2
    ratio = effect.groupby("impl")["flushed_over_warm"]
    out["cases"] = ratio.size()
    out["min"], out["max"] = ratio.min(), ratio.max()
    out["slower >5%"] = ratio.apply(lambda r: int((r > 1.05).sum()))
    out["faster >5%"] = ratio.apply(lambda r: int((r < 0.95).sum()))
    return out


def l2_extremes(timing: pd.DataFrame) -> pd.DataFrame:
    """The cases of :func:`l2_effect` its sentence names (r10 B1): the smallest and the largest flushed / warm ratio,
    and every case more than 5% slower, each with its implementation, batch and context (``case``: why it is shown).
    Empty where only warm timings exist."""
    effect = l2_effect(timing)
    if effect.empty:
        return effect
    ratio = effect["flushed_over_warm"]
    why = pd.Series("", index=effect.index, dtype=object)
    why[ratio > 1.05] = "more than 5% slower"
    why[ratio.idxmin()] = "smallest ratio"
    why[ratio.idxmax()] = "largest ratio" + (", more than 5% slower" if ratio.max() > 1.05 else "")
    shown = effect.assign(case=why)[why != ""].sort_values("flushed_over_warm")
    return significant(shown.reset_index(drop=True))


def l2_effect(timing: pd.DataFrame) -> pd.DataFrame:
    """Per implementation x batch x context: the median with a flushed L2 over the median with a warm one (how
    much a warm cache flattered the repetitions), and the KV bytes of the case (a case smaller than the L2 is the
    one to expect it for).  Empty where only warm timings were taken (CPU, files recorded before)."""
    timing = _with_l2(timing)
    wide = timing.pivot_table(index=["impl", "batch", "context", "kv_bytes"], columns="l2", values="median_ms")
    if "flushed" not in wide:
        return pd.DataFrame(columns=["impl", "batch", "context", "kv_MB", "warm_ms", "flushed_ms", "flushed_over_warm"])
    out = wide.reset_index()
    return pd.DataFrame(
        {
            "impl": out["impl"],
            "batch": out["batch"],
            "context": out["context"],
            "kv_MB": out["kv_bytes"] / 1e6,
            "warm_ms": out["warm"],
            "flushed_ms": out["flushed"],
            "flushed_over_warm": out["flushed"] / out["warm"],
        }
    )


def _runs(rows: pd.DataFrame) -> pd.DataFrame:
    """Name each model's recorded files "run 1", "run 2", ... in the order given (one file = one command)."""
    rows = rows.assign(BI=rows["batch_invariant"].astype(int))
    if "source" not in rows:
        return rows.assign(run="run 1")
    names = {
        (m, src): f"run {i + 1}"
        for m, part in rows.groupby("model", sort=False)
        for i, src in enumerate(part["source"].unique())
    }
    return rows.assign(run=[names[(m, src)] for m, src in zip(rows["model"], rows["source"])])


def throughput_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """Which recorded file is which model's "run k" (:func:`throughput_table`), with what it timed: its engines, the
    request counts each engine was timed at, the timed cases (one per engine and request count), the timed
    repetitions of a case, in how many cases the slowest repetition was the first, and how many that would be by
    chance alone (one in the number of repetitions, summed over the cases); ``order``: its engines in the order they
    were started, first to last."""
    rows = _runs(rows)
    rows = rows.assign(step=[f"{str(g).replace(' graphs', '')} BI={b}" for g, b in zip(rows["graphs"], rows["BI"])])
    rows = rows.assign(
        reps=[len(s) for s in rows["seconds"]],
        slowest_first=[int(max(range(len(s)), key=lambda i: s[i]) == 0) if len(s) > 1 else 0 for s in rows["seconds"]],
        by_chance=[1 / len(s) if len(s) > 1 else 0.0 for s in rows["seconds"]],
    )
    out = (
        rows.groupby(["model", "run", "source"], sort=False)
        .agg(
            engines=("engine", "nunique"),
            request_counts=("requests", "nunique"),
            cases=("requests", "size"),
            timed_repetitions=("reps", lambda r: "/".join(str(v) for v in sorted(set(r)))),
            slowest_first=("slowest_first", "sum"),
            by_chance=("by_chance", "sum"),
            order=("step", lambda v: ", ".join(dict.fromkeys(v))),
        )
        .reset_index()
    )
    return out


def throughput_ratios(rows: pd.DataFrame) -> pd.DataFrame:
    """Every ratio of notebook 05 in long form, each taken inside one run (one command, engines back
    to back): graph modes against each other at fixed BI, and BI=1 over BI=0 at a fixed graph mode.
    A run that lacks one side gives no ratio."""
    rows = _runs(rows)
    wide = rows.pivot_table(index=["model", "requests", "BI", "run"], columns="graphs", values="tokens_per_second")
    parts = []
    for num, den in (("full", "eager"), ("piecewise", "eager"), ("full", "piecewise")):
        if num in wide and den in wide:
            parts.append(
                (wide[num] / wide[den])
                .rename("value")
                .reset_index()
                .assign(ratio=f"{num}/{den}", at=lambda t: "BI=" + t["BI"].astype(str))
                .drop(columns="BI")
            )
    per_bi = rows.pivot_table(index=["model", "requests", "graphs", "run"], columns="BI", values="tokens_per_second")
    if {0, 1} <= set(per_bi.columns):
        parts.append(
            (per_bi[1] / per_bi[0])
            .rename("value")
            .reset_index()
            .assign(ratio="BI1/BI0")
            .rename(columns={"graphs": "at"})
        )
    columns = ["model", "requests", "at", "run", "ratio", "value"]
    return pd.concat(parts, ignore_index=True)[columns].dropna() if parts else pd.DataFrame(columns=columns)


def throughput_table(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`throughput_ratios` for reading: graph-mode ratios per model x N x BI, and BI1/BI0 per
    model x N x graph mode, one column per run so their agreement shows."""
    long = throughput_ratios(rows)

    def view(part):
        return part.pivot_table(index=["model", "requests", "at"], columns=["ratio", "run"], values="value")

    return view(long[long["ratio"] != "BI1/BI0"]), view(long[long["ratio"] == "BI1/BI0"])


def with_run_files(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``table`` (:func:`throughput_table`) with each ``run k`` column header naming its files (r10 D6): a run is
    numbered within its model, so the header names the file of each model, from ``runs``
    (:func:`throughput_runs`), as the runs table, the provenance lines and the figure name it (r14 D6):
    ``run 3 (tiny: engine_sweep_tiny_full; ...)``."""
    files = {
        run: "; ".join(f"{m}: {src}" for m, src in zip(part["model"], part["source"]))
        for run, part in runs.sort_values("model").groupby("run", sort=False)
    }
    return table.rename(columns={run: f"{run} ({names})" for run, names in files.items()}, level="run")


def ratio_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model and ratio, over every N, setting and run: how many ratios, the lowest, the median,
    the highest, and how many were below 1."""
    groups = throughput_ratios(rows).groupby(["model", "ratio"])["value"]
    return groups.agg(
        ratios="count", lowest="min", median="median", highest="max", below_1=lambda v: int((v < 1).sum())
    )


def throughput_spread(rows: pd.DataFrame) -> pd.DataFrame:
    """How far one configuration's tokens/s moves: between engines (separate runs of the same
    configuration: highest over lowest median) and within one engine (its fastest over its slowest
    timed repetition, the worst engine shown)."""
    rows = rows.assign(BI=rows["batch_invariant"].astype(int), within=[max(s) / min(s) for s in rows["seconds"]])
    groups = rows.groupby(["model", "graphs", "BI", "requests"])
    out = groups["tokens_per_second"].agg(engines="count", lowest="min", highest="max")
    out["between_engines"] = out["highest"] / out["lowest"]
    out["within_engine"] = groups["within"].max()
    return out


def timing_spread(timing: pd.DataFrame, largest: int = 5) -> pd.DataFrame:
    """How far the timed calls of one case spread around their median (warm L2): the interquartile range over the
    median, in %, for the ``largest`` cases by that spread, then a last row with its median over every case (the
    numbers :func:`flexfix.edition.narrative.cost.kernel_timing` states).  Empty where no quartiles were kept."""
    if not {"q25_ms", "q75_ms"} <= set(timing):
        return pd.DataFrame()
    warm = _with_l2(timing)
    warm = warm[warm["l2"].fillna("warm") == "warm"]
    out = warm[["impl", "batch", "context", "median_ms", "q25_ms", "q75_ms"]].assign(
        spread_pct=(warm["q75_ms"] - warm["q25_ms"]) / warm["median_ms"] * 100
    )
    top = out.sort_values("spread_pct", ascending=False).head(largest).astype({"batch": object, "context": object})
    every = {
        "impl": f"median over all {len(out)} cases",
        "batch": "",
        "context": "",
        **{column: "" for column in ("median_ms", "q25_ms", "q75_ms")},  # a median of spreads only: no times to show
        "spread_pct": out["spread_pct"].median(),
    }
    top = top.astype({column: object for column in ("median_ms", "q25_ms", "q75_ms")})
    return pd.concat([top, pd.DataFrame([every])], ignore_index=True).round({"spread_pct": 1})


def bi_band_cases(timing: pd.DataFrame) -> pd.DataFrame:
    """The cases (batch x context) whose ``bi_overhead`` spread band (:func:`timing_ratios` with ``spread``) does
    not reach 1, with the ratio and its band: the cases the *In short* line counts as told apart from vLLM's options
    (r0305 B5).  Empty where the timings have no graph replay or kept no quartiles."""
    bands = timing_ratios(timing, spread=True)
    columns = ["batch", "context", "bi_overhead", "bi_overhead_lo", "bi_overhead_hi"]
    if not set(columns) <= set(bands):
        return pd.DataFrame(columns=columns)
    off = bands_missing_one(bands)[columns].reset_index(drop=True)
    off["band"] = [band_side(lo, hi) for lo, hi in zip(off["bi_overhead_lo"], off["bi_overhead_hi"])]
    return significant(off, digits=BAND_DIGITS)  # the precision band_side judged the bounds at
