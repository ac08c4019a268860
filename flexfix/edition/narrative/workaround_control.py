"""Notebook 02's verdict on the checks without the plugin, and the live rerun's coverage (r0102 round 15).

A5/D7: the verdict first, in two sentences: what the checks found, and that they had no positive control in their own
run, with the nearest one named from the files (notebook 01's live rerun where this edition wrote one on the same GPU,
else its recorded check).  D10: what this edition's live every-request rerun of notebook 01 covered on the patched
engines, batch by batch, with the graph mode vLLM's dispatcher gives each batch."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown, plural
from flexfix.edition.tables.outcome_rows import requests_differing as _differ


def _batches(run) -> list[dict]:
    return [rec for rec in run.records if rec.get("kind") == "every_request"]


def _seqs(run) -> int | None:
    from flexfix.edition.tables.outcomes import engine_max_num_seqs

    try:
        return engine_max_num_seqs(pd.Series(run._asdict()))
    except (TypeError, ValueError):  # a file without a usable setting: the sentence leaves it out
        return None


def _full_split(run) -> tuple[list[dict], list[dict]]:
    """(FULL-graph batches, the others) of a live run (an ``itertuples`` row): all others where its ``max_num_seqs``
    is not usable, as the sentences leave it out."""
    from flexfix.edition.tables.outcome_rows import full_graph_split

    if _seqs(run) is None:
        return [], _batches(run)
    return full_graph_split(pd.Series(run._asdict()))


def _live_stock(safety_prov: dict | None, live: tuple[pd.DataFrame, dict] | None) -> list:
    """The stock engines of notebook 01's live rerun where it ran on the checks' GPU, else none: the one decision
    :func:`verdict` and :func:`takeaway` both make (r0102 round 17, A2), so they cannot name different controls."""
    gpu = str((safety_prov or {}).get("device_name"))
    if live is None or str(live[1].get("device_name")) != gpu:
        return []
    return [r for r in live[0].itertuples() if "stock" in str(r.engine)]


def takeaway(safety_prov: dict | None, live: tuple[pd.DataFrame, dict] | None, control_provs) -> str:
    """Notebook 02's last takeaway (r0102 round 17, A2): the checks without the plugin and the positive control the
    first section's verdict names, from the same decision (:func:`_live_stock`): the live rerun on the same GPU where
    there is one, else notebook 01's recorded check with the GPU its files name."""
    gpu = str((safety_prov or {}).get("device_name"))
    if _live_stock(safety_prov, live):
        nearest = (
            f"this edition's live rerun of notebook 01 on the same tiny model and GPU ({gpu}), under other engine "
            "settings"
        )
    else:
        gpus = sorted({str(p.get("device_name")) for p in (control_provs or [])})
        where = " and ".join(gpus) if gpus else "a GPU its files name"
        nearest = (
            "notebook 01's recorded every-request check of stock 0.20.0 with full graphs (tiny model, recorded on "
            f"{where}"
            + ("" if gpus == [gpu] else f", not the {gpu} of these checks")
            + ", under other engine settings)"
        )
    from flexfix.mechanism import paged

    q = paged.Q_BLOCK
    return markdown(
        f"* Without the plugin, no request differed with piecewise graphs, with no graphs or with `max_num_seqs={q}` "
        "on stock 0.20.0 in the recorded check of the first section: what was recorded, not a proof, and without a "
        f"positive control of its own; the nearest, as the first section's verdict says, is {nearest}. With "
        f"`max_num_seqs={q}` no decode step held more than one query block, and only decode steps replay a FULL "
        "graph, so that this bug cannot occur there is true by construction (batch variance could still make a "
        "request differ). Each costs throughput (first "
        "section: one engine of each, a rough size, not a ranking); 0.20.1 and 0.20.2 ship the same copy."
    )


def verdict(table: pd.DataFrame, safety_prov: dict | None, live: tuple[pd.DataFrame, dict] | None) -> str:
    """The checks' verdict and their positive control, before the details: ``table`` the workaround table,
    ``safety_prov`` the checks' provenance, ``live`` notebook 01's live every-request rerun (results, provenance) or
    None.  A stock engine of the live rerun on the checks' GPU is named as the nearest control, with what it did."""
    ways = table[~table["vLLM setting"].str.startswith("FLEXFIX_PATCH")]
    counts = [c for c in table.columns if str(c).startswith("differed")]
    clean = [w for w, row in ways.iterrows() if all(str(row[c]).startswith("0 of ") for c in counts)]
    gpu = str((safety_prov or {}).get("device_name"))
    first = (
        f"**In short:** {'all' if len(clean) == len(ways) else f'{len(clean)} of the'} {plural(len(ways), 'way')} "
        f"around the bug checked gave no differing request (on {gpu}). These checks had no positive control in their "
        "own run"
    )
    stock = _live_stock(safety_prov, live)
    if not stock:
        return markdown(
            first + ": the nearest is notebook 01's every-request check of stock vLLM 0.20.0 with full graphs, "
            "recorded under other engine settings (the paragraph below names its GPU; what it did is shown in the "
            'section "Every request, on the patched engine").'
        )
    did = []
    for r in stock:
        differ = sum(_differ(rec) for rec in _batches(r))
        seqs = _seqs(r)
        did.append(
            f"{plural(differ, 'request')} of its completed batches differed from alone and it ended `{r.status}`"
            + (f", with `max_num_seqs` {seqs}" if seqs else "")
        )
    return markdown(
        first + f": the nearest is this edition's live rerun of notebook 01 on the same tiny model and GPU ({gpu}), "
        f"a positive control under other engine settings than these checks: its stock engine with full graphs: "
        f"{listing(did, sep='; ')}. The details follow."
    )


def live_coverage(live: tuple[pd.DataFrame, dict] | None) -> str:
    """What notebook 01's live rerun checked on the patched engines: per engine, how many requests differed at each
    batch and whether vLLM's dispatcher runs that batch with a FULL graph (only those can misread); None-safe."""
    if live is None or live[0].empty:
        return markdown(
            "**This edition's live rerun:** none read back here (notebook 01 reruns the every-request check only on "
            "a GPU with its engine runs switched on); the recorded rows above are the whole evidence of this section."
        )
    every, prov = live
    patched = every[~every["engine"].astype(str).str.contains("stock")]
    if patched.empty:
        return markdown("**This edition's live rerun** (notebook 01) ran no patched engine: it adds nothing here.")
    said = []
    for r in patched.itertuples():
        full, rest = _full_split(r)
        other = [int(x["requests"]) for x in rest]
        text = f"`{r.engine}`: " + (
            f"{sum(_differ(x) for x in full)} of {sum(int(x['requests']) for x in full)} requests differed in its "
            f"FULL-graph batch{'es' if len(full) > 1 else ''} of {listing([int(x['requests']) for x in full])}"
            if full
            else "no batch that replays a FULL graph"
        )
        if other:
            text += (
                f"; its batch{'es' if len(other) > 1 else ''} of {listing(other)} ran without a FULL graph "
                f"and test{'' if len(other) > 1 else 's'} nothing of this bug"
            )
        said.append(text + f", then it ended `{r.status}`")
    names = listing(sorted({str(e) for e in patched["engine"]}))
    return markdown(
        f"**This edition's live rerun** (notebook 01, {prov.get('device_name')}) covered, beside the recording "
        f"above, the patched engine{'s' if patched['engine'].nunique() > 1 else ''} {names} only. "
        + listing(said, sep="; ")
        + "."
    )
