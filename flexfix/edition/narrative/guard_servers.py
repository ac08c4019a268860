"""Notebook 07's *Serving* servers in one line, before their tables: how many `vllm serve` servers, on which
model, which ran stock under the guard and which patched without it, read from the recorded serving rows
(:func:`flexfix.edition.tables.guard.served`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flexfix.edition import checks
from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["servers", "one_model", "same_gpu_crash", "clients", "provenance_lines"]

_OFF = {"", "0", "off", "none", "nan", "<na>"}


def servers(table: pd.DataFrame) -> str:
    """``table``: the guard's serving rows (``scenario``, ``model``, ``FLEXFIX_PATCH``, ``FLEXFIX_GUARD``,
    ``requests``); a server that planned no batch is refused (:class:`~flexfix.edition.checks.DataError`), not
    counted as planning other batches than the rest."""
    what = "serve_guard (notebook 07's Serving recording)"
    checks.require(table, what, values=("scenario", "model", "requests"))
    empty = [str(s) for s, r in zip(table["scenario"], table["requests"]) if not isinstance(r, (list, tuple)) or not r]
    if empty:
        raise checks.DataError(
            f"{what}: {listing(empty)} planned no batch (an empty or missing `requests`): refusing to describe the "
            "servers' batches"
        )
    models = listing(sorted({str(m) for m in table["model"]}))
    groups: dict[str, list[str]] = {}
    for _, r in table.iterrows():
        patched = str(r.get("FLEXFIX_PATCH")) == "1"
        guard = str(r.get("FLEXFIX_GUARD")).strip()
        guarded = guard.lower() not in _OFF
        key = ("patched" if patched else "stock") + (f" under the guard (`FLEXFIX_GUARD={guard}`)" if guarded else "")
        key += (
            ""
            if guarded
            else " without the guard (" + (f"`FLEXFIX_GUARD={guard}`)" if guard else "`FLEXFIX_GUARD` unset)")
        )
        groups.setdefault(key, []).append(f"`{r['scenario']}`")
    said = "; ".join(f"{listing(names)}: {key}" for key, names in groups.items())
    sent = {tuple(r) if isinstance(r, (list, tuple)) else (r,) for r in table["requests"]}
    same = (
        f", the same batches planned for each ({listing([str(n) for n in next(iter(sent))])} requests at once)"
        if len(sent) == 1
        else ", not all planned the same batches (the `requests` column)"
    )
    return markdown(
        f"**The servers**: {plural(len(table), '`vllm serve` server')} on the {models} "
        f"model{'s' if table['model'].nunique() > 1 else ''}{same}; {said}."
    )


def _where(prov: dict) -> str:
    return f"{prov.get('device_name', 'an unnamed GPU')}, commit {str(prov.get('git_commit', 'unnamed'))[:10]}"


def _unguarded_stock(table: pd.DataFrame) -> list[str]:
    return [
        str(r["scenario"])
        for _, r in table.iterrows()
        if str(r.get("FLEXFIX_PATCH")) != "1" and str(r.get("FLEXFIX_GUARD")).strip().lower() in _OFF
    ]


def _crashed(table: pd.DataFrame) -> list[str]:
    return [
        str(r["scenario"])
        for _, r in table.iterrows()
        if r.get("status") == "illegal_memory_access" or str(r.get("ima_in_log")) == "True"
    ]


def one_model(data_dir) -> str:
    """Notebook 06's lead on the one-model question, read from both recordings: whether notebook 07's *Serving*
    recording ran a stock server without the guard beside its patched ones (so that one recording answers), which of
    its servers ended in an illegal memory access, and, where it did not, that the answer (notebook 06's last cell
    of *The recorded GPU run*) combines notebook 06's stock server with notebook 07's patched servers, with the
    machine and commit of each."""
    from flexfix.edition import schemas
    from flexfix.edition.results import results_path
    from flexfix.edition.tables import guard as guard_tables

    head = "**Does the fix remove the crash, on one model?** "
    if not (Path(data_dir) / "serve_guard-cuda.json").exists():
        return head + "Notebook 07's *Serving* recording (one model for every server) is not recorded yet."
    table, prov = guard_tables.served(data_dir)
    stock, crashed = _unguarded_stock(table), _crashed(table)
    patched = [f"`{s}`" for s, p in zip(table["scenario"], table.get("FLEXFIX_PATCH", [])) if str(p) == "1"]
    guarded = [  # r22 D4: each server named with what it is, where the notebook first names it
        f"`{r['scenario']}` in `{str(r.get('FLEXFIX_GUARD')).strip()}` mode"
        for _, r in table.iterrows()
        if f"`{r['scenario']}`" not in patched and str(r["scenario"]) not in stock
    ]
    fell = (  # r18 D2: "crashed" read as "stopped"; a server the guard stopped did not misread
        f"{listing([f'`{s}`' for s in crashed])} ended in an illegal memory access"
        if crashed
        else "none of its servers ended in an illegal memory access (a server whose guard refused a replay in "
        "`error` mode stopped, its clients answered HTTP 500: that stop is the guard's, not the bug's)"
    )
    if stock:
        return head + (
            f"Notebook 07's *Serving* recording ({_where(prov)}) ran a stock server without the guard "
            f"({listing([f'`{s}`' for s in stock])}) and patched servers ({listing(patched)}) on one model, with the "
            f"same requests; {fell}: the last cell of *The recorded GPU run* reads its answer."
        )
    if results_path(data_dir, "serve", "cuda").exists():
        mine = (
            f"this notebook's recorded stock server ({_where(schemas.recorded(data_dir, 'serve', schemas.SERVING)[1])})"
        )
    else:
        mine = "this notebook's stock server (not recorded yet)"
    return head + (
        "No single recording ran a stock server without the guard and a patched server on one model: notebook 07's "
        f"*Serving* recording ran its stock servers ({listing(guarded)}) only under flexfix's replay guard, and "
        f"{fell}. The answer, in the last cell of *The recorded GPU run*, combines {mine} with notebook 07's patched "
        f"servers ({listing(patched)}: {'two servers' if len(patched) == 2 else plural(len(patched), 'server')} with "
        f"the fix, `FLEXFIX_PATCH=1`, {_where(prov)})."
    )


def _stock_debug(data_dir, model: str):
    """Notebook 07's ``guard_debug`` row of a stock engine of ``model`` and the recording's provenance, or None where
    it is not recorded or ran no such engine."""
    from flexfix.edition.tables import guard as guard_tables

    if not (Path(data_dir) / "guard_debug-cuda.json").exists():
        return None
    table, prov = guard_tables.recorded(data_dir, ["guard_debug"])["guard_debug"]
    rows = table[(table["model"] == model) & ~table["patched"].astype(bool)]
    return (rows.iloc[0], prov) if len(rows) else None


def same_gpu_crash(data_dir, model: str, guard_prov: dict) -> str:
    """Notebook 07's ``guard_debug`` recording in one sentence, where it ran a stock engine of ``model``: on which GPU
    and commit (said to be the patched servers' GPU where ``guard_prov`` names the same one), how many requests at
    once, under which guard mode, and how it ended; "" where it is not recorded or ran no such engine."""
    found = _stock_debug(data_dir, model)
    if found is None:
        return ""
    r, prov = found
    gpu = prov.get("device_name", "an unnamed GPU")
    where = "the patched servers' GPU" if gpu == guard_prov.get("device_name") else "another GPU"
    sizes = listing([str(n) for n in r.get("generations") or []]) or "its"
    ended = (
        "ended in CUDA's illegal memory access: the crash itself"
        if r["status"] == "illegal_memory_access"
        else f"ended `{r['status']}`, without an illegal memory access"
    )
    return (
        f" On {where} ({gpu}), in notebook 07's *vLLM's own check is blind to it* (a recording of its own, flexfix "
        f"commit {str(prov.get('git_commit', 'unnamed'))[:10]}), a stock engine of the `{model}` model without the "
        f"fix, sent a batch of {sizes} requests with its guard only logging (`guard={r['guard']}`), {ended}."
    )


def provenance_lines(said: list[tuple[str, dict]], data_dir=None, model: str | None = None) -> str:
    """Each recording a cross-notebook answer reads, one line each with its full provenance line
    (:func:`flexfix.edition.tables.provenance.provenance_line`), so the edition index counts it among the notebook's
    recorded results (r9c round 21, A1 A2); with ``data_dir`` and ``model``, notebook 07's ``guard_debug`` too where
    :func:`same_gpu_crash` quotes it."""
    from flexfix.edition.tables.provenance import provenance_line

    said = list(said)
    found = _stock_debug(data_dir, model) if data_dir is not None and model is not None else None
    if found is not None:
        said.append(("notebook 07's *vLLM's own check is blind to it* (`guard_debug`)", found[1]))
    return "\n".join(f"- {who}: {provenance_line(prov)}" for who, prov in said)


def _client_errors(table: pd.DataFrame, scenarios: list[str]) -> set[tuple[int, str]]:
    """The distinct (HTTP status, error as the client printed it) of the failed requests of ``scenarios``."""
    from flexfix.edition.tables.serving import failed_requests

    failed = failed_requests(table[table["scenario"].isin(scenarios)])
    return {(int(c), str(e)) for c, e in zip(failed["status_code"], failed["error"])}


def clients(table: pd.DataFrame, data_dir, served_prov: dict | None = None) -> str:
    """Notebook 07's *Serving*: what the ``error`` server's clients got, against what notebook 06's recorded stock
    server without the guard gave its clients (``data_dir``): the same status and error message, or which differ;
    then how the two logs differ, without putting that down to the guard: the two servers ran in two recordings
    (``served_prov``: this one's provenance; where it names another GPU or commit than notebook 06's, both are said;
    round 22, B1)."""
    log = "the server's log names the field instead of an illegal memory access."
    mine = _client_errors(table, ["guard_error"])
    if not mine:
        return f"Its clients got no error; {log}"
    codes = listing([f"HTTP {c}" for c in sorted({c for c, _ in mine})])
    theirs, stock, prov = set(), [], {}
    if data_dir is not None:
        from flexfix.edition import schemas
        from flexfix.edition.results import results_path

        if results_path(data_dir, "serve", "cuda").exists():
            served, prov = schemas.recorded(data_dir, "serve", schemas.SERVING)
            stock = _unguarded_stock(served)
            theirs = _client_errors(served, stock)
    if not theirs:
        return f"Its clients got {codes} (the error table above gives what they printed); {log}"
    named = listing([f"`{s}`" for s in stock])
    # r9c round 21, A2: the recording compared with, by its provenance line (the edition index counts it)
    source = "\n\n" + provenance_lines([(f"notebook 06's stock server ({named}), compared with here", prov)]) + "\n"
    logs = (
        f"The logs differ: this server's names the field the guard refused, notebook 06's {named} an illegal memory "
        "access. That the guard made that difference, these two recordings do not show by themselves: "
        + _apart(prov, served_prov, bool(_unguarded_stock(table)))
    )
    if mine == theirs:
        return (
            f"Its clients got what the clients of notebook 06's stock server without the guard ({named}) got, word "
            f"for word: {codes} with the same error message (the error table above; notebook 06's error table). "
            + logs
            + source
        )
    other = listing([f"HTTP {c}" for c in sorted({c for c, _ in theirs})])
    differ = "the same status, another error message" if other == codes else f"{other} instead"
    return (
        f"Its clients got {codes}; the clients of notebook 06's stock server without the guard ({named}) got "
        f"{differ} (the error table above; notebook 06's error table). " + logs + source
    )


def _apart(theirs: dict, mine: dict | None, unguarded: bool) -> str:
    """Why two servers of two recordings differ in more than the guard: the GPU and commit of each where they
    differ (``theirs``: notebook 06's provenance; ``mine``: this section's), or that they are two recordings;
    ``unguarded``: whether this section's recording also ran a stock server without the guard."""
    alone = "" if unguarded else ", and this section's recording ran no stock server without the guard"
    if mine is None:
        return (
            "the two servers ran in two recordings (their provenance lines: this section's above, notebook 06's below)."
        )
    if _where(theirs) == _where(mine):
        return f"the two servers ran in two recordings, though on one GPU and commit ({_where(mine)})."
    return (
        f"the two servers differ in more than the guard, notebook 06's run on {_where(theirs)}, this one on "
        f"{_where(mine)}{alone}."
    )
