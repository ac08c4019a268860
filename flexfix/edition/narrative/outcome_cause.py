"""What decides between an illegal memory access and a silently wrong answer, in words (notebook 01).

Two sentences, each from the table it describes: :func:`misread_cells` from the cells the replayed rows read (CPU,
:func:`flexfix.measure.outcome_cause.reads_table`), :func:`outcome_cause` from the runs with the KV cache placed by
hand (:func:`flexfix.measure.outcome_cause.run_scenarios`, ``outcome_cause-cuda.json``).  Meaning first."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.checks import DataError, require
from flexfix.edition.narrative import OUTCOME_WORDS, listing, markdown, plural
from flexfix.edition.narrative.cause_lead import agree, gpu_name
from flexfix.edition.narrative.cpu_analog import analog_outcomes
from flexfix.edition.tables.outcome_cause import READ_VALUES, RUN_COLUMNS

__all__ = ["misread_cells", "outcome_cause", "sanitizer_offset", "same_seeds", "seeds_not_run"]

_BEFORE = re.compile(r"is ([\d,]+) bytes before the nearest allocation at \S+ of size ([\d,]+) bytes")


def misread_cells(reads: pd.DataFrame, sanitizer: pd.DataFrame | None = None) -> str:
    """What the misread rows of the ``as_strided`` replays held, summed over seeds and replays, and where the pads
    point; with ``sanitizer`` (the compute-sanitizer runs), whether its first bad read lies where a pad points."""
    what = "the misread cells"
    require(reads, what, values=READ_VALUES)
    strided = reads[(reads["copy"] == "as_strided") & (reads["step"] != "capture")]
    sliced = reads[(reads["copy"] == "sliced") & (reads["step"] != "capture")]
    if strided.empty:
        raise DataError(f"{what}: no as_strided replay to describe")
    total = int(strided["cells_read"].sum())
    kinds = {k: int(strided[k].sum()) for k in ("own", "other_page", "pad", "never_written", "out_of_range")}
    seeds, replays = strided["seed"].nunique(), strided["step"].nunique()
    with_pads = int((strided["pad"] > 0).sum())
    reach = sorted(set(strided.loc[strided["pad"] > 0, "front_bytes_read"]))
    if len(reach) > 1:
        raise DataError(f"{what}: the pads reach {reach} bytes in front: one cache type expected")
    lead = (
        "**What the misread cells hold.** Not garbage: the rows the replayed kernel reads with the capture's stride "
        "hold pages of the cache (other rows' or stale ones, `other_page` in the table above; now and then one of "
        "their own, `own`) and `-1` pads, nothing else; the pads are the only way these cells lead outside the caches"
        if kinds["never_written"] == kinds["out_of_range"] == 0
        else "**What the misread cells hold.** Besides pages of the cache and `-1` pads, the misread rows hold "
        f"{kinds['never_written']} never-written cells and {kinds['out_of_range']} values outside the cache"
    )
    evidence = (
        f"Over {plural(seeds, 'seed')} and {replays} replays of batch {int(strided['batch'].iloc[0])}, the rows after "
        f"the first read {total} cells: {kinds['own']} of their own pages, {kinds['other_page']} other valid pages "
        f"(loaded, then hidden by the mask), {kinds['pad']} `-1` pads, {kinds['never_written']} never-written cells "
        f"and {kinds['out_of_range']} values outside the cache; in {with_pads} of the {len(strided)} replays "
        f"({seeds} seeds x {replays} replays, the table's `seeds with a pad` per replay) at least one pad was read. "
        f"The rows `missed` {int(strided['missed'].sum())} of their own pages (pages they should have read and did "
        "not: the wrong answer)."
    )
    if with_pads < len(strided):
        padless = strided[strided["pad"] == 0]
        outside = int(padless["never_written"].sum() + padless["out_of_range"].sum())
        evidence += f" The other {plural(len(padless), 'replay')} read no pad"
        if outside == 0:
            evidence += (
                ": "
                + ("its misread cells are" if len(padless) == 1 else "their misread cells are")
                + " all pages inside the cache, so a replay like that can only be silently wrong, whatever lies in "
                "front of the caches."
            )
        else:
            evidence += (
                f", but {int(padless['never_written'].sum())} never-written cells and "
                f"{int(padless['out_of_range'].sum())} values outside the cache among their misread cells: these "
                "counts do not show that such a replay can only be silently wrong."
            )
    evidence += (
        " These counts come from the plan, on CPU, for every replay; on a GPU a run that faults stops at its first "
        "misreading replay, so its later replays never run."
    )
    if reach:
        evidence += (
            f" A `-1` page of KV head 0 is the {reach[0]:,} bytes in front of the K and V caches' first byte "
            "(bf16, as on the GPU; the table's `front_bytes_per_pad`, the bytes in front of a cache that one pad makes "
            f"the kernel load, the same for every replay that reads a pad): {_cache_layout()}. These are the only "
            "addresses outside the caches that these cells produce."
        )
    found = sanitizer_offset(sanitizer) if sanitizer is not None else None
    if found is not None and reach:
        offset, size = found
        evidence += (
            f" compute-sanitizer's first bad read landed {offset:,} bytes before an allocation of {size:,} bytes: "
            + ("inside that page." if 0 < offset <= reach[0] else "outside that page, so something else read there.")
        )
    if not sliced.empty:
        evidence += (
            f" With the sliced copy the same rows read {int(sliced['own'].sum())} of {int(sliced['cells_read'].sum())}"
            " cells as their own pages."
        )
    return markdown(f"{lead}.", evidence)


def _cache_layout() -> str:
    """The torch-only scenario's K (and V) cache as :func:`flexfix.mechanism.paged.make_cache` lays it out, in bf16:
    shape, strides and the bytes of one page of one KV head, computed from the scenario (nothing is allocated)."""
    import torch

    from flexfix.mechanism import paged
    from flexfix.mechanism.kernel_repro import KernelScenario

    shape = KernelScenario().shape
    cache = torch.empty(
        (1, shape.num_kv_heads, shape.num_pages * paged.PAGE_SIZE, shape.head_dim), dtype=torch.bfloat16, device="meta"
    )
    page = paged.PAGE_SIZE * cache.stride(2) * cache.element_size()
    return (
        f"each cache is `[1, KV heads, pages x {paged.PAGE_SIZE} tokens, head_dim]` = `{list(cache.shape)}` with "
        f"strides `{list(cache.stride())}`, so one page of one KV head is {paged.PAGE_SIZE} tokens x "
        f"{cache.stride(2)} values x {cache.element_size()} bytes = {page:,} bytes, and page `-1` of head 0 is the "
        f"{page:,} bytes before the cache's first byte"
    )


def sanitizer_offset(sanitizer: pd.DataFrame) -> tuple[int, int] | None:
    """(bytes in front, size of that allocation) of the first read in front of an allocation that compute-sanitizer
    printed, if any."""
    for lines in sanitizer.get("sanitizer_lines", []):
        for line in lines or []:
            m = _BEFORE.search(line)
            if m:
                return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))
    return None


def _counted(group: pd.DataFrame) -> str:
    counts = group["status"].value_counts()
    return listing([f"{int(n)} with {OUTCOME_WORDS.get(s, s)}" for s, n in counts.items()])


def _listed(group: pd.DataFrame, column: str) -> int:
    """How many runs of ``group`` the driver answered for ``column`` with: an allocation is there."""
    return int(sum(v is True or v == 1.0 for v in group[column]))


def outcome_cause(runs: pd.DataFrame, where: str) -> str:
    """The runs with the caches placed by hand: guarded (mapped in front) against fenced (unmapped in front), same
    seeds; K and V placed apart; direct reads of the bytes in front; the default placement; the controls."""
    what = f"the placement runs of {where}"
    require(runs, what, RUN_COLUMNS, values=("copy", "placement", "v_placement", "batch", "seed", "status"))
    strided = runs[(runs["copy"] == "as_strided") & (runs["batch"] > 16)]
    plain = strided[(strided["placement"] == strided["v_placement"]) & strided["touch"].isna()]
    split = strided[(strided["placement"] != strided["v_placement"]) & strided["touch"].isna()]
    touched = strided[strided["touch"].notna()]
    controls = runs.drop(strided.index)
    by = {p: plain[plain["placement"] == p] for p in ("guarded", "fenced", "default")}
    g, f, d = by["guarded"], by["fenced"], by["default"]
    if g.empty or f.empty:
        raise DataError(f"{what}: both the guarded and the fenced placement are needed")
    same_seeds = sorted(set(g["seed"])) == sorted(set(f["seed"]))
    flipped = (g["status"] == "wrong_result").all() and (f["status"] == "illegal_memory_access").all()
    lead = (
        "**What decides, once a pad is read: the memory in front of the KV cache.** With the same seeds, hence the "
        f"same misread cells, mapped bytes in front of the caches gave a silently wrong answer in {len(g)} of "
        f"{plural(len(g), 'run')} and unmapped bytes an illegal memory access in {len(f)} of "
        f"{plural(len(f), 'run')}, on this GPU (counts, not a law: each placement below says how many runs it rests on)"
        if flipped and same_seeds
        else "**What decides.** Placing the cache did not flip every run: read the counts below"
    )
    parts = [
        f"* Caches `guarded` (mapped zeros in front, same allocation), {plural(len(g), 'run')} on seeds "
        f"{listing(sorted(set(g['seed'])))}: {_counted(g)}.",
        f"* Caches `fenced` (reserved, unmapped address space in front), {plural(len(f), 'run')}: {_counted(f)}.",
    ]
    if not split.empty:
        lines = [
            f"K `{k}` and V `{v}`: {_counted(grp)}"
            for (k, v), grp in split.groupby(["placement", "v_placement"], sort=False)
        ]
        both = (split["status"] == "illegal_memory_access").all() and split["placement"].nunique() > 1
        parts.append(
            f"* One cache fenced, the other guarded: {listing(lines, '; ')}"
            + (": the pads are read in front of both caches, and either one unmapped is enough." if both else ".")
        )
    if not touched.empty:
        lines = []
        for (p, v, t), grp in touched.groupby(["placement", "v_placement", "touch"], sort=False):
            results = grp["touch_result"].value_counts()
            words = {"read": "read without a fault", "faulted": "faulted there, before any replay"}
            done = listing([f"{int(n)} {words.get(r, r)}" for r, n in results.items()]) or "no read finished or faulted"
            cache = f"`{p}`" if p == v else f"K `{p}`, V `{v}`"
            lines.append(f"in front of {str(t).upper()} (caches {cache}): {done}")
        parts.append(
            "* Reading those bytes directly, with a kernel of its own just before the first replay (a read that "
            f"faults ends the run there): {listing(lines, '; ')}."
            + (
                " A fault in that read is the run's own, not the replay's: the table counts it apart."
                if (touched["touch_result"] == "faulted").any()
                else ""
            )
        )
    if not d.empty:  # r0102 round 9, D6: where V sat first, then what the driver's list predicted
        behind = d["k_address"] - d["v_address"] if {"k_address", "v_address"} <= set(d.columns) else None
        adjacent = behind is not None and (behind == d["front_k_size"]).all() and d["front_k_size"].nunique() == 1
        hit, size = int((d["status"] == d["predicted"]).sum()), int(d["front_k_size"].iloc[0]) if adjacent else 0
        parts.append(
            f"* Caches `default` (PyTorch's caching allocator, as in every earlier run), {plural(len(d), 'run')}: "
            f"{_counted(d)}."
            + (f" First, where they sat (per run in the table right after this list: the recorded `k_address` and "
               f"`v_address`, their gap, the range the driver listed in front of K): in all {len(d)} the V cache "
               f"started {size:,} bytes before the K cache, and the allocation the driver listed in front of K was "
               f"{size:,} bytes long, just that distance: V ended where K began, so the allocation in front of K "
               "was the V cache itself and only what lay in front of V could decide." if adjacent else " Where they "
               "sat, per run: the table right after this list (the recorded `k_address` and `v_address`, their gap, "
               "the range the driver listed in front of K).")
            + " Just before the first replay the driver listed an allocation in front of K in "
            f"{_listed(d, 'front_k_mapped')} and in front of V in {_listed(d, 'front_v_mapped')} of them; the outcome "
            f"was the one those answers predict in {hit} of {len(d)}"
            + ("; the direct reads below show why the list can mispredict." if hit < len(d) else ".")
        )  # fmt: skip
        read = touched[touched["placement"] == "default"]
        listed = [bool(r["front_v_mapped"] if r["touch"] == "v" else r["front_k_mapped"]) for _, r in read.iterrows()]
        pairs = pd.Series([(lst, r) for lst, r in zip(listed, read["touch_result"])], dtype=object).value_counts()
        # plain words, one clause per case (r0102 round 8, D18): how many runs, what their read did, what was listed
        words = {"read": "read those bytes without a fault", "faulted": "faulted reading them"}
        compared = [f"{plural(int(n), 'run')} {words.get(r, r)} where the driver listed {'an' if lst else 'no'} "
                    "allocation" for (lst, r), n in pairs.items()]  # fmt: skip
        if compared:  # r0102 round 7, A3: the driver's list against a read, where a run made both
            unlisted = sum(n for (lst, r), n in pairs.items() if not lst and r == "read")
            parts.append(
                f"  The driver's list against a direct read, in the {plural(len(read), 'run')} with the caches "
                f"`default` that made both (seeds {listing(sorted(set(read['seed'])))}): {listing(compared)}"
                + (
                    ": where it listed none, something it does not list was mapped. The outcome follows what is "
                    f"mapped, which the driver's list can miss; for the {plural(len(d), 'run')} of the plain `default` "
                    "placement, which read nothing themselves, that is inferred from these, not read."
                    if hit < len(d) and unlisted
                    else "."
                )
            )
    if not controls.empty:
        lines = [
            f"`{c}` copy, batch {b}, cache `{p}`: {_counted(grp)}"
            for (c, b, p), grp in controls.groupby(["copy", "batch", "placement"], sort=False)
        ]
        parts.append(f"* Controls, where no row reads a `-1` pad: {listing(lines, '; ')}.")
    parts.append(_unguarded_control(controls, g))
    return markdown(f"{lead}.", "\n".join(p for p in parts if p))


def _unguarded_control(controls: pd.DataFrame, guarded: pd.DataFrame) -> str:
    """What the controls leave open: a control that reads no pad ran only with the placements it names, so an arm
    without one (guarded, as run so far) rests on the mechanism for "mapped, so silently wrong", not on a control."""
    placed = set(controls["placement"]) | set(controls["v_placement"]) if not controls.empty else set()
    if "guarded" in placed:
        return ""
    return (
        "* No control ran with the caches `guarded`: that a `guarded` run answers wrong *because* its pads read "
        "mapped memory, and not because the guarded placement itself disturbs the answer, rests on the mechanism "
        "and on the `fenced` controls, not on a `guarded` run of the sliced copy."
    )


def _where(prov: dict | None, live: str) -> str:
    """Where a set of runs comes from: ``live`` (this run) when ``prov`` is None, else its file's GPU, commit and time
    (the time tells apart two recordings of one commit, as the edition index counts them)."""
    if prov is None:
        return f"{live}, at this edition's commit"
    when = f", {prov['date']}" if prov.get("date") else ""
    return f"recorded on {prov.get('device_name')}, flexfix commit {str(prov.get('git_commit'))[:10]}{when}"


def _widths(runs: pd.DataFrame, what: str) -> tuple:
    """The step widths ``K`` the runs recorded, capture first: the longest record of any run (a run that died stops
    early), from the runs' own step records; refused where no run kept a step, or a step lacks its width."""
    records = [list(r) if isinstance(r, list) else None for r in runs["records"]]
    steps = [s for r in records for s in (r or [])]
    if any(r is None for r in records) or not steps or any(not isinstance(s.get("K"), int) for s in steps):
        raise DataError(f"refusing {what}: a run without its step records, or a step without its width K")
    return tuple(s["K"] for s in max(records, key=len))


def _widths_said(widths: tuple, full: int) -> str:
    if not widths:
        return "none recorded"
    said = f"capture {widths[0]}" + (f"; replays {', '.join(str(k) for k in widths[1:])}" if widths[1:] else "")
    return said if len(widths) == full else f"{said}; no later step recorded (the runs stopped before it)"


def same_seeds(
    recorded: pd.DataFrame,
    recorded_prov: dict,
    placements: pd.DataFrame,
    placements_prov: dict | None,
    this_run: pd.DataFrame | None,
    device: str,
    recorded_placements: tuple[pd.DataFrame, dict] | None = None,
) -> str:
    """Which recordings of this edition ran `as_strided` past one query block on the same seeds with the caches where
    PyTorch put them, as a table (recording, where, seeds, outcome, the step widths it recorded), then whether they
    agree: the recorded torch-only runs (``recorded``, ``recorded_prov``), the `default` arm of the placement runs
    (``placements``; ``placements_prov`` None when they ran here), and on a GPU this run's own torch-only runs
    (``this_run``; the CPU analog cannot fault, so it is not one of them); where the placement runs ran here,
    ``recorded_placements`` (runs, provenance) adds the recorded placement runs' `default` arm (r0102 round 20, A1)."""
    live = f"this run ({_machine(device)})"  # r0102 round 16, D3: the GPU by name, not the device kind
    sets = [("the recorded torch-only runs", recorded, _where(recorded_prov, live), recorded_prov)]
    if device == "cuda" and this_run is not None:
        sets.append(("this notebook's own torch-only runs above", this_run, _where(None, live), None))
    placed = [("the plain `default` runs of the placement experiment above", placements, placements_prov)]
    if placements_prov is None and recorded_placements is not None:
        placed.append(
            ("the recorded plain `default` runs of the placement experiment, listed at the top", *recorded_placements)
        )
    for what, runs, prov in placed:
        arm = runs[(runs["placement"] == "default") & (runs["v_placement"] == "default")]
        arm = arm[arm["touch"].isna()] if "touch" in arm else arm
        sets.append((f"{what} (caches where PyTorch put them)", arm, _where(prov, live), prov))
    kept = []
    for what, runs, where, prov in sets:
        runs = runs[(runs["copy"] == "as_strided") & (runs["batch"] > 16)]
        if runs.empty:
            raise DataError(f"{what} ({where}): no `as_strided` run past one query block")
        commit = "this" if prov is None else str(prov.get("git_commit"))[:10]
        kept.append((what, runs, where, commit, _widths(runs, f"{what} ({where})")))
    full = max(len(w) for *_, w in kept)
    rows = [
        f"| {what} | {where} | {listing(sorted(set(runs['seed'])))} | {_counted(runs)} | {_widths_said(w, full)} |"
        for what, runs, where, _, w in kept
    ]
    common = set.intersection(*(set(runs["seed"]) for _, runs, *_ in kept))
    here = sum(1 for _, _, w, _, _ in kept if w.startswith(live))
    gpus = [gpu_name(prov, device) for *_, prov in sets]
    lead, caveat = agree(kept, common, gpus)  # the conclusion first (r0102 round 14, D3), the caveat under the table
    text = (
        f"**Which recordings ran the same seeds.** {lead} {plural(len(kept), 'recording')} of this edition ran "
        "`as_strided` past one query block with the caches where PyTorch put them"
        + (f", {here} of them in this run" if here else "")
        + f"; seeds {listing(sorted(common))} are in all of them:"
    )
    table = "\n".join(
        ["| recording | where | seeds | outcome | step widths `K` recorded |", "|---|---|---|---|---|", *rows]
    )
    return markdown(text, table, caveat + analog_outcomes(this_run, device))


def seeds_not_run(runs: pd.DataFrame) -> str:
    """Under the crash-or-wrong figure: which scenarios ran on fewer seeds than the others (their cells of the other
    seeds say ``not run``), from the runs themselves."""
    from flexfix.edition.tables.outcome_cause import SCENARIO_KEYS, scenario_label

    require(runs, "the placement runs", values=("copy", "placement", "batch", "seed"))
    seeds = sorted(set(runs["seed"]))
    ran = {
        scenario_label(*key): sorted(set(g["seed"])) for key, g in runs.groupby(SCENARIO_KEYS, sort=False, dropna=False)
    }
    fewer = {name: s for name, s in ran.items() if len(s) < len(seeds)}
    if not fewer:
        return markdown(f"Every scenario ran on all {plural(len(seeds), 'seed')} ({listing(seeds)}).")
    lines = [f"* {name}: {plural(len(s), 'seed')} ({listing(s)})" for name, s in fewer.items()]
    return markdown(
        f"A cell that says `not run` is a seed that scenario was not run on. Of the {plural(len(ran), 'scenario')}, "
        f"{len(ran) - len(fewer)} ran on all {plural(len(seeds), 'seed')} ({listing(seeds)}); these ran on fewer:",
        "\n".join(lines),
    )


def _machine(device: str) -> str:
    """This run's machine as the reader knows it: the GPU's name where one is present, else "GPU" or "CPU"."""
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "GPU" if device == "cuda" else "CPU"
