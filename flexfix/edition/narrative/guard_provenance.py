"""Notebook 07's recordings in one table, under its result: which section reads which recording, and the GPU, vLLM,
flexfix commit and date each was recorded with, read from each recording's provenance (the same fields its
provenance line prints where the section shows it); the *Serving* section's row includes notebook 06's recording,
whose stock server its conclusion compares with (round 22, A4)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["SECTIONS", "provenance"]

SECTIONS: dict[str, tuple[str, ...]] = {
    "*On the GPU: stock vLLM 0.20.0 under `FLEXFIX_GUARD=error`*": ("guard_stock_error", "guard_stock_error_17"),
    "*`eager`: the right answer instead of an error*": (
        "guard_stock_eager",
        "guard_patched_reference",
        "guard_v0_20_2",
    ),
    "*No false alarms*": ("guard_false_alarms", "guard026_false_alarms"),
    "*vLLM's own check is blind to it*": ("guard_debug",),
    "*Planted bugs of the class, on a fixed release and another backend*": ("guard026_mutants",),
    "*Serving*": ("serve_guard", "serve"),
    "*What it costs*": ("guard_cost",),
}


# how a recording of another notebook is named in the table
LABELS = {"serve": "`serve` (notebook 06's, its stock server compared with)"}


def provenance(recorded: dict[str, tuple[pd.DataFrame, dict]], served_prov: dict | None = None, data_dir=None) -> str:
    """One row per section and distinct provenance: the recordings it reads (``recorded``:
    :func:`flexfix.edition.tables.guard.recorded`; ``served_prov``: the provenance of
    :func:`flexfix.edition.tables.guard.served`, the *Serving* recording; ``data_dir``: where notebook 06's recording
    is, which the *Serving* section compares with), and the GPU, vLLM, commit and date of each. A recording that is
    not there is left out; a section with none is not listed."""
    provs = {name: prov for name, (_, prov) in recorded.items()}
    if served_prov is not None:
        provs["serve_guard"] = served_prov
    stock = _notebook06(data_dir)
    if stock is not None:
        provs["serve"] = stock
    rows = []
    for section, names in SECTIONS.items():
        groups: dict[tuple, list[str]] = {}
        for name in names:
            if name in provs:
                p = provs[name]
                key = (
                    p.get("device_name", "not recorded"),
                    str(p.get("vllm", "not recorded")),
                    str(p.get("git_commit", "not recorded"))[:10],
                    str(p.get("date", "not recorded"))[:10],
                )
                groups.setdefault(key, []).append(LABELS.get(name, f"`{name}`"))
        rows += [(section, listing(found), *key) for key, found in groups.items()]
    if not rows:
        return markdown("**Which recording each section reads**: none of notebook 07's recordings is there.")
    commits = sorted({r[4] for r in rows})
    gpus = list(dict.fromkeys(r[2] for r in rows))
    head = (
        "**Which recording each section reads**, and where each was made (the provenance line above each section's "
        f"tables repeats it): {len(commits)} flexfix {'commit' if len(commits) == 1 else 'commits'} "
        f"({listing([f'`{c}`' for c in commits])}), on {plural(len(gpus), 'GPU')} ({listing(gpus)}); a section's "
        "timings and counts are those of its own commit."
    )
    table = "| section | recordings | GPU | vLLM | flexfix commit | date |\n|---|---|---|---|---|---|\n" + "\n".join(
        "| " + " | ".join(r) + " |" for r in rows
    )
    return markdown(head, table)


def _notebook06(data_dir) -> dict | None:
    """The provenance of notebook 06's recorded GPU run (``serve``), or None where there is none."""
    if data_dir is None:
        return None
    from flexfix.edition import schemas
    from flexfix.edition.results import results_path

    if not results_path(data_dir, "serve", "cuda").exists():
        return None
    return schemas.recorded(data_dir, "serve", schemas.SERVING)[1]
