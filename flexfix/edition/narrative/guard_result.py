"""Notebook 07's result first, under *What you will learn*: one line per question, read from the recordings, each
naming the section that holds its tables (the same tables and counts as the bold sentences there)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown, plural, span

__all__ = ["result", "live"]


def result(recorded: dict) -> str:
    """``recorded``: :func:`flexfix.edition.tables.guard.recorded` (name -> (table, provenance))."""
    from flexfix.edition.tables import guard as t

    lines = []
    engines = t.engine_guard(t.stopped_runs(recorded))
    refused = int((engines["outcome"] == "guard_refused").sum())
    quiet = int((engines["replays checked"] == 0).sum())
    ima = "illegal_memory_access" in set(engines["outcome"])
    later, later_error, later_eager = _later_release(recorded)
    lines.append(
        f"`error` stopped stock vLLM 0.20.0 before a misreading replay in {refused} of {plural(len(engines), 'engine')}"
        + (f" ({plural(quiet, 'engine')} replayed no FULL graph, so nothing to stop)" if quiet else "")
        + ("; an illegal memory access was still reached" if ima else ", none reaching an illegal memory access")
        + " (*On the GPU: stock vLLM 0.20.0 under `FLEXFIX_GUARD=error`*)"
        + (
            f"; on vLLM {later} it stopped {later_error} (*`eager`: the right answer instead of an error*)"
            if later_error
            else ""
        )
    )
    equal = t.eager_vs_reference(recorded["guard_stock_eager"][0], recorded["guard_patched_reference"][0])
    same, of = int(equal["bitwise equal"].sum()), int(equal["of"].sum())
    lines.append(
        f"`eager` answered {same} of {of} compared requests bitwise as the patched engine on vLLM 0.20.0"
        f"{'' if same == of else ' (not all)'}"
        + (f", and {later_eager} on vLLM {later}" if later_eager else "")
        + " (*`eager`: the right answer instead of an error*)"
    )
    alarms = [t.false_alarms(recorded[n][0]) for n in ("guard_false_alarms", "guard026_false_alarms")]
    count = sum(int(a["alarms"].sum()) for a in alarms)
    checked = sum(int(a["replays checked"].sum()) for a in alarms)
    lines.append(f"{plural(count, 'alarm')} on correct engines over {checked} replays checked (*No false alarms*)")
    cost = t.guard_cost(recorded["guard_cost"][0])
    lines.append(
        f"the checks took {span(cost['checking, % of wall time'], '{:.3f}')} % of wall time, tokens per second "
        f"on / off {span(cost['on / off'], '{:.4f}')} (*What it costs*)"
    )
    mutants = t.mutant_table(recorded["guard026_mutants"][0])
    named = mutants[mutants["fields named"].astype(str) != "none"]
    silent = mutants[mutants["fields named"].astype(str) == "none"]
    lines.append(
        f"of {plural(len(mutants), 'planted bug')} the guard named {len(named)} ({listing(list(named['mutant']))})"
        + (f", not {listing(list(silent['mutant']))}" if len(silent) else "")
        + " (*Planted bugs of the class*)"
    )
    return markdown("**The result, read from the recordings:**", "\n".join(f"* {line};" for line in lines)[:-1] + ".")


def _later_release(recorded: dict) -> tuple[str, str, str]:
    """The later 0.20 release's engines (``guard_v0_20_2``), counted as the lead counts 0.20.0's: its vLLM version,
    ``"N of M engines"`` under ``error`` refused, ``"N of M"`` requests under ``eager`` bitwise as the patched
    0.20.0 engine; empty strings where it is not recorded or holds no engine of that mode."""
    from flexfix.edition.tables import guard as t

    if "guard_v0_20_2" not in recorded:
        return "", "", ""
    table, prov = recorded["guard_v0_20_2"]
    version = str(prov.get("vllm") or "0.20.2")
    engines = t.engine_guard(table)
    errors = engines[engines["guard"].astype(str) == "error"]
    refused = int((errors["outcome"] == "guard_refused").sum())
    error_said = f"{refused} of {plural(len(errors), 'engine')}" if len(errors) else ""
    eager = table.query("guard == 'eager'")
    eager_said = ""
    if len(eager) and "guard_patched_reference" in recorded:
        equal = t.eager_vs_reference(eager, recorded["guard_patched_reference"][0])
        same, of = int(equal["bitwise equal"].sum()), int(equal["of"].sum())
        eager_said = f"{same} of {of}" + ("" if same == of else " (not all)")
    return version, error_said, eager_said


def _ended(r) -> str:
    """How an engine of :func:`flexfix.edition.tables.guard.engine_guard` ended, in words."""
    if r["outcome"] == "guard_refused":
        graph = r["first alarm's graph, tokens"]
        return (
            f"the guard refused its replay {r['first alarm at replay']}"
            + (f" (a FULL graph of {graph} tokens)" if pd.notna(graph) else "")
            + f", naming {r['fields named']}, and the engine stopped"
        )
    return f"it ended `{r['outcome']}`, {r['replays checked']} replays checked, {r['replays with an alarm']} alarmed"


def _settings(engine: str) -> frozenset[str]:
    """An engine name's settings (:func:`flexfix.edition.tables.guard.engine_guard`), without its ``max_num_seqs N``,
    which a name gives only where the run set it: the tables' ``max_num_seqs`` column compares that."""
    return frozenset(p.strip() for p in str(engine).split(",") if not p.strip().startswith("max_num_seqs"))


def live(engines, recorded) -> str:
    """Under the live engine's table (round 22, D9): that it was measured in this run, not read from a recording,
    what it did, and whether the recorded engine of the same settings, requests and ``max_num_seqs`` (``recorded``:
    :func:`flexfix.edition.tables.guard.engine_guard` of the recorded runs that follow) ended the same way. Both tables
    are :func:`flexfix.edition.tables.guard.engine_guard`'s."""
    said = []
    for _, r in engines.iterrows():
        text = (
            f"`{r['engine']}` ran {r['requests']} requests at once, with `max_num_seqs` {r['max_num_seqs']}: "
            + _ended(r)
        )
        same = recorded[
            (recorded["requests"].astype(str) == str(r["requests"]))
            & (recorded["max_num_seqs"] == r["max_num_seqs"])
            & (recorded["engine"].map(_settings) == _settings(r["engine"]))
        ]
        keys = ["outcome", "fields named", "first alarm's graph, tokens"]  # how it ended
        for _, o in same.iterrows():
            alike = all(str(o[k]) == str(r[k]) for k in keys)
            text += (
                f". The recorded engine of the same settings, requests and `max_num_seqs` (`{o['engine']}`, in the "
                + (
                    "engine table below) ended the same way"
                    if alike
                    else f"engine table below) ended otherwise: {_ended(o)}"
                )
            )
        if not len(same):
            text += ". No recorded engine below ran these settings, requests and `max_num_seqs`"
        said.append(text)
    if not said:
        return ""
    return markdown(
        "**This run's engine, measured live** (the table above, not a recording; the recorded engines follow): "
        + "; ".join(said)
        + "."
    )
