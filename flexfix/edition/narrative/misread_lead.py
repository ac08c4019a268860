"""Notebook 04, section *Crash or wrong answer, sweep by sweep*: its lead where the sweeps shown did not get both
outcomes (r14 D1): which one they got, from their cells exposed to the misread, and where the other is shown."""

from __future__ import annotations

from flexfix.edition.narrative import listing

__all__ = ["one_outcome"]

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
