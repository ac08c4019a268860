"""Batch invariance (notebook 04): the kernel-level needle grid and the engines' verdicts."""

from __future__ import annotations

import pandas as pd

from flexfix.measure.outcomes import CRASHES

__all__ = [
    "POSITION_MARKS",
    "POSITION_KEY",
    "position_counts",
    "configs_of",
    "kernel_verdicts",
    "NO_RESULT",
    "ENGINE_MARKS",
    "ENGINE_KEY",
    "kernel_grid",
    "engine_label",
    "engine_grid",
    "engine_verdicts",
    "outcome_key",
    "every_request_table",
    "device_title",
    "tolerance_line",
    "reference_distances",
]


def _kernel_category(cells: pd.DataFrame) -> str:
    if cells["outcome"].isin(CRASHES).any():
        return "crash"
    if (~cells["outcome"].isin(["ok", "wrong_result"])).any():
        return "error"
    if (cells["outcome"] == "wrong_result").any():
        return "wrong result"
    return "bitwise equal" if cells["bitwise_equal"].astype(bool).all() else "moved"


# The text of a kernel-grid cell: how many of its needle positions came to each outcome, of how many, with these marks.
POSITION_MARKS = {"bitwise equal": "=", "moved": "~", "wrong result": "w", "error": "E", "crash": "X"}
POSITION_KEY = (
    "cell text: positions per outcome (2/3 ~: two of\nthree positions moved); = bitwise equal, ~ moved,\n"
    "w wrong result, E error, X crash"
)


def _position_outcome(row, crash: str = "crash") -> str:
    """What one needle position came to; ``crash`` the word for a crash (the heatmap's cells count ``crash``, the
    per-position table says ``crashed``)."""
    if row["outcome"] in CRASHES:
        return crash
    if row["outcome"] == "wrong_result":
        return "wrong result"
    if row["outcome"] != "ok":
        return "error"
    return "bitwise equal" if bool(row["bitwise_equal"]) else "moved"


def _counts(kinds: list[str], marks: dict[str, str]) -> str:
    """``"1/3 =\n2/3 ~"``: how many of a cell's ``kinds`` had each outcome, of how many, one outcome a line."""
    return "\n".join(f"{kinds.count(k)}/{len(kinds)} {mark}" for k, mark in marks.items() if k in kinds)


def position_counts(cells: pd.DataFrame) -> str:
    """``"1/3 =\n2/3 ~"``: how many of a grid cell's needle positions had each outcome (:data:`POSITION_MARKS`), of
    how many, one outcome a line."""
    return _counts([_position_outcome(r) for _, r in cells.iterrows()], POSITION_MARKS)


def _recordings(table: pd.DataFrame) -> dict[str, str]:
    """Configuration -> where its cells come from, for each configuration recorded in more than one file (a
    ``source`` column, as :func:`flexfix.edition.schemas.recorded` adds): ``"batch 1-16: kernel_invariance;
    17-128: kernel_invariance_part2"``."""
    if "source" not in table:
        return {}
    out = {}
    for config, cells in table.groupby("config", sort=False):
        if cells["source"].nunique() > 1:
            spans = [
                f"{int(part['batch'].min())}-{int(part['batch'].max())}: {source}"
                for source, part in cells.groupby("source", sort=False)
            ]
            out[config] = "batch " + "; ".join(spans)
    return out


def kernel_grid(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Configuration x batch size: the worst category over the needle positions (a crash, an
    error building or running the kernel, a wrong result, a bitwise difference), and how many
    positions came to each outcome (``"1/3 =\n2/3 E"``: :func:`position_counts`), so that a mixed cell hides nothing
    its colour does not show.  A cell with no record is "not run".  ``notes.attrs["key"]`` says how to read the notes
    (:func:`flexfix.edition.plots.category_heatmap` writes it under its legend).  A configuration whose cells come
    from more than one recording (a ``source`` column) says in its row label which batches each recording holds."""
    groups = table.groupby(["config", "batch"], sort=False)
    cat = groups.apply(_kernel_category, include_groups=False).unstack("batch").fillna("not run")
    note = groups.apply(position_counts, include_groups=False).unstack("batch").fillna("")
    order = list(dict.fromkeys(table["config"]))
    cat, note = cat.loc[order], note.loc[order]
    sources = _recordings(table)
    cat.index = note.index = [f"{c}\n({sources[c]})" if c in sources else c for c in order]
    cat.columns.name = note.columns.name = "batch size"
    note.attrs["key"] = POSITION_KEY
    return cat, note


NO_RESULT = "n/a (no cell ran)"  # max_abs_diff of a verdict row none of whose cells produced a comparable result


def _verdicts(cells: pd.DataFrame) -> pd.DataFrame:
    """:func:`flexfix.measure.invariance.verdicts`, with ``moved`` next to ``wrong`` (cells that ran with no
    misread and no error and were not bitwise equal: a rounding-sized move; a misread's ``wrong_result`` counts in
    ``wrong``), and ``max_abs_diff`` the largest difference over every cell that produced a result (outcome ``ok`` or
    ``wrong_result``; their number in ``ran``), with two significant digits (``3e-08``: in an object column a float
    prints as 0.0), and :data:`NO_RESULT` where none did (every cell crashed or failed to build), never a 0 or a NaN
    that reads like a measurement."""
    from flexfix.measure.invariance import verdicts

    out = verdicts(cells).astype({"max_abs_diff": object})
    ran = cells[cells["outcome"].isin(["ok", "wrong_result"])]
    ok = ran[ran["outcome"] == "ok"]
    moved = ok[~ok["bitwise_equal"].fillna(False).astype(bool)].groupby("config").size()
    out.insert(list(out.columns).index("wrong"), "moved", [int(moved.get(c, 0)) for c in out.index])
    diffs = ran.groupby("config")["max_abs_diff"]
    out.insert(
        list(out.columns).index("max_abs_diff"),
        "ran",
        [len(diffs.get_group(c)) if c in diffs.groups else 0 for c in out.index],
    )
    for config in out.index:
        values = diffs.get_group(config).dropna() if config in diffs.groups else []
        out.at[config, "max_abs_diff"] = f"{float(values.max()):.2g}" if len(values) else NO_RESULT
    return out


def kernel_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`flexfix.measure.invariance.verdicts`, one row per configuration; a configuration whose cells come from
    more than one recording (a ``source`` column) is split, one row per recording, so that no row adds up numbers
    of two runs.  The ``recording`` column says which file each row's numbers come from, and which batches.
    ``max_abs_diff`` is over the cells that ran, :data:`NO_RESULT` where none did."""
    if "source" not in table:
        return _verdicts(table)
    parts = []
    for config in dict.fromkeys(table["config"]):
        cells = table[table["config"] == config]
        whole = str(_verdicts(cells)["verdict"].iloc[0])
        for source, part in cells.groupby("source", sort=False):
            row = _verdicts(part)
            batches = f"batch {int(part['batch'].min())}-{int(part['batch'].max())}"
            row.insert(0, "recording", f"{source} ({batches})" if cells["source"].nunique() > 1 else source)
            if row["verdict"].iloc[0] != whole:  # a part's verdict is not the configuration's (r0305 C12)
                row["verdict"] = f"{row['verdict'].iloc[0]} in {batches} only (whole configuration: {whole})"
            parts.append(row)
    return pd.concat(parts)


def configs_of(table: pd.DataFrame, configs) -> pd.DataFrame:
    """The cells of ``configs`` (configurations or their names) in a sweep's table."""
    names = [getattr(c, "name", c) for c in configs]
    return table[table["config"].isin(names)].reset_index(drop=True)


def _engine_category(r) -> str:
    if not r["tokens_equal"]:
        return "tokens differ"
    return "bitwise equal" if r["logprobs_bitwise_equal"] else "logprobs differ"


def engine_label(r) -> str:
    """``tiny, BI=1, full, patched``: the model, ``VLLM_BATCH_INVARIANT``, the graph mode, and whether the engine
    ran with flexfix's patch (``patched``) or without it (``stock``)."""
    patched = "patched" if bool(r["patched"]) else "stock"
    return f"{r['model']}, BI={int(r['batch_invariant'])}, {r['graphs']}, {patched}"


# The text of an engine-grid cell: how many of its runs came to each outcome, of how many, and by how much the
# logprobs moved where they did.
ENGINE_MARKS = {"bitwise equal": "=", "logprobs differ": "~", "tokens differ": "T", "crash": "X"}
ENGINE_KEY = (
    "cell text: runs per outcome (1/1 =: the one run\nof the cell bitwise equal); = bitwise equal,\n"
    "~ logprobs differ, T tokens differ, X crash;\nunder it the largest |logprob difference|"
)


def _engine_note(rows: pd.DataFrame) -> str:
    text = _counts(list(rows["category"]), ENGINE_MARKS)
    moved = rows.loc[rows["category"] != "bitwise equal", "max_abs_logprob_diff"].dropna()
    return text + (f"\n{moved.max():.2g}" if len(moved) else "")


def engine_grid(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(engine, sampling) x N: bitwise equal / logprobs differ (same tokens) / tokens differ, the worst over the
    cell's runs; an N the engine never reached is "crash" if the engine died, else "not run".  And the text of each
    cell: how many of its runs came to each outcome, of how many, and the largest logprob difference
    (:data:`ENGINE_KEY`, in ``notes.attrs["key"]``)."""
    worst = list(ENGINE_MARKS)
    rows = rows.assign(
        label=[f"{engine_label(r)}, {r['sampling']}" for _, r in rows.iterrows()],
        category=[_engine_category(r) for _, r in rows.iterrows()],
    )
    cells = rows.groupby(["label", "requests"], sort=False)
    grid = cells["category"].agg(lambda c: max(c, key=worst.index)).unstack("requests")
    notes = cells.apply(_engine_note, include_groups=False).unstack("requests")
    status = rows.groupby("label")["engine_status"].first()
    for label in grid.index:
        grid.loc[label] = grid.loc[label].fillna("not run" if status[label] == "ok" else "crash")
    order = list(dict.fromkeys(rows["label"]))
    columns = sorted(grid.columns)
    grid, notes = grid.loc[order, columns], notes.loc[order, columns].fillna("")
    grid.columns.name = notes.columns.name = "concurrent requests"
    notes.attrs["key"] = ENGINE_KEY
    return grid, notes


def engine_verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    """Per engine and sampling: at how many N the needle was bitwise equal, the largest logprob
    difference, and the fewest distinct tokens it produced (a degenerate stream would be 1)."""
    rows = rows.assign(engine=[engine_label(r) for _, r in rows.iterrows()])
    out = rows.groupby(["engine", "sampling"], sort=False).agg(
        n_batch_sizes=("requests", "size"),  # a count, so named (r15 D4)
        bitwise_equal=("logprobs_bitwise_equal", "sum"),
        tokens_equal=("tokens_equal", "sum"),
        max_abs_logprob_diff=("max_abs_logprob_diff", "max"),
        fewest_distinct_tokens=("distinct_tokens", "min"),
    )
    out["invariant"] = out["bitwise_equal"] == out["n_batch_sizes"]
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


def device_title(device: str, provs=None) -> str:
    """The machine a figure's title names: the recorded provenances' ``device_name`` where given (``"NVIDIA H100 80GB
    HBM3"``), else this run's GPU by name, or ``"CPU"``: never the device kind ``cuda``."""
    if provs is not None:
        provs = [provs] if isinstance(provs, dict) else list(provs)
        return " and ".join(sorted({str(p.get("device_name")) for p in provs}))
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return "CPU"


def position_outcomes(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and batch size whose needle positions did not all end alike, what each position came to
    (``bitwise equal``, ``moved``, ``wrong result``, ``crashed``, ``error``): the positions the sweep paragraphs name
    (r0305 B7), which the heatmap gives only as counts."""
    cells = table.assign(came_to=[_position_outcome(r, crash="crashed") for _, r in table.iterrows()])
    wide = cells.pivot_table(
        index=["config", "batch"], columns="position", values="came_to", aggfunc="first", sort=False
    )
    wide = wide[
        [p for p in ("first", "middle", "last") if p in wide]
        + [p for p in wide if p not in ("first", "middle", "last")]
    ]
    mixed = wide.nunique(axis=1) > 1
    wide.columns.name = None
    return wide[mixed].reset_index()


def tolerance_line() -> str:
    """The tolerances that separate a ``moved`` cell from a ``wrong`` one, as the sweep applies them
    (:func:`flexfix.mechanism.kernel_repro.tolerance` of the kernel's dtype, against the fp32 reference; r9 D3)."""
    import torch

    from flexfix.mechanism.kernel_repro import tolerance

    return (
        "moved vs wrong: a cell is `wrong` where the needle's distance to the fp32 reference is past "
        f"{tolerance(torch.bfloat16):g} for bf16 kernels (the GPU's) or {tolerance(torch.float32):g} for fp32 ones "
        "(the CPU's, analogs included); within it, `moved`"
    )


def reference_distances(table: pd.DataFrame) -> pd.DataFrame:
    """The distance that tells ``moved`` from ``wrong`` (r22 B1), for every cell that produced a result and was not
    bitwise equal: per configuration (and recording, where a configuration joins two) and outcome, its cells, their
    largest distance to the needle alone (``max_abs_diff``), their smallest and largest distance to the fp32
    reference (``max_error_vs_reference``), the tolerance of the kernel's precision that splits the two outcomes (bf16
    on the GPU, fp32 on the CPU) and the needle alone's own distance to the reference (its cell at one request), with
    two significant digits.  A measured cell recorded without its distance is refused, never shown as a gap."""
    import torch

    from flexfix.edition.checks import require
    from flexfix.mechanism.kernel_repro import tolerance

    ran = table[table["outcome"].isin(["ok", "wrong_result"])]
    differ = ran[~ran["bitwise_equal"].fillna(False).astype(bool)]
    split = "source" in table and bool((table.groupby("config")["source"].nunique() > 1)[differ["config"]].any())
    keys = ["config", "source"] if split else ["config"]
    columns = ["outcome", "cells", "to the needle alone (largest)", "to the fp32 reference (smallest)"]
    columns += ["to the fp32 reference (largest)", "tolerance", "needle alone to the reference"]
    if differ.empty:
        none = {"config": "no cell that ran differed from the needle alone", "source": "", "outcome": "", "cells": 0}
        return pd.DataFrame([none], columns=keys + columns).fillna("").set_index(keys + ["outcome"])
    values = ("device", "max_abs_diff", "max_error_vs_reference")
    require(differ, "the cells that moved or are wrong", values=values)

    def two(x: float) -> str:
        return f"{float(x):.2g}"

    rows = []
    for key, cells in differ.groupby(keys + ["outcome"], sort=False):
        where = dict(zip(keys, key))
        mine = ran[(ran[keys] == pd.Series(where)).all(axis=1)]
        alone = mine[(mine["batch"] == 1) & (mine["outcome"] == "ok")]["max_error_vs_reference"].dropna()
        dtype = torch.bfloat16 if str(cells["device"].iloc[0]) == "cuda" else torch.float32
        ref = cells["max_error_vs_reference"].astype(float)
        said = [two(cells["max_abs_diff"].astype(float).max()), two(ref.min()), two(ref.max())]
        alone_said = two(alone.max()) if len(alone) else "n/a (no cell at 1 request)"
        outcome = "moved" if key[-1] == "ok" else "wrong"
        rows.append([*key[:-1], outcome, len(cells), *said, f"{tolerance(dtype):g}", alone_said])
    return pd.DataFrame(rows, columns=keys + columns).set_index(keys + ["outcome"])


def outcome_key() -> pd.DataFrame:
    """Each outcome of a kernel cell under its name in each place it is shown (r15 D1): the verdict table's count
    column and verdict (:func:`flexfix.measure.invariance.verdicts`), the headline word of the lines under it
    (:mod:`flexfix.edition.narrative.invariance_lead`) and the heatmap's mark (:data:`POSITION_MARKS`)."""
    rows = [  # outcome, column, verdict, headline, heatmap mark's key
        ("bitwise equal", "bitwise_equal", "invariant (every cell)", "batch-invariant (every cell)", "bitwise equal"),
        ("moved (a rounding step)", "moved", "varies with the batch", "varies with the batch", "moved"),
        ("wrong (silently)", "wrong", "wrong results", "wrong", "wrong result"),
        ("error (no kernel built)", "errors", "kernel errors", "no kernel built / kernel errors", "error"),
        ("crash", "crashed", "crashes", "crashed", "crash"),
    ]
    key = pd.DataFrame(
        [(o, c, v, h, POSITION_MARKS[m]) for o, c, v, h, m in rows],
        columns=["outcome", "verdict table column", "verdict", "headline word", "heatmap mark"],
    ).set_index("outcome")
    return key.assign(**{"rank in the verdict (1: worst)": _verdict_ranks(key["verdict"])})


# One cell of each outcome, as a sweep records it (outcome, bitwise_equal): the key's rows, in its order.
_SAMPLE_CELLS = [
    ("ok", True),
    ("ok", False),
    ("wrong_result", False),
    ("error", False),
    ("illegal_memory_access", False),
]


def _verdict_ranks(verdicts: pd.Series) -> list[int]:
    """Each outcome's rank in a configuration's verdict (r17 D9), from :func:`flexfix.measure.invariance.verdicts`
    itself: a configuration with one cell of each of two outcomes takes the verdict of the worse one, and an
    outcome's rank is one more than the number of outcomes that beat it there."""
    from flexfix.measure.invariance import verdicts as verdicts_of

    words = [v.replace(" (every cell)", "") for v in verdicts]
    beaten = [0] * len(words)
    for i, a in enumerate(_SAMPLE_CELLS):
        for j, b in enumerate(_SAMPLE_CELLS):
            if i < j:
                cells = pd.DataFrame(
                    [
                        {"config": "c", "batch": n, "outcome": o, "bitwise_equal": e, "max_abs_diff": 0.0}
                        for n, (o, e) in enumerate((a, b))
                    ]
                )
                won = verdicts_of(cells)["verdict"].iloc[0]
                beaten[j if won == words[i] else i] += 1
    return [n + 1 for n in beaten]
