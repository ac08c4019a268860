"""Notebook 06's lines on what runs live: the first screen's answer to "did vLLM run here?" (:func:`what_runs`) and
the line that opens the harness self-test (:func:`skip_line`); moved out of :mod:`flexfix.edition.narrative.serving`
(round 22), which re-exports them."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import markdown

__all__ = ["FAKE_LEAD", "REAL_BESIDE", "skip_line", "what_runs"]


def _recorded_times(loaded) -> str:
    """``, which in the recorded GPU run took 57–80 s to become healthy (its scenario table's
    `startup_seconds`),`` from the recording's ``startup_seconds``, the time the last section's scenario table shows
    (empty where it has none)."""
    if loaded is None:
        return ""
    table = loaded[0]
    column = "startup_seconds"
    values = pd.to_numeric(table[column], errors="coerce").dropna() if column in table else pd.Series([], dtype=float)
    if not len(values):
        return ""
    low, high = f"{values.min():.0f}", f"{values.max():.0f}"
    took = low if low == high else f"{low}–{high}"
    return (
        f", which in the recorded GPU run took {took} s to become healthy (the recorded scenario table's "
        "`startup_seconds`),"
    )


# The bold lead of :func:`what_runs` when the live part is the FAKE server: :mod:`flexfix.edition.publish` finds a
# FAKE-only notebook by it.
FAKE_LEAD = "This run's live part is the FAKE server, not vLLM"


def skip_line(run: dict) -> str:
    """One line at the start of the harness self-test: what this run's servers from there to the *Takeaways* are
    (``run``: :func:`flexfix.integration.serving.notebook_plan`'s plan), pointing back to the paragraph above it that
    says what the FAKE server shows, and naming the two outputs there that read the real servers' recordings (round
    22, A1: it had said the section held nothing about vLLM)."""
    if run.get("fake_server") is None:
        return markdown("**From here to the *Takeaways*, this run's own servers: the real `vllm serve`, live.**")
    return markdown(
        "**From here to the *Takeaways*, this run's servers are the FAKE server** (what it shows and what it does "
        "not: the paragraph above). Two outputs set the real servers' recordings beside it, each headed so: "
        f"{REAL_BESIDE}."
    )


# The outputs of the harness self-test that read the real servers' recordings (round 22, A1), by their bold heads.
REAL_BESIDE = (
    "**The real `vllm serve` servers, as recorded**, under the manager's table, and the recorded real server's "
    "client in **The HTTP 500 bodies**, at the section's end"
)


def what_runs(device: str, run: dict, data_dir) -> str:
    """The first screen's answer to "did vLLM run here?": ``run`` is :func:`flexfix.integration.serving.notebook_plan`'s
    plan (``fake_server`` set: the FAKE server plays every scenario); the recorded GPU run in ``data_dir`` gives the
    GPU, vLLM and commit the sentence names (or it says the run is not recorded yet)."""
    from flexfix.integration.serving.recording import recorded_run

    loaded = recorded_run(data_dir)
    prov = loaded[1] if loaded is not None else None
    recorded = (
        f"recorded on {prov['device_name']} with vLLM {prov['vllm']} at flexfix commit {str(prov['git_commit'])[:10]} "
        f"({str(prov['date'])[:10]}; that commit need not be this notebook's: what that run saved is shown, read by "
        "this notebook's code)"
        if prov
        else "not recorded yet"
    )
    if run.get("fake_server") is None:
        return markdown(
            "**This run starts the real `vllm serve`**, one server per scenario on this GPU, after the recorded GPU "
            f"run ({recorded}), which comes first."
        )
    if device != "cuda":
        why = "there is no GPU here, so the real servers are not started."
    else:
        why = (
            f"`RUN_SERVER` is False on this GPU machine, so the real servers{_recorded_times(loaded)} are not "
            f"started.{_edition_choice()}"
        )
    return markdown(  # r22 D2: what the FAKE server is, said once, where it runs (*Harness self-test*)
        f"**{FAKE_LEAD}**: {why} *Harness self-test*, after *The recorded GPU run*, says what the FAKE server is and "
        "what it shows. The real `vllm serve` under the plugin is shown from its recording, in *The recorded GPU "
        f"run*, after *The scenarios*: {recorded}."
    )


def _edition_choice() -> str:
    """Why `RUN_SERVER` is off on a GPU (round 22, D7): where the edition's GPU run turns it off, that it does, and
    why (its parameters' comment: the servers take too long for that run), so that it is not read as a failure."""
    from flexfix.edition.run_notebooks import PARAMETERS

    if PARAMETERS.get("cuda", {}).get("06_serving", {}).get("RUN_SERVER") is not False:
        return ""
    return (
        " The edition's GPU run turns it off (`flexfix.edition.run_notebooks.PARAMETERS`) to keep that run short: a "
        "choice, not a failure."
    )
