"""The serving run as a figure: each request in a batch against the same request alone."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.plots.style import OUTCOME_COLOURS, figure

__all__ = ["serving_figure"]


def serving_figure(table: pd.DataFrame, where: str = ""):
    """Per scenario and stage, the requests that were bitwise equal to themselves alone, had the same
    tokens but other logprobs, other tokens, or an error (a stacked bar each); ``where`` names the run
    (this run, the FAKE server, a recorded GPU run) in the title."""
    kinds = {
        "bitwise equal to alone": OUTCOME_COLOURS["ok"],
        "same tokens, logprobs differ": OUTCOME_COLOURS["wrong_result"],
        "tokens differ": OUTCOME_COLOURS["index_error"],
        "error": OUTCOME_COLOURS["illegal_memory_access"],
        "not run (server gone)": OUTCOME_COLOURS["refused"],
    }
    bars = []
    for _, r in table.iterrows():
        for s in r["records"]:
            if s["stage"] == "alone":
                continue
            label = f"{r['scenario']}: {s['stage']} {s['requests']}"
            if s.get("skipped"):
                bars.append((label, {"not run (server gone)": s["requests"]}))
                continue
            tokens = len(s["tokens_differ"])
            bars.append(
                (
                    label,
                    {
                        "bitwise equal to alone": s["bitwise_equal"],
                        "same tokens, logprobs differ": len(s["logprobs_differ"]) - tokens,
                        "tokens differ": tokens,
                        "error": s["errored"],
                    },
                )
            )
    fig, ax = figure((8, 0.45 * len(bars) + 1.2))
    for y, (_, counts) in enumerate(bars):
        left = 0
        for kind, colour in kinds.items():
            n = counts.get(kind, 0)
            if n:
                ax.barh(y, n, left=left, color=colour, label=kind)
                left += n
    ax.set_yticks(range(len(bars)), [b[0] for b in bars])
    ax.invert_yaxis()
    ax.set_xlabel("requests")
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
    shown = [k for k in kinds if k in handles]
    ax.legend([handles[k] for k in shown], shown, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("each request in a batch vs the same request alone" + (f" ({where})" if where else ""))
    return fig
