"""What a user of vLLM 0.20.x can do without the plugin, in words (notebook 02), from
:func:`flexfix.edition.tables.workarounds.workaround_table`; and what the plugin's patch cycle checks mean."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.checks import DataError, require, require_steps
from flexfix.edition.narrative import OUTCOME_WORDS, listing, markdown, plural, span
from flexfix.edition.narrative.patch_cycle import _CYCLE, checks_table, patch_cycle  # noqa: F401 - re-exported

__all__ = [
    "without_plugin",
    "patch_cycle",
    "checks_table",
    "fix_on_every_request",
    "releases_surveyed",
    "patched_batches",
]


def _columns(table: pd.DataFrame, prefix: str) -> dict[int, str]:
    """``{request count: column}`` of the columns ``"<prefix>, <n> ..."`` (the model follows in parentheses)."""
    found = {}
    for c in table.columns:
        m = re.fullmatch(rf"{re.escape(prefix)}, (\d+)\b.*", str(c))
        if m:
            found[int(m.group(1))] = c
    return found


# r0102 round 22, A3: one query block per *decode* step; a prefill step of one long prompt holds several, but vLLM
# captures FULL graphs for uniform decode batches only, so a prefill step replays none (notebook 01, "At which K")
_ONE_BLOCK = (
    "a decode step held one query block (a prefill step of one long prompt can hold several, but runs its attention "
    "outside any FULL graph: vLLM's default graph mode captures those for decode steps only, notebook 01's section "
    '"At which `K` vLLM captures its decode graphs")'
)


def live_control_said(every: pd.DataFrame | None, prov: dict | None, results: bool = True) -> str:
    """What notebook 01's live every-request rerun (its results file, read back where this edition wrote one) saw on
    its stock engine: the requests that came out otherwise than alone at each batch it completed, and how it ended
    (r0102 round 12, D1: the conditional "where there was one" resolved from the file); without ``results``, only
    where it ran (r0102 round 22, D10: where the verdict has said what it did).  Empty without one."""
    if every is None or prov is None or every.empty:
        return ""
    stock = [r for r in every.itertuples() if "stock" in str(r.engine)]
    if not stock:
        return ""
    said = []
    for r in stock:
        done = [rec for rec in r.records if rec.get("kind") == "every_request"]
        batches = [
            f"{len(set(rec.get('tokens_differ', [])) | set(rec.get('logprobs_differ', [])))} of {rec['requests']}"
            for rec in done
        ]
        said.append(
            f"its stock engine ({r.engine}) had {listing(batches) if batches else 'no batch completed'} requests come "
            f"out otherwise than alone, then ended `{r.status}`"
        )
    # r0102 round 16, D10: this date is the file's write time, not notebook 01's start time (its first printed line)
    where = (
        f"{prov.get('device_name')}, commit {str(prov.get('git_commit'))[:10]}; its results file, read back here, "
        f"written {prov.get('date')}, after the start time notebook 01's first line prints"
    )
    said = listing(said, sep="; ")
    return f"notebook 01's live rerun in this edition ({where})" + (f": {said}" if results else "")


def _control(safety_prov: dict | None, control_provs) -> str:
    """Where notebook 01's recorded every-request check (the positive control these checks lack) ran, against the GPU
    of the checks: from the files' provenance, not from memory."""
    if safety_prov is None or not control_provs:
        return (
            "notebook 01's every-request check (its recorded rows are shown again in this notebook's section "
            '"Every request, on the patched engine")'
        )
    gpus = sorted({str(p.get("device_name")) for p in control_provs})
    same = gpus == [str(safety_prov.get("device_name"))]
    return (
        f"notebook 01's every-request check, on the same tiny model, recorded on {' and '.join(gpus)}: "
        + (
            "the same GPU as these checks"
            if same
            else f"another GPU than these checks, which ran on {safety_prov.get('device_name')}"
        )
        + ' (its rows are shown again in this notebook\'s section "Every request, on the patched engine")'
    )


def without_plugin(
    table: pd.DataFrame,
    safety_where: str,
    cost_where: str,
    safety_prov: dict | None = None,
    control_provs=None,
    live: tuple[pd.DataFrame, dict] | None = None,
) -> str:
    """Which ways around the bug answered every request as alone, at which request counts, and what each costs
    against the patched engine (the ratios of the table, as it shows them, in the table's order: one recording each,
    so they are not ranked).  ``safety_prov`` and ``control_provs`` (the provenance of the checks and of notebook 01's
    recorded every-request files) say on which GPU the positive control was recorded; ``live`` (notebook 01's live
    every-request results and their provenance, where this edition wrote them) what its rerun saw."""
    if table is None or table.empty:
        raise DataError("the workaround table has no rows: nothing to say")
    ways = table[~table["vLLM setting"].str.startswith("FLEXFIX_PATCH")]
    counts = _columns(table, "differed")
    speeds = _columns(table, "vs patched")
    if ways.empty or not counts or not speeds:
        raise DataError("the workaround table lacks the ways around the bug, their checks or their costs")
    safe, unsafe = [], []
    for way, row in ways.iterrows():
        said = [str(row[c]) for c in counts.values()]
        (safe if all(s.startswith("0 of ") for s in said) else unsafe).append((way, row, said))
    from flexfix.edition.narrative.workaround_control import _live_stock

    in_verdict = bool(_live_stock(safety_prov, live))
    lines = []
    if safe:
        named = listing([f"{w} (`{r['vLLM setting']}`)" for w, r, _ in safe], sep="; ")
        differed = listing([f"0 of {n}" for n in counts])
        capped = [r["vLLM setting"] for _, r, _ in safe if "max_num_seqs" in str(r["vLLM setting"])]
        # r0102 round 13, D3: three short sentences: what was checked, the positive control, the caveat.
        lines.append(
            f"**Without the plugin, no request differed in {plural(len(safe), 'setting')}:** {named}: {differed} "
            f"requests differed between alone and together ({listing([str(n) for n in counts])} requests; "
            f"{safety_where})"
            + (
                f"; with `{capped[0]}` the scheduler ran at most that many of them at once, so {_ONE_BLOCK}"
                if capped
                else ""
            )
            # r0102 round 22, D10: that these checks hold no positive control, and what the nearest one did, is the
            # verdict's (workaround_control.verdict); here only where each control comes from, and the caveat
            + ". **Positive control**, where it comes from"
            + (" (the verdict above says what it did)" if in_verdict else "")
            + ": "
            + (f"{live_control_said(*live, results=not in_verdict)}; and " if live else "")
            + f"{_control(safety_prov, control_provs)}. **Caveat:** the control's engines have their own "
            "`max_num_seqs` printed beside its rows in notebook 01's section \"Every request checked: stock vs "
            'patched", not these settings; notebook 01 reruns it live only when it is executed on a GPU with its '
            "engine runs switched on (otherwise it shows only the recorded runs), and only such a rerun on the GPU "
            "of these checks is a positive control on the same GPU; the costs below come from another model."
        )
    for way, _, said in unsafe:
        lines.append(f"**{way} did not**: {listing(said)} requests differed alone vs together ({safety_where}).")
    costs = []
    for way, row in ways.iterrows():
        ratios = listing([f"{float(row[c]):.2f} at {n} requests" for n, c in speeds.items()])
        costs.append(f"{way} ({ratios})")
    lines.append(
        "**What each cost in this recording**, as a fraction of the patched engine's output tokens per second with "
        f"full graphs ({cost_where}): {listing(costs, sep='; ')}. Each ratio compares one engine of each setting "
        "with one patched engine, started once: a rough size of the cost, not a ranking. Notebook 05 measures how far "
        "one configuration's throughput moves from one engine to the next, and differences smaller than that rank "
        "nothing: which setting costs least is not read from these ratios."
    )
    pw, eager = "piecewise CUDA graphs only", "no CUDA graphs"  # r0102 round 9, D8: an order that looks backwards
    if pw in ways.index and eager in ways.index:
        backwards = [n for n, c in speeds.items() if float(ways.loc[pw, c]) < float(ways.loc[eager, c])]
        if backwards:
            lines[-1] += (
                f" That includes {pw} coming out slower than {eager} (at {listing(backwards)} requests), which "
                "looks backwards: it is one engine of each, and whether such a gap exceeds how far two engines of one "
                "setting differ is not measured here."
            )
    return markdown(*lines)


def fix_on_every_request(
    rows: pd.DataFrame, dispatch: pd.DataFrame, where: str, runs: pd.DataFrame | None = None
) -> str:
    """The evidence that the patched engine reads every query block right: the every-request rows
    (:func:`flexfix.edition.tables.every_request_table`) of the patched engines, with what vLLM's dispatcher runs each
    of their batches with (:func:`flexfix.edition.glossary.decode_dispatch`), beside the stock engine of the same
    check, the positive control, at the batches it completed; with ``runs`` (the engines the rows come from), the
    batch a stock engine that crashed did not complete (r0102 round 7, A6)."""
    require(rows, "the every-request rows", values=("engine", "requests", "requests_with_other_tokens"))
    require(dispatch, "the decode dispatch", values=("max_num_seqs", "decode batch", "runs with"))
    differ = rows["requests_with_other_tokens"] + rows["requests_with_other_logprobs"]
    patched = rows[rows["engine"].str.endswith("patched")]
    stock = rows[rows["engine"].str.endswith("stock")]
    if patched.empty:
        raise DataError("the every-request rows hold no patched engine: nothing shows the fix on every request")
    batches = sorted({int(n) for n in patched["requests"]})
    blocks = max(-(-n // 16) for n in batches)
    bad = patched[differ[patched.index] > 0]
    modes = dispatch[dispatch["decode batch"].isin(batches)]
    full = set(modes.loc[modes["runs with"] == "FULL", "decode batch"])
    if len(bad):
        head = (
            f"**The patched engines did not answer every request as alone**: {int(differ[bad.index].sum())} requests "
            f"differed ({where})."
        )
    else:
        head = (
            f"**The fix, on every request:** the patched engines ({listing(sorted(set(patched['engine'])))}) answered "
            f"every request of the batches of {listing(batches)} exactly as alone, tokens and bitwise logprobs, "
            f"{int(patched['requests'].sum())} requests in all, up to {plural(blocks, 'query block')} per step "
            f"({where})."
        )
    said = [head]
    said.append(
        "By vLLM's own dispatcher (the table), a decode step of "
        + (
            f"{listing(sorted(full))} requests on those engines runs with a FULL graph: a replayed attention kernel"
            if full
            else "none of those sizes runs with a FULL graph on those engines"
        )
        + ". That is what the installed vLLM's code decides for such a step, not a record of the engines' own replays."
    )
    if len(stock):
        wrong = stock[differ[stock.index] > 0]
        seqs = {}
        if "engine" in dispatch:
            for e, m in zip(dispatch["engine"], dispatch["max_num_seqs"]):
                seqs.setdefault(e, int(m))
        mine, theirs = (
            {seqs.get(e) for e in stock["engine"]} - {None},
            {seqs.get(e) for e in patched["engine"]} - {None},
        )
        settings = (
            "same `max_num_seqs` as the patched engines"
            if mine and mine == theirs
            else f"but `max_num_seqs` {listing(sorted(mine))} where the patched engines had {listing(sorted(theirs))}: "
            "the dispatch table's `engine` column; not the same settings"
            if mine and theirs
            else "its `max_num_seqs` not given here"
        )
        done = sorted({int(n) for n in stock["requests"]})
        died = ""
        if runs is not None:
            from flexfix.edition.tables.outcomes import every_request_engine

            for _, run in runs.iterrows():
                rest = [int(n) for n in run.get("every_request") or [] if int(n) not in done]
                if every_request_engine(run).endswith("stock") and run["status"] != "ok" and rest:
                    died = f" before it completed the batch of {rest[0]}"
        uncovered = [b for b in batches if b not in done]
        said.append(
            f"The positive control is the stock engine of the same check (full graphs, same model, {settings}), "
            f"at the {plural(len(done), 'batch', 'batches')} it completed ({listing(done)} requests): "
            + (
                listing(
                    [
                        f"at {r.requests} requests {plural(int(r.requests_with_other_tokens), 'request')} came out "
                        "with other tokens than alone"
                        for _, r in wrong.iterrows()
                    ]
                )
                if len(wrong)
                else "no request differed in the batches it completed"
            )
            + f"; it ended with {listing(sorted(OUTCOME_WORDS.get(s, s) for s in set(stock['engine_status'])))}"
            + died
            + " (notebook 01 shows it in full)"
            + (
                f". So the control covers {listing(done)} requests only: at {listing(uncovered)} no stock engine "
                "answered, and the patched engines' answers there have no stock answer beside them."
                if uncovered
                else "."
            )
        )
    return markdown(" ".join(said))


def releases_surveyed(releases: pd.DataFrame, provenance: dict) -> str:
    """What the release survey read (its table and the provenance of its file): how many final releases, from which
    to which, the older ones it left out, and how many of each verdict."""
    require(releases, "the release survey", values=("version", "verdict"))
    from packaging.version import Version

    params = (provenance or {}).get("parameters") or {}
    versions = sorted(releases["version"], key=Version)
    verdicts = releases["verdict"].value_counts()
    older = params.get("older_not_examined")
    text = (
        f"**What was surveyed:** the {plural(len(versions), 'final release')} of vLLM on PyPI from {versions[0]} to "
        f"{versions[-1]} (the survey's lower bound, `min_version`, is {params.get('min_version', versions[0])}"
        + (f"; older ones were not read, by the survey's own count {older}" if older else "")
        + "): "
        + listing([f"{c} {v}" for v, c in verdicts.items()])
        + "."
    )
    skipped = params.get("skipped") or {}
    if skipped:
        text += f" Skipped: {listing(sorted(skipped))}."
    return markdown(text)


def patched_batches(runs: pd.DataFrame, again: bool = False) -> str:
    """Patched engines, per scenario: batches completed, request 0 against itself alone (``again``: shorter, D13)."""
    require(runs, "the patched engines", values=("scenario", "status", "records"))
    require_steps(runs, "the patched engines", "records", ["requests"], nonempty=False)
    for _, run in runs.iterrows():
        if run["status"] == "ok" and not run["records"]:
            raise DataError(f"the patched engines: {run['scenario']} completed, but its table holds no batch")
    lines = []
    for _, run in runs.iterrows():
        recs = run["records"] or []
        batches = [r["requests"] for r in recs]
        equal = [
            r for r in recs if r.get("request0_tokens_equal_alone") and r.get("request0_logprobs_bitwise_equal_alone")
        ]
        distinct = [r.get("distinct_tokens_request0") for r in recs if r.get("distinct_tokens_request0") is not None]
        tokens = [r.get("tokens", 0) // max(r["requests"], 1) for r in recs]
        status = run["status"]
        line = f"* ({run['scenario']}) {'completed' if status == 'ok' else OUTCOME_WORDS.get(status, status)}"
        if batches:
            line += (
                f": batches of {listing(batches)} completed; request 0 equal to itself alone (tokens and bitwise "
                f"logprobs) in {len(equal)} of {len(recs)}"
            )
            if distinct and tokens:
                line += f"; request 0's stream had {span(distinct, '{:.0f}')} distinct tokens in its {max(tokens)}"
        lines.append(line + ".")
    # r0102 round 22, D11: why request 0 tests nothing of the fix is said here once; the 0.20.2 runs point back
    lines.append(
        "Request 0's match is no test of the fix here either (why: under the 0.20.0 runs above)."
        if again
        else "**These lines are no test of the fix.** Each engine compared only request 0, alone and inside the batch, "
        "and request 0 sits in query block 0, which the bug never misreads (notebook 01): its match says the patch "
        "leaves that request as it is alone, not that the later query blocks read right, and a completed batch is no "
        "such evidence either (a misread can be silent); the every-request check below is. A stream that repeats one "
        "token would match itself trivially, hence request 0's distinct tokens."
    )
    return markdown("\n".join(lines))


def live_control(results_dir, device: str) -> tuple[pd.DataFrame, dict] | None:
    """Notebook 01's live every-request results (``every_request`` in ``results_dir``) and their provenance, where a
    GPU execution of this edition wrote them; None on CPU or without that file (r0102 round 12, D1)."""
    from flexfix.edition import results

    path = results.results_path(results_dir, "every_request", "cuda")
    if device != "cuda" or not path.exists():
        return None
    return results.read_results(path, columns=("engine", "status", "records"))
