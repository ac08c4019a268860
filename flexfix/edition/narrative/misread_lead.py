"""Notebook 04, section *Crash or wrong answer, sweep by sweep*: its lead where the sweeps shown did not get both
outcomes (r14 D1): which one they got, from their cells exposed to the misread, and where the other is shown."""

from __future__ import annotations

from flexfix.edition.narrative import listing

__all__ = ["one_outcome", "takeaway"]

_OTHER = (
    "The same misread can also {other}: notebook 01's section *Crash or wrong answer: what decides* shows both "
    "outcomes, and what decides between them."
)


def one_outcome(shown: int, kinds: dict[str, set], analogs: list[str]) -> str:
    """The lead for ``shown`` sweeps whose exposed cells came to ``kinds`` (``{where: kinds of its cells}``, the
    sweeps with exposed cells only; :func:`flexfix.edition.narrative.misread.misread_cells`), none of them both a
    crash and a wrong result: which one they got (in every exposed cell, or in some, and in which sweeps), that no
    sweep got the other, and where the other is shown; ``analogs`` are the sweeps whose crash is the CPU analog's
    index error.  Empty where no sweep had an exposed cell."""
    if not kinds:
        return ""
    seen = set().union(*kinds.values())
    for kind, word, none, other in (
        ("crashed", "crashed", "answered silently wrong", "answer silently wrong"),
        ("wrong result", "answered silently wrong", "crashed", "crash"),
    ):
        where = [w for w, k in kinds.items() if kind in k]
        if not where:
            continue
        if seen == {kind}:
            sweeps = "in every sweep shown here" if len(where) == shown else f"in {listing(where, sep='; ')}"
            said = f"**Every cell exposed to the misread {word}, {sweeps}**"
        else:
            said = f"**The misread {word} in some exposed cells of {listing(where, sep='; ')}**"
        if kind == "crashed" and analogs:
            said += f" (the crash of {listing(analogs)} is the CPU analog's index error: its read outside the KV cache)"
        return f"{said}; no sweep shown here {none}. {_OTHER.format(other=other)}\n\n"
    return (
        "**No sweep shown here crashed or answered silently wrong** in its cells exposed to the misread. "
        + _OTHER.format(other="crash or answer silently wrong")
        + "\n\n"
    )


def takeaway(sweeps: dict, misread_cells) -> str:
    """The one line that ends the section (r16 D4), from the sweeps' cells: in how many sweeps the replayed launch
    with ``as_strided`` past one query block went wrong (crashed or answered wrong) in some cell, and whether the
    ``sliced`` copy with the same launch past one query block had no crash and no wrong result in every sweep;
    ``misread_cells`` is :func:`flexfix.edition.narrative.misread.misread_cells` (passed in: no import cycle)."""
    from flexfix.measure.outcomes import CRASHES
    from flexfix.mechanism.paged import Q_BLOCK

    hit, clean, sliced_ran = [], [], []
    built: dict[str, list[str]] = {}  # options -> sweeps where the sliced replay past one block built a kernel
    unbuilt: dict[str, list[str]] = {}  # options -> sweeps where it built none (every such cell an error, r17 D5)
    for where, table in sweeps.items():
        cells = misread_cells(table)
        if not cells.empty and cells["kind"].isin(["crashed", "wrong result"]).any():
            hit.append(where)
        parts = table["config"].str.split(", ")
        past = table[parts.str[-2].isin(["graph", "frozen"]) & (parts.str[-1] == "sliced") & (table["batch"] > Q_BLOCK)]
        for options, cells_ in past.groupby(past["config"].str.split(", ").str[:-2].str.join(", "), sort=True):
            (built if (cells_["outcome"] != "error").any() else unbuilt).setdefault(options, []).append(where)
        same = past[past["outcome"] != "error"]
        if same.empty:
            continue
        sliced_ran.append(where)
        if not (same["outcome"].isin(CRASHES) | (same["outcome"] == "wrong_result")).any():
            clean.append(where)
    if not hit:
        return "**Takeaway**: no sweep shown here got a crash or a wrong result from the misread."
    bug = (
        "in every sweep shown here" if len(hit) == len(sweeps) else f"in {listing(hit, sep='; ')}"
    ) + ", the bug showed, as a crash or as a wrong answer"
    if sliced_ran and clean == sliced_ran:
        fix = (
            "; the sliced copy, with the same replayed launch past one query block, had no crash and no wrong result "
            "in any of them" + _unbuilt(built, unbuilt)
        )
    elif sliced_ran:
        bad = [w for w in sliced_ran if w not in clean]
        fix = f"; the sliced copy with the same launch crashed or answered wrong too in {listing(bad, sep='; ')}"
    else:
        fix = "; no sweep shown ran the sliced copy with that launch"
    return f"**Takeaway**: {bug}{fix}."


def _unbuilt(built: dict[str, list[str]], unbuilt: dict[str, list[str]]) -> str:
    """Where some option sets built no kernel for that sliced replay (every cell an error): the claim is for the
    option sets that built one, and the sentence names both (r17 D5: nothing ran there to be right)."""
    if not unbuilt:
        return ""
    ran = listing([f"`{o}`" for o in built], sep="; ")
    none = "; ".join(f"`{o}` in {listing(w, sep='; ')}" for o, w in unbuilt.items())
    return f", with the options that built a kernel there ({ran}); no kernel was built there with {none}"
