"""The serving run as a figure: each request in a batch against the same request alone."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.plots.style import OUTCOME_COLOURS, figure

__all__ = ["SERVING_KINDS", "serving_figure"]

# What a request of a stage came to, in stacking order, with its colour.
SERVING_KINDS = {
    "bitwise equal to alone": OUTCOME_COLOURS["ok"],
    "same tokens, logprobs differ": OUTCOME_COLOURS["wrong_result"],
    "tokens differ": OUTCOME_COLOURS["index_error"],
    "error": OUTCOME_COLOURS["illegal_memory_access"],
    "not run (server gone)": OUTCOME_COLOURS["refused"],
}

_SHORT = {
    "bitwise equal to alone": "equal",
    "same tokens, logprobs differ": "logprobs differ",
    "tokens differ": "tokens differ",
    "error": "errors",
    "not run (server gone)": "not run",
}


def _bars(table: pd.DataFrame) -> list[tuple[str, int, dict[str, int]]]:
    """(label, requests, count per kind) for every stage but ``alone``, in the table's order."""
    bars = []
    for _, r in table.iterrows():
        for s in r["records"]:
            if s["stage"] == "alone":
                continue
            model = f" ({r['model']})" if isinstance(r.get("model"), str) else ""
            label = f"{r['scenario']}{model}: {s['stage']} {s['requests']}"
            if s.get("skipped"):
                bars.append((label, s["requests"], {"not run (server gone)": s["requests"]}))
                continue
            tokens = len(s["tokens_differ"])
            counts = {
                "bitwise equal to alone": s["bitwise_equal"],
                "same tokens, logprobs differ": len(s["logprobs_differ"]) - tokens,
                "tokens differ": tokens,
                "error": s["errored"],
            }
            bars.append((label, s["requests"], counts))
    return bars


def serving_figure(table: pd.DataFrame, where: str = ""):
    """Per scenario and stage, the share of its requests that were bitwise equal to themselves alone, had the same
    tokens but other logprobs, other tokens, or an error (a stacked bar each, every stage as wide as the axis
    whatever its size, so that a stage of one request shows as well as one of 128), with the counts written at the
    bar's end; ``where`` names the run (this run, the FAKE server, a recorded GPU run) in the title."""
    bars = _bars(table)
    fig, ax = figure((9, 0.45 * len(bars) + 1.4))
    for y, (_, n, counts) in enumerate(bars):
        left = 0.0
        for kind, colour in SERVING_KINDS.items():
            k = counts.get(kind, 0)
            if k:
                ax.barh(y, 100 * k / n, left=left, color=colour, label=kind)
                left += 100 * k / n
        said = ", ".join(f"{counts[kind]} {_SHORT[kind]}" for kind in SERVING_KINDS if counts.get(kind))
        ax.text(101.5, y, f"{said} (of {n})", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the stage's requests (%)")
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
    shown = [k for k in SERVING_KINDS if k in handles]
    ax.legend(
        [handles[k] for k in shown],
        shown,
        loc="upper left",
        bbox_to_anchor=(0, -0.9 / (0.45 * len(bars) + 1.4)),
        fontsize=8,
        ncol=min(3, len(shown)),
        frameon=False,
    )
    ax.set_title("each request in a batch vs the same request alone" + (f" ({where})" if where else ""), fontsize=10)
    fig.tight_layout()
    return fig
