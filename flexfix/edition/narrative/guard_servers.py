"""Notebook 07's *Serving* servers in one line, before their tables: how many `vllm serve` servers, on which
model, which ran stock under the guard and which patched without it, read from the recorded serving rows
(:func:`flexfix.edition.tables.guard.served`)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition import checks
from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["servers"]

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
