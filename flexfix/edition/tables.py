"""Small views of the results tables for the notebooks: what to show, not how it was measured."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pandas as pd

from flexfix.measure.repro import CRASHES

__all__ = [
    "provenance_line",
    "batch_records",
    "outcome_summary",
    "engine_summary",
    "threshold_table",
    "sanitizer_view",
    "outcome_table",
    "random_shapes",
    "kernel_grid",
    "engine_label",
    "engine_grid",
    "engine_verdicts",
    "every_request_table",
    "timing_ratios",
    "throughput_runs",
    "throughput_ratios",
    "throughput_table",
    "ratio_summary",
    "throughput_spread",
]


def provenance_line(prov: Mapping[str, Any]) -> str:
    driver = f" (driver {prov['driver']})" if prov.get("driver") else ""
    return (
        f"recorded on {prov['device_name']}{driver}, torch {prov['torch']}, "
        f"vLLM {prov['vllm']}, commit {str(prov['git_commit'])[:10]}, {prov['date']}"
    )


def recorded_where(provs) -> str:
    """ "the recorded run on <GPU>" for one provenance or a list of them (the devices they name), so a
    sentence about recorded results names the machine the file says, not the one we remember."""
    provs = [provs] if isinstance(provs, dict) else list(provs)
    names = sorted({str(p.get("device_name")) for p in provs})
    runs = "run" if len(provs) == 1 else "runs"
    return f"the recorded {runs} on {' and '.join(names)}"


def outcome_summary(table: pd.DataFrame, by: tuple[str, ...] = ("copy", "batch")) -> pd.DataFrame:
    """Per group: how many runs ended in each outcome."""
    counts = table.groupby(list(by))["status"].value_counts().unstack(fill_value=0)
    counts["runs"] = counts.sum(axis=1)
    return counts


def engine_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One line per engine scenario: what it is, what was expected, what happened."""
    from flexfix.integration.engine import SCENARIOS

    out = table[["scenario", "what", "expected", "status"]].copy()
    # what the mechanism predicts is defined in code (engine.SCENARIOS), also for files recorded before it changed
    out["expected"] = [SCENARIOS[n].expect if n in SCENARIOS else e for n, e in zip(out["scenario"], out["expected"])]
    out["as_expected"] = [st in str(e).split(" or ") for st, e in zip(out["status"], out["expected"])]
    out["completed_batches"] = [", ".join(str(r["requests"]) for r in recs) for recs in table["records"]]
    out["detail"] = [d.split("] ")[-1][:90] for d in table["detail"]]
    return out.set_index("scenario")


def threshold_table(table: pd.DataFrame) -> pd.DataFrame:
    """Stock vLLM 0.20.0 (no patch, VLLM_BATCH_INVARIANT=0): which request counts completed."""
    rows = []
    for _, r in table[table["patch"] == "none"].iterrows():
        if not r["batch_invariant"]:
            done = {rec["requests"] for rec in r["records"]}
            how = "one engine, growing batches" if r["scenario"] == "threshold" else "fresh engine"
            for n in r["requests"]:
                state = (
                    "completed"
                    if n in done
                    else (r["status"] if n == min(set(r["requests"]) - done) else "not reached")
                )
                rows.append({"requests": n, "how": how, "scenario": r["scenario"], "outcome": state})
    return pd.DataFrame(rows).sort_values(["how", "requests"]).reset_index(drop=True)


def sanitizer_view(table: pd.DataFrame, lines: int = 6) -> pd.DataFrame:
    out = table[["copy", "status", "sanitizer_errors"]].copy()
    out["first_report"] = [
        " | ".join(ln.strip("= ").strip() for ln in ls[1 : 1 + lines]) for ls in table["sanitizer_lines"]
    ]
    return out.set_index("copy")


def outcome_table(
    kernel: pd.DataFrame,
    sanitizer: pd.DataFrame,
    engine: pd.DataFrame,
    sources: tuple[str, str, str] = ("recorded", "recorded", "recorded"),
) -> pd.DataFrame:
    """The GPU outcomes in one table; ``sources`` says where each of the three tables comes from (the
    recorded files, or this run), a column of its own."""
    rows = [
        {
            "from": sources[0],
            "experiment": "torch-only graph replay",
            "case": f"{r.copy}, batch {r.batch}, seed {r.seed}",
            "outcome": r.status,
        }
        for r in kernel.itertuples()
    ]
    rows += [
        {
            "from": sources[1],
            "experiment": "compute-sanitizer memcheck",
            "case": f"{r.copy} ({r.sanitizer_errors} errors)",
            "outcome": r.status,
        }
        for r in sanitizer.itertuples()
    ]
    rows += [
        {
            "from": sources[2],
            "experiment": "vLLM 0.20.0 engine",
            "case": f"({r.scenario}) {r.what}",
            "outcome": r.status,
        }
        for r in engine.itertuples()
    ]
    return pd.DataFrame(rows)


def random_shapes(n: int, seed: int = 0, max_rows: int = 12, max_cols: int = 96):
    """``n`` random (persistent shape, source shape) pairs with the source fitting inside."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(n):
        g_max, w_max = rng.randint(1, max_rows), rng.randint(1, max_cols)
        shapes.append(((g_max, w_max), (rng.randint(1, g_max), rng.randint(1, w_max))))
    return shapes


def batch_records(table: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario x batch that an engine completed."""
    rows = [{"scenario": r["scenario"], **rec} for _, r in table.iterrows() for rec in r["records"]]
    return pd.DataFrame(rows)


# Batch invariance (notebook 04).


def _kernel_category(cells: pd.DataFrame) -> str:
    if cells["outcome"].isin(CRASHES).any():
        return "crash"
    if (~cells["outcome"].isin(["ok", "wrong_result"])).any():
        return "error"
    if (cells["outcome"] == "wrong_result").any():
        return "wrong result"
    return "bitwise equal" if cells["bitwise_equal"].astype(bool).all() else "differs"


def kernel_grid(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Configuration x batch size: the worst category over the needle positions (a crash, an
    error building or running the kernel, a wrong result, a bitwise difference), and how many
    positions were bitwise equal (``"2/3"``).  A cell with no record is "not run"."""
    groups = table.groupby(["config", "batch"], sort=False)
    cat = groups.apply(_kernel_category, include_groups=False).unstack("batch").fillna("not run")
    note = (
        groups.apply(
            lambda c: f"{int(c['bitwise_equal'].fillna(False).astype(bool).sum())}/{len(c)}", include_groups=False
        )
        .unstack("batch")
        .fillna("")
    )
    order = list(dict.fromkeys(table["config"]))
    cat, note = cat.loc[order], note.loc[order]
    cat.columns.name = note.columns.name = "batch size"
    return cat, note


def _engine_category(r) -> str:
    if not r["tokens_equal"]:
        return "tokens differ"
    return "bitwise equal" if r["logprobs_bitwise_equal"] else "differs"


def engine_label(r) -> str:
    return f"{r['model']}, BI={int(r['batch_invariant'])}, {r['graphs']}" + ("" if r["patched"] else ", stock")


def engine_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """(engine, sampling) x N: bitwise equal / differs (same tokens) / tokens differ; an N the
    engine never reached is "crash" if the engine died, else "not run"."""
    rows = rows.assign(
        label=[f"{engine_label(r)}, {r['sampling']}" for _, r in rows.iterrows()],
        category=[_engine_category(r) for _, r in rows.iterrows()],
    )
    grid = rows.pivot(index="label", columns="requests", values="category")
    status = rows.groupby("label")["engine_status"].first()
    for label in grid.index:
        grid.loc[label] = grid.loc[label].fillna("not run" if status[label] == "ok" else "crash")
    grid.columns.name = "concurrent requests"
    return grid.loc[list(dict.fromkeys(rows["label"]))]


def engine_verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    """Per engine and sampling: at how many N the needle was bitwise equal, the largest logprob
    difference, and the fewest distinct tokens it produced (a degenerate stream would be 1)."""
    rows = rows.assign(engine=[engine_label(r) for _, r in rows.iterrows()])
    out = rows.groupby(["engine", "sampling"], sort=False).agg(
        batch_sizes=("requests", "size"),
        bitwise_equal=("logprobs_bitwise_equal", "sum"),
        tokens_equal=("tokens_equal", "sum"),
        max_abs_logprob_diff=("max_abs_logprob_diff", "max"),
        fewest_distinct_tokens=("distinct_tokens", "min"),
    )
    out["invariant"] = out["bitwise_equal"] == out["batch_sizes"]
    return out


def every_request_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Each request of a batch against itself alone: which differ, and in which query block."""
    out = rows.assign(engine=[engine_label(r) for _, r in rows.iterrows()])
    out["requests_with_other_tokens"] = out["tokens_differ"].map(len)
    out["requests_with_other_logprobs"] = out["logprobs_differ"].map(len)
    out["their_query_blocks"] = out["logprobs_differ"].map(lambda ix: sorted({i // 16 for i in ix}))
    return out[
        [
            "engine",
            "requests",
            "requests_with_other_tokens",
            "requests_with_other_logprobs",
            "their_query_blocks",
            "max_abs_logprob_diff",
            "engine_status",
        ]
    ]


# Cost (notebook 05).


def _with_l2(timing: pd.DataFrame) -> pd.DataFrame:
    """Timings with their ``l2`` column (files recorded before it existed timed with a warm L2 only)."""
    return timing if "l2" in timing else timing.assign(l2="warm")


def timing_ratios(timing: pd.DataFrame, l2: str = "warm") -> pd.DataFrame:
    """Per batch x context: medians of each implementation and the ratios the notebook plots, from the timings
    taken with a ``"warm"`` or a ``"flushed"`` L2 cache (:func:`flexfix.measure.timing.time_fn`)."""
    timing = _with_l2(timing)
    if l2 not in set(timing["l2"]):
        raise ValueError(f"no timings with l2={l2!r} here (have {sorted(set(timing['l2']))})")
    timing = timing[timing["l2"] == l2]
    wide = timing.pivot_table(index=["batch", "context"], columns="impl", values="median_ms")
    frac = timing.pivot_table(index=["batch", "context"], columns="impl", values="fraction_of_copy_bw")
    out = pd.DataFrame(index=wide.index)
    if "flex vllm graph" in wide:
        out["graph_speedup"] = wide["flex vllm eager"] / wide["flex vllm graph"]
        out["bi_overhead"] = wide["flex batch_invariant graph"] / wide["flex vllm graph"]
        out["flex_over_sdpa"] = wide["flex vllm graph"] / wide["sdpa dense"]
        out["flex_bw_fraction"] = frac["flex vllm graph"]
    else:  # CPU: eager flex only
        out["flex_over_sdpa"] = wide["flex pytorch eager"] / wide["sdpa dense"]
        out["flex_bw_fraction"] = frac["flex pytorch eager"]
    out["sdpa_bw_fraction"] = frac["sdpa dense"]
    return out.reset_index()


def l2_effect_summary(timing: pd.DataFrame) -> pd.DataFrame:
    """:func:`l2_effect` in one screen: per implementation (rows) and context (columns), the median over the
    batch sizes of flushed / warm (above 1: a cold L2 is slower).  Empty where only warm timings exist."""
    effect = l2_effect(timing)
    if effect.empty:
        return effect
    return effect.pivot_table(index="impl", columns="context", values="flushed_over_warm", aggfunc="median")


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
    """Which recorded file is which model's "run k" (:func:`throughput_table`), with what it timed."""
    rows = _runs(rows)
    return (
        rows.groupby(["model", "run", "source"], sort=False)
        .agg(engines=("engine", "nunique"), timed_repetitions=("seconds", lambda s: len(s.iloc[0])))
        .reset_index()
    )


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


# Releases and the patch (notebook 02).


def release_ranges(releases: pd.DataFrame) -> pd.DataFrame:
    """The recorded release survey as runs of consecutive releases that share a class: first, last, how many,
    the class of their ``copy_to_persistent``, the verdict, and whether ``supports_batch_invariance`` is
    overridden."""
    from packaging.version import Version

    ordered = releases.assign(_v=[Version(v) for v in releases["version"]]).sort_values("_v")
    rows: list[dict[str, Any]] = []
    for _, r in ordered.iterrows():
        key = (r["copy_class"], r["verdict"], bool(r["bi_override"]))
        if rows and rows[-1]["_key"] == key:
            rows[-1].update(last=r["version"], releases=rows[-1]["releases"] + 1)
        else:
            rows.append(
                {
                    "_key": key,
                    "first": r["version"],
                    "last": r["version"],
                    "releases": 1,
                    "copy_to_persistent": r["copy_class"],
                    "verdict": r["verdict"],
                    "supports_batch_invariance overridden": bool(r["bi_override"]),
                }
            )
    return pd.DataFrame(rows).drop(columns="_key")


def release_checks(checks: pd.DataFrame) -> pd.DataFrame:
    """flexfix's patch against each release's real module: release class, what apply() returned, the strides
    of a [2, 3] copy into a [4, 8] buffer before and after, supports_batch_invariance() before and after, and
    the plugin's line with FLEXFIX_PATCH=1."""

    def strides(copy):
        return None if not isinstance(copy, Mapping) else tuple(copy["strides"])

    return pd.DataFrame(
        {
            "vLLM": checks["version"],
            "release class": checks["release_class"],
            "apply()": checks["apply"],
            "strides before": [strides(c) for c in checks["copy_before"]],
            "strides after": [strides(c) for c in checks["copy_after"]],
            "batch invariance before": checks["bi_before"],
            "after": checks["bi_after"],
            "plugin says": [" ".join(lines) for lines in checks["plugin_stderr"]],
            "differences from expected": [len(g) for g in checks["gaps"]],
        }
    ).set_index("vLLM")


def source_diff(
    original: str,
    fixed: str,
    fixed_name: str = "flexfix.mechanism.persistent.copy_to_slice: the rule of vLLM PR #40842 (0.21.0), "
    "without flexfix's checks",
    original_name: str = "vLLM 0.20.0: copy_to_persistent",
) -> str:
    """A unified diff from vLLM 0.20.0's source to the fixed one, for reading side by side."""
    import difflib

    return "".join(
        difflib.unified_diff(
            original.splitlines(keepends=True),
            fixed.splitlines(keepends=True),
            fromfile=original_name,
            tofile=fixed_name,
        )
    )


def select_scenarios(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The rows of ``table`` for the engine scenarios ``names``, in that order; a ResultsError naming every
    scenario that is missing (a recorded file that lost rows must not be shown as if complete)."""
    from flexfix.edition.results import ResultsError

    missing = [n for n in names if n not in set(table["scenario"])]
    if missing:
        raise ResultsError(
            f"no recorded run of scenario(s) {', '.join(missing)} (have {sorted(set(table['scenario']))})"
        )
    return pd.concat([table[table["scenario"] == n] for n in names], ignore_index=True)


def replay_steps(runs: pd.DataFrame, copy: str, batch: int, seed: int) -> tuple[str, pd.DataFrame]:
    """One torch-only run of :func:`~flexfix.measure.record.kernel_outcomes`: its outcome line, and its steps (capture,
    then each replay) with the width ``K``, the strides the step was written with and those the launch read with, the
    error against the fp32 reference and the step's outcome."""
    run = runs[(runs["copy"] == copy) & (runs["batch"] == batch) & (runs["seed"] == seed)]
    if len(run) != 1:
        raise ValueError(f"no single run of copy={copy!r}, batch={batch}, seed={seed} among these runs")
    r = run.iloc[0]
    line = f"{copy} copy, batch {batch}, seed {seed}: {r['status']} ({r['detail']})"
    steps = pd.DataFrame(r["records"])
    return line, steps[["step", "K", "written_stride", "launch_stride", "max_error", "outcome"]]


def notebook_times_line(times: pd.DataFrame) -> str:
    """``"403 s in all: 01 147 s, 02 68 s, ..."`` from a ``notebook_times`` results file (each rounded to seconds)."""
    parts = ", ".join(f"{str(r.notebook)[:2]} {r.seconds:.0f} s" for r in times.itertuples())
    return f"{times.seconds.sum():.0f} s in all: {parts}"
