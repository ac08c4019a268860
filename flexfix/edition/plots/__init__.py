"""Figures for the notebooks, one module per concept.  Each function returns a matplotlib Figure (and imports
matplotlib inside, so importing flexfix never needs a display).

:mod:`.layouts` where the rows live and what a captured kernel reads (notebook 03); :mod:`.replays` each replay's
error and the crashes (01, 02); :mod:`.invariance` bitwise batch invariance (04); :mod:`.cost` timings and
throughput (05); :mod:`.serving` the served requests against themselves alone (06); :mod:`.guard` what the replay guard
compares (07); :mod:`.style` what they share.

Each figure's legend says what its colours mean, and the colour words a caption may use for them are exported, one
dict per figure (``FIGURE_COLOURS``): legend label, or the start of one -> (colour word, hex).
"""

from flexfix.edition.plots.cost import ratio_lines, throughput_points
from flexfix.edition.plots.guard import GUARD_COLOURS, guard_invariant
from flexfix.edition.plots.invariance import CATEGORY_COLOURS, MAX_DIFF_COLOURS, category_heatmap, max_diff_vs_batch
from flexfix.edition.plots.layouts import (
    READ_WINDOW_COLOURS,
    STORAGE_OWNER_COLOURS,
    read_sources,
    read_windows,
    storage_owners,
)
from flexfix.edition.plots.replays import REPLAY_ERROR_COLOURS, replay_errors
from flexfix.edition.plots.serving import serving_figure
from flexfix.edition.plots.style import OUTCOME_COLOURS, SERIES_COLOURS

__all__ = [
    "storage_owners",
    "read_windows",
    "read_sources",
    "replay_errors",
    "category_heatmap",
    "max_diff_vs_batch",
    "ratio_lines",
    "throughput_points",
    "serving_figure",
    "guard_invariant",
    "FIGURE_COLOURS",
    "OUTCOME_COLOURS",
    "STORAGE_OWNER_COLOURS",
    "READ_WINDOW_COLOURS",
    "REPLAY_ERROR_COLOURS",
    "CATEGORY_COLOURS",
    "MAX_DIFF_COLOURS",
    "SERIES_COLOURS",
    "GUARD_COLOURS",
]

FIGURE_COLOURS = {
    "guard_invariant": GUARD_COLOURS,
    "storage_owners": STORAGE_OWNER_COLOURS,
    "read_windows": READ_WINDOW_COLOURS,
    "replay_errors": REPLAY_ERROR_COLOURS,
    "category_heatmap": CATEGORY_COLOURS,
    "max_diff_vs_batch": MAX_DIFF_COLOURS,
    "ratio_lines": dict(enumerate(SERIES_COLOURS)),
    "throughput_points": dict(enumerate(SERIES_COLOURS)),
}
