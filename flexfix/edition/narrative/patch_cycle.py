"""What notebook 02's checks of ``apply()``/``revert()``/``patched()`` mean (split from :mod:`.workarounds`, which
re-exports it): each check's meaning when it holds and when it does not."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import require
from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["patch_cycle", "checks_table"]


# What each check of notebook 02's patch cycle means, when it holds and when it does not.
_CYCLE = {
    "before: copy keeps the destination's strides": (
        "before `apply()` the installed copy already kept the buffer's strides (this vLLM carries the fix)",
        "before `apply()` the installed copy gave the view the source's strides: the bug",
    ),
    "before: supports_batch_invariance()": (
        "before `apply()` FlexAttention already accepted batch invariance",
        "before `apply()` FlexAttention refused batch invariance",
    ),
    "apply() patched": ("`apply()` patched both", "`apply()` patched nothing"),
    "second apply() did nothing": ("a second `apply()` changed nothing", "a second `apply()` patched again"),
    "after: copy keeps the destination's strides": (
        "the patched copy keeps the buffer's strides",
        "**the patched copy still takes the source's strides**",
    ),
    "after: supports_batch_invariance()": (
        "FlexAttention then accepts batch invariance",
        "**FlexAttention still refuses batch invariance**",
    ),
    "revert() reverted": ("`revert()` undid the patch", "**`revert()` undid nothing**"),
    "second revert() did nothing": ("a second `revert()` changed nothing", "**a second `revert()` changed something**"),
    "reverted copy is the original object": (
        "the reverted copy is vLLM's own function object again",
        "**the reverted copy is not vLLM's own function object**",
    ),
    "reverted supports_batch_invariance() is the original value": (
        "its batch-invariance answer is the original one again",
        "**its batch-invariance answer is not the original one**",
    ),
    "inside patched(): supports_batch_invariance()": (
        "inside `patched()` FlexAttention accepts batch invariance",
        "**inside `patched()` FlexAttention still refuses batch invariance**",
    ),
    "after patched(): back to the original": (
        "after it, everything is back as it was",
        "**after `patched()` the patch is still in place**",
    ),
    "fixed torch-only runs all ok": (
        "the torch-only runs with the fixed copy matched the reference at every step",
        "**a torch-only run with the fixed copy did not match the reference**",
    ),
    "patched copy follows flexfix's slice rule": (
        "the patched copy put every element where flexfix's `copy_to_slice` (`dst[:G, :K]`) puts it",
        "**the patched copy put some element elsewhere than flexfix's `copy_to_slice`**",
    ),
}


def patch_cycle(checks: pd.DataFrame) -> str:
    """Notebook 02's checks of ``apply()``/``revert()``/``patched()`` (a ``check``/``value`` table), said as what
    each result means, in order; a check this function does not know is named with its value."""
    require(checks, "the patch checks", values=("check", "value"))
    said, failed = [], []
    for check, value in zip(checks["check"], checks["value"]):
        meaning = _CYCLE.get(str(check))
        if meaning is None:
            said.append(f"{check}: {value}")
            continue
        said.append(meaning[0 if bool(value) else 1])
        # a "before" check that does not hold only says this vLLM carries the fix; every other one is a failure
        if not bool(value) and not str(check).startswith("before:"):
            failed.append(meaning[1])
    n = len(checks)
    if failed:
        head = f"**{len(failed)} of {plural(n, 'check')} failed:** {listing(failed, sep='; ')}."
    else:
        before = [c for c, v in zip(checks["check"], checks["value"]) if str(c).startswith("before:") and not v]
        head = (
            f"**All {plural(n, 'check')} came out as they should:** `apply()` installs both changes, the patched copy "
            "puts every element where flexfix's slice rule does (a restatement of 0.21.0's copy, not 0.21.0's code), "
            "and `revert()` and `patched()` give vLLM back its own objects"
            + (
                f" (the {plural(len(before), '`before` check')} read False: this vLLM has the bug until `apply()`)."
                if before
                else "."
            )
        )
    if failed:
        return markdown(head, "In order: " + "; ".join(said) + ".")
    # all as they should: what each row means is the table's own column (checks_table; r0102 round 22, D14: it was a
    # list of fourteen bullets restating the table's rows right under it)
    return markdown(head + " The table's last column says what each row means.")


def _meaning(check, value) -> str:
    meaning = _CYCLE.get(str(check))
    return str(value) if meaning is None else meaning[0 if bool(value) else 1].replace("**", "").replace("`", "")


def checks_table(checks: pd.DataFrame) -> pd.DataFrame:
    """The patch checks (``check``/``value``), indexed by check, with what each value means beside it."""
    require(checks, "the patch checks", values=("check", "value"))
    shown = checks.set_index("check")[["value"]].copy()
    shown["what it means"] = [_meaning(c, v) for c, v in zip(checks["check"], checks["value"])]
    return shown
