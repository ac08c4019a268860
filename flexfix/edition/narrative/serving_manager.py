"""The server manager's cases in words (notebook 06, *The server manager*): how each case stopped and how long its
one completion took, read from :func:`flexfix.integration.serving.manager_demo`'s table."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import require
from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["manager_times", "real_servers_left"]


def manager_times(demo: pd.DataFrame) -> str:
    """Under the manager's table (:func:`flexfix.integration.serving.manager_demo`): how long each case's one
    completion took, how long the ``openai`` import took (timed apart, just before it), and, only where the data
    show it, that the first case's completion was still the slowest, with what is timed and what is not."""
    require(demo, "the manager's cases", values=("case", "seconds of the completion", "seconds importing openai"))
    lead = _manager_lead(demo)
    sent = demo[pd.to_numeric(demo["seconds of the completion"], errors="coerce").notna()]
    if sent.empty:
        return markdown(lead, "No case sent a completion.")
    seconds = pd.to_numeric(sent["seconds of the completion"])
    imports = pd.to_numeric(sent["seconds importing openai"])
    each = listing([f"{s:.3f} s ({c})" for c, s in zip(sent["case"], seconds)])
    text = (
        f"The one completion took {each}: `seconds, start to stopped` holds it with the health check, the import "
        "and the stop."
    )
    first_case = sent["case"].iloc[0]
    if imports.iloc[0] >= 0.1:
        text += (
            f" Importing the `openai` client library, timed apart just before the first completion, took "
            f"{imports.iloc[0]:.1f} s in the {first_case} case (`seconds importing openai`"
            + (
                f"; {'' if len(imports) == 2 else 'at most '}{imports.iloc[1:].max():.1f} s in "
                f"{'the later case' if len(imports) == 2 else 'the later cases'}, imported by then)."
                if len(imports) > 1
                else ")."
            )
        )
    elif imports.max() < 0.1 and demo.attrs.get("openai imported before") is True:
        text += (
            " `seconds importing openai` is below 0.1 s in every case that sent a completion because the `openai` "
            "client library was already loaded in this kernel when the demo began (the demo found it in "
            "`sys.modules`; which earlier import loaded it is not recorded): the first completion's time is not "
            "the import."
        )
    later = "the later one" if len(sent) == 2 else "the later ones"
    if len(sent) > 1 and seconds.iloc[1:].max() < 0.01:  # a later time of a few ms: no ratio the shown ms support
        return markdown(lead, text)
    if len(sent) > 1 and seconds.iloc[0] > 2 * seconds.iloc[1:].max():
        text += (
            f" With the import apart, the first completion, in the {first_case} case, is still the slowest, "
            f"{seconds.iloc[0] / seconds.iloc[1:].max():.1f} times as long as {later}"
            f"{'' if len(sent) == 2 else ' at their slowest'}: it is "
            "this notebook's first request, and what else it does first (open the first connection, start the "
            "client) is not timed apart here, so which of them takes the time is not measured."
        )
    elif len(sent) > 1:
        ratio = seconds.iloc[0] / seconds.iloc[1:].max()
        text += (
            f" Without the import, the first completion took {ratio:.1f} times as long as "
            f"{later if len(sent) == 2 else 'the slowest of the later ones'} ({seconds.iloc[0]:.3f} s against "
            f"{seconds.iloc[1:].max():.3f} s; each case starts its own server): not more than twice, so no cost of "
            "being the notebook's first request stands out in this run."
        )
    return markdown(lead, text)


def _manager_lead(demo: pd.DataFrame) -> str:
    """The manager table's conclusion in one bold sentence: how many cases left no process of their group, and
    which cases' servers the manager had to SIGKILL (their ``exit status`` names it)."""
    if "processes left" not in demo or "exit status" not in demo:
        return ""
    left = pd.to_numeric(demo["processes left"], errors="coerce")
    clean = demo[left == 0]["case"].tolist()
    killed = demo[demo["exit status"].astype(str).str.contains("SIGKILL")]["case"].tolist()
    cases = plural(len(demo), "case")
    said = (
        f"all {cases} left no process of their group behind"
        if len(clean) == len(demo)
        else f"{len(clean)} of {cases} left no process of their group behind "
        f"({listing(demo[left != 0]['case'].astype(str).tolist())} did)"
    )
    said += (
        f"; only {listing(killed)} ended by SIGKILL, the manager's last resort after the grace period"
        if killed
        else "; no server ended by SIGKILL: each stopped on the SIGTERM or by itself"
    )
    return f"**{said[0].upper() + said[1:]}.**"


def real_servers_left(data_dir) -> str:
    """Under the manager's table (r9c round 21, B1): what the recordings of the real ``vllm serve`` servers (this
    notebook's and notebook 07's *Serving*) kept of the same check, the processes of each server's group left when the
    manager returned (``group_left_after_stop``), and what they did not keep."""
    from flexfix.edition import schemas
    from flexfix.edition.results import results_path

    said = []
    for name, schema, where in (
        ("serve", schemas.SERVING, "this notebook's *The recorded GPU run*"),
        ("serve_guard", schemas.GUARD_SERVING, "notebook 07's *Serving*"),
    ):
        if not results_path(data_dir, name, "cuda").exists():
            continue
        table, _ = schemas.recorded(data_dir, name, schema)
        require(table, f"the {name} recording", values=("scenario", "group_left_after_stop"))
        per = [(str(s), int(n)) for s, n in zip(table["scenario"], table["group_left_after_stop"])]
        counts = listing(
            [f"{n} for {listing([f'`{s}`' for s, m in per if m == n])}" for n in dict.fromkeys(m for _, m in per)]
        )
        said.append(f"{counts} ({where})")
    if not said:
        return markdown("The real servers' recordings are not in the data folder: what they left is not shown.")
    return markdown(
        "**The real `vllm serve` servers, as recorded**: each recording keeps the same count as the last column "
        "above, the processes of the server's group left when the manager returned (`group_left_after_stop`): "
        + "; ".join(said)
        + ". How many processes each group held before the stop was not recorded; the recorded log tails show two of "
        "them, the API server and the engine core (*A note on the log tails above*)."
    )
