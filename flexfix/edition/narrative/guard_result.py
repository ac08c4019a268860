"""Notebook 07's result first, under *What you will learn*: one line per question, read from the recordings, each
naming the section that holds its tables (the same tables and counts as the bold sentences there)."""

from __future__ import annotations

from flexfix.edition.narrative import listing, markdown, plural, span

__all__ = ["result"]


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
