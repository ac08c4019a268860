"""What the timings measured, in words (notebook 05): kernel ratios, engine noise, engine ratios, anchors."""

from __future__ import annotations

import pandas as pd

from flexfix.edition import anchors
from flexfix.edition.checks import DataError, require, require_numbers
from flexfix.edition.narrative import cost_l2, cost_replay, listing, markdown, plural, span
from flexfix.edition.narrative.cost_bi import bi_verdict
from flexfix.edition.narrative.cost_devices import (
    _numbers,
    bi_bands,
    compare_runs,
    direction,
    flex_over_sdpa,
    kernel_bi_cost,
    l2_effect,
)
from flexfix.edition.narrative.cost_ratios import _check_summary, _ratio_line, engine_ratios
from flexfix.edition.narrative.cost_runs import engine_commits, engine_workload

__all__ = [
    "TIMING_COLUMNS",
    "THROUGHPUT_COLUMNS",
    "kernel_timing",
    "bi_verdict",
    "compare_runs",
    "flex_over_sdpa",
    "engine_workload",
    "engine_commits",
    "direction",
    "sm_count",
    "recorded_heads",
    "l2_effect",
    "engine_noise",
    "engine_ratios",
    "published",
]

# What the sentences and figures read (a notebook reads its recorded files with them): kernel timings, and the
# throughput records of an engine sweep (flexfix.measure.engine_sweep.throughput_rows).
TIMING_COLUMNS = ("device", "impl", "batch", "context", "median_ms", "kv_bytes", "copy_GBps", "fraction_of_copy_bw")
THROUGHPUT_COLUMNS = ("model", "graphs", "batch_invariant", "requests", "tokens_per_second", "seconds")


def _check_ratios(ratios: pd.DataFrame, what: str) -> None:
    _numbers(ratios, ["batch", "context", "flex_over_sdpa", "flex_bw_fraction", "sdpa_bw_fraction"], what)
    if "graph_speedup" in ratios:
        _numbers(ratios, ["graph_speedup", "bi_overhead"], what)


def _host_ms(ratios: pd.DataFrame) -> list[float]:
    """Per case, eager minus graph-replay median (the ``replay_saves_ms`` column of the ratio table the reader
    sees): what a replay saves on the host per call."""
    return list(ratios["replay_saves_ms"]) if "replay_saves_ms" in ratios else []


def kernel_timing(
    timing: pd.DataFrame, ratios: pd.DataFrame, where: str, heads: int | None = None, sms: int | None = None
) -> str:
    """Graph replay vs eager launch, batch-invariant vs vLLM options, and the KV read rate against the copy
    bandwidth, from one timing run (``timing``: :func:`flexfix.measure.timing.decode_sweep`; ``ratios``:
    :func:`flexfix.edition.tables.timing_ratios` of it).  ``heads`` (query heads) and ``sms`` (the GPU's SM count),
    where the run printed them, set the rise of the read rate against the programs the query blocks make."""
    what = f"the kernel timings of {where}"
    require(timing, what, values=("device", "impl", "batch", "context", "median_ms"))
    _numbers(timing, ["median_ms"], what)
    _check_ratios(ratios, what)
    if "graph_speedup" not in ratios and (timing["device"] == "cuda").any():
        raise DataError(f"{what}: GPU timings without the graph-replay rows: refusing to describe them as a CPU run")
    spread = _spread(timing, what)
    if "graph_speedup" not in ratios:
        return markdown(
            f"**What {where} measured:** flex (eager path) took {span(ratios['flex_over_sdpa'], '{:.1f}', 'x')} the "
            "time of dense SDPA on the same keys and values. No CUDA graphs on CPU: graph and batch-invariant "
            "ratios come from the GPU tables." + (f" {spread[:1].upper()}{spread[1:]}" if spread else "")
        )
    contexts = sorted(ratios["context"].unique())
    by_context = "; ".join(
        f"{span(ratios.loc[ratios.context == c, 'graph_speedup'], '{:.2f}', 'x')} at {c} tokens" for c in contexts
    )
    smallest = ratios.sort_values(["batch", "context"]).iloc[0]
    host = _host_ms(ratios)
    graph = (
        f"* **Graph replay vs eager launch**: {smallest['graph_speedup']:.1f}x faster at "
        f"{plural(int(smallest['batch']), 'request')} "
        f"of {int(smallest['context'])} tokens; by context, over the batch sizes: {by_context}."
    )
    if host:
        graph += (
            f" What a replay saves per call (`replay_saves_ms`, eager minus replay median): "
            f"{span(host, '{:.2f}', ' ms')}."
        )
    bi = ratios["bi_overhead"]
    lines = [
        graph,
        f"* **Batch-invariant options vs vLLM's** (graph replay): {span(bi, '{:.2f}', 'x')} the time "
        f"({int((bi > 1.05).sum())} of {len(bi)} cases more than 5% slower, {int((bi < 0.95).sum())} more than 5% "
        "faster).",
    ]
    big_batch, big_context = _larger_half(ratios["batch"]), _larger_half(ratios["context"])
    big = ratios[(ratios.batch >= big_batch) & (ratios.context >= big_context)]
    if len(big):
        per_batch = ratios.groupby("batch")["flex_bw_fraction"].median()
        doublings = [(a, b) for a, b in zip(per_batch.index[:-1], per_batch.index[1:]) if b == 2 * a]
        steps = [  # the doublings inside one query block; those that double the query blocks: _query_block_steps
            f"{per_batch[b] / per_batch[a]:.2f}x from {a} to {b}" for a, b in doublings if _blocks(b) == _blocks(a)
        ]
        lines.append(
            f"* **KV read rate against the copy bandwidth** at batch >= {big_batch} and context >= {big_context} "
            f"(the larger half of the measured batch sizes and contexts): flex "
            f"{span(big['flex_bw_fraction'] * 100, '{:.0f}', '%')}, dense SDPA on the same bytes "
            f"{span(big['sdpa_bw_fraction'] * 100, '{:.0f}', '%')}. Median over contexts, by batch size: "
            + listing([f"{per_batch[b] * 100:.1f}% at {b}" for b in per_batch.index])
            + (f"; doubling the batch inside one query block multiplied it by {listing(steps)}." if steps else ".")
            + _query_block_steps(per_batch, doublings, heads, sms)
        )
    best = ratios.loc[ratios["graph_speedup"].idxmax()]
    parts = [  # r0305 D9: a short bullet each, its conclusion first (bold), then the numbers behind it
        f"{cost_replay.headline(ratios)}: the largest speed-up, "
        f"{best['graph_speedup']:.1f}x, at {plural(int(best['batch']), 'request')} of {int(best['context'])} tokens; "
        f"{span(ratios.loc[ratios.context == contexts[-1], 'graph_speedup'], '{:.2f}', 'x')} at {contexts[-1]} "
        "tokens." + cost_l2.flushed_clause(timing),
        f"**vLLM's batch-invariant kernel options were {bi_verdict(bi)}**: they took {span(bi, '{:.2f}', 'x')} "
        "the time of vLLM's options" + bi_bands(timing) + ".",
    ]
    if len(big):
        flex_hi, sdpa_lo = big["flex_bw_fraction"].max(), big["sdpa_bw_fraction"].min()
        if flex_hi < 0.5 <= sdpa_lo:
            parts.append(
                "**At large batch and context flex reads the keys and values at a small fraction of the copy "
                "bandwidth**, dense SDPA on the same bytes close to it."
            )
    if spread:
        lines.append(f"* **Spread**: {spread}")
    lead = "In short:\n" + "\n".join(f"- {p}" for p in parts)  # "-": a list of its own, not the evidence's
    return markdown(f"**What {where} measured** (warm L2, medians)", lead, "\n".join(lines))


def sm_count(device: str) -> int | None:
    """The SM count of this run's GPU (what :func:`flexfix.measure.timing.method_line` prints), None on the CPU."""
    if device != "cuda":
        return None
    import torch

    return int(torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count)


def recorded_heads(prov: dict) -> int | None:
    """The query heads a recorded timing ran with, read from the ``case`` its provenance printed
    (``DecodeCase(num_heads=32, ...)``); None where it recorded none."""
    from flexfix.edition.printed import printed_int

    return printed_int((prov.get("parameters") or {}).get("case"), "num_heads")


def _larger_half(values: pd.Series) -> int:
    """The smallest of the larger half of the measured values (of 1, 8, 16, 32, 64, 128: 32): a threshold that is a
    measured size."""
    measured = sorted(int(v) for v in values.unique())
    return measured[len(measured) // 2]


def _query_block_steps(
    per_batch: pd.Series, doublings: list[tuple[int, int]], heads: int | None = None, sms: int | None = None
) -> str:
    """Where the batch doubles the number of query blocks (``Q_BLOCK`` requests each), does the read rate double
    too?  The steps where it rose less than the query blocks doubled, said; with the query heads (``heads``) and the
    GPU's SM count (``sms``, both printed with the run), the programs that one program per query block and query head
    would give, against the SMs: where they already about fill the SMs, more of them cannot add as much."""
    from flexfix.mechanism.paged import Q_BLOCK, cdiv

    more = [(a, b) for a, b in doublings if cdiv(b, Q_BLOCK) == 2 * cdiv(a, Q_BLOCK)]
    if not more:
        return ""
    short = [(a, b) for a, b in more if per_batch[b] / per_batch[a] < 1.8]
    said = f" The query blocks ({Q_BLOCK} requests each) double at {listing([f'{a} to {b}' for a, b in more])}"
    if not short:
        return said + ", and the rate about doubles with them."
    rose = listing([f"{per_batch[b] / per_batch[a]:.2f}x ({a} to {b})" for a, b in more])
    text = (
        f"{said}; there the rate rose by {rose}: less than the query blocks doubled at "
        + listing([f"{a} to {b}" for a, b in short])
        + "."
    )
    if not heads:
        return text
    programs = {n: cdiv(n, Q_BLOCK) * heads for pair in more for n in pair}
    text += f" One program per query block and query head ({heads} query heads, printed above) would make " + listing(
        [f"{programs[n]} programs at {n} requests" for n in sorted(programs)]
    )
    if not sms:
        return text + (
            "; the recording did not keep its GPU's SM count (streaming multiprocessors, the GPU's compute units, "
            "each running programs of a kernel), so they are not compared with it here."
        )
    fill = [a for a, b in short if programs[a] >= 0.9 * sms]
    text += f", against this GPU's {sms} SMs (streaming multiprocessors, its compute units; printed above)"
    if fill and len(fill) == len(short):
        text += (
            ": at "
            + listing([f"{a} requests" for a in fill])
            + " the programs already about fill the SMs (one possible reason the rise slowed there, which we did not "
            "test: the explanation under *Bandwidth* below)"
        )
    return text + "."


def _blocks(batch: int) -> int:
    from flexfix.mechanism.paged import Q_BLOCK, cdiv

    return cdiv(int(batch), Q_BLOCK)


def _spread(timing: pd.DataFrame, what: str) -> str:
    """How far the timed calls of one case spread around their median: the interquartile range over the median,
    over every implementation and case (warm L2); empty for timings that kept no quartiles."""
    if not {"q25_ms", "q75_ms"} <= set(timing):
        return ""
    warm = timing[timing["l2"].fillna("warm") == "warm"] if "l2" in timing else timing
    _numbers(warm, ["q25_ms", "q75_ms"], what)
    iqr = (warm["q75_ms"] - warm["q25_ms"]) / warm["median_ms"] * 100
    worst = warm.loc[iqr.idxmax()]
    return (
        f"the timed calls of one case spread (interquartile range over the median) by {iqr.median():.1f}% in the "
        f"median of all {plural(len(iqr), 'case')}, at most {iqr.max():.0f}% (`{worst['impl']}`, "
        f"{plural(int(worst['batch']), 'request')} of {int(worst['context'])} tokens): the spread table shows the "
        "largest cases and that median."
    )


def engine_noise(speed: pd.DataFrame, spread: pd.DataFrame, runs: pd.DataFrame) -> str:
    """How far one configuration's throughput moved between engines and inside one engine, and how often a timed
    case's slowest repetition was its first against chance, counted from ``runs``
    (:func:`flexfix.edition.tables.throughput_runs`, the table the reader sees) and checked against ``speed``
    (:func:`~flexfix.measure.engine_sweep.throughput_rows`)."""
    require(speed, "the engine throughputs", values=("seconds",))
    for seconds in speed["seconds"]:
        if not isinstance(seconds, list) or not seconds:
            raise DataError(f"the engine throughputs: an engine's timed repetitions are {seconds!r}, not a list")
        require_numbers(seconds, "the engine throughputs", "a repetition's seconds")
    _numbers(spread, ["between_engines", "within_engine"], "the throughput spread")
    _numbers(runs, ["engines", "request_counts", "cases", "slowest_first", "by_chance"], "the runs table")
    cases, engines, first = int(runs["cases"].sum()), int(runs["engines"].sum()), int(runs["slowest_first"].sum())
    if cases != len(speed):
        raise DataError(f"the runs table counts {cases} timed cases and the throughputs hold {len(speed)}")
    per_model = spread.groupby(level="model")[["between_engines", "within_engine"]].max()
    worst = per_model.max()
    lead = (  # r0305 D9: the conclusion first, then the two spreads it rests on, a short bullet each
        "In short:\n- **A difference between configurations smaller than these spreads is not told apart from "
        "them.**\n"
        f"- Between engines, one configuration's throughput differed by up to {worst['between_engines']:.2f}x (runs "
        "on different commits and at different times: the commits above).\n"
        f"- Inside one engine, by up to {worst['within_engine']:.2f}x."
    )
    lines = [
        f"* {model}: engines of one configuration differed by up to {row.between_engines:.2f}x between runs; inside "
        f"one engine the fastest repetition beat the slowest by up to {row.within_engine:.2f}x."
        for model, row in per_model.iterrows()
    ]
    counts = " and ".join(sorted({str(int(n)) for n in runs["request_counts"]}))
    chance, sd = float(runs["by_chance"].sum()), _chance_sd(speed)
    lines.append(
        f"* **Warm-up**: {_warmup_meaning(first, chance, sd)}. The slowest timed repetition was the first in "
        f"{first} of {cases} timed cases ({engines} engines, each timed at {counts} request counts: the runs table's "
        f"`cases` and `slowest_first`); by chance alone about {chance:.1f} (one in the number of repetitions of each "
        f"case, summed: `by_chance`), give or take about {sd:.1f} (one standard deviation of that count)."
    )
    return markdown("**How far one number moves**", lead, "\n".join(lines))


def _chance_sd(speed: pd.DataFrame) -> float:
    """How far chance alone scatters the count of cases whose slowest repetition is the first: the standard
    deviation, the square root of the summed p(1 - p), p = 1 / repetitions of each case."""
    return sum((1 / len(s)) * (1 - 1 / len(s)) for s in speed["seconds"]) ** 0.5


def _warmup_meaning(first: int, chance: float, sd: float) -> str:
    """Whether the first timed repetition was the slowest more often than chance explains, in words; the warm-up
    named as this code's setting, which the recordings do not keep (r20 B2)."""
    from flexfix.measure.engine_sweep import THROUGHPUT_WARMUPS

    warm = f"this code's untimed warm-up ({THROUGHPUT_WARMUPS} per case; the recordings do not keep the count)"
    z = (first - chance) / sd if sd else 0.0
    if z >= 2:
        return f"more often than chance explains, the first timed repetition was the slowest: {warm} was too little"
    if z >= 1:
        return f"a hint, not proof, that {warm} was not always enough"
    return f"no sign that {warm} was too little: the first repetition was the slowest as chance gives"


def published(
    summary: pd.DataFrame,
    ratios: pd.DataFrame,
    where: str,
    here: tuple[pd.DataFrame, str] | None = None,
    spread: pd.DataFrame | None = None,
    answered: str = "",
) -> str:
    """Our ratios next to the published anchors (:mod:`flexfix.edition.anchors`), other setups, and which directions
    match theirs (:func:`~flexfix.edition.narrative.cost_devices.direction`).
    ``where`` names the kernel timing ``ratios`` come from (a recording, or this run), said beside its ranges;
    ``here``, ``(ratios, where)`` of this run, is said beside it for the kernel options' cost (r9 A1); ``spread``
    (:func:`flexfix.edition.tables.throughput_spread`) marks a direction within the between-engine spread a hint;
    ``answered``: where the engine-level answer was given (r22 D14), which the direction line then points to."""
    _check_summary(summary, "the throughput ratios")
    _check_ratios(ratios, "the kernel timing ratios")
    pr = anchors.PR_36298["latency_s"]
    full, piece, fi = pr["flex, full CUDA graphs"], pr["flex, piecewise CUDA graphs"], pr["FlashInfer"]

    def ours(model: str, ratio: str) -> str:
        return _ratio_line(summary.loc[(model, ratio)]) if (model, ratio) in summary.index else "not measured"

    speedups = span(ratios["graph_speedup"], "{:.2f}", "x") if "graph_speedup" in ratios else "not measured"
    bi_kernel = span(ratios["bi_overhead"], "{:.2f}", "x") if "bi_overhead" in ratios else "not measured"
    return markdown(
        f"* **Full vs piecewise graphs.** PR #36298: flex with full CUDA graphs {piece / full:.2f}x faster than "
        f"with piecewise graphs ({piece} s -> {full} s latency), still {full / fi:.2f}x slower than FlashInfer "
        f"({anchors.PR_36298['setup']}). Ours, variance model, full over piecewise: "
        f"{ours('variance', 'full/piecewise')}; "
        f"full over eager: {ours('variance', 'full/eager')}; the attention kernel alone ({where}), eager launch time "
        f"over replay time (the replay's speed-up): {speedups}.",
        f"* **What batch invariance costs.** {anchors.TORCHTITAN_BITWISE_RL['source'].split(' (')[0]}: "
        f"{anchors.TORCHTITAN_BITWISE_RL['claim']} ({anchors.TORCHTITAN_BITWISE_RL['setup']}; training and "
        "generation). Ours, inference only, a throughput ratio: output tokens per second with "
        "`VLLM_BATCH_INVARIANT=1` over `=0` (below 1: batch invariance slower): "
        f"variance model {ours('variance', 'BI1/BI0')}; tiny model {ours('tiny', 'BI1/BI0')}. The attention kernel "
        f"alone ({where}), a time ratio and so the other way round: its batch-invariant options' time over vLLM's "
        f"options' (above 1: batch invariance slower): {bi_kernel}"
        + (f"; in {kernel_bi_cost(*here)}" if here is not None else "")
        + ".",
        direction(summary, ratios, where, (here,) if here is not None else (), spread, answered),
    )
