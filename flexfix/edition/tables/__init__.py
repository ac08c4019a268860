"""Small views of the results tables for the notebooks: what to show, not how it was measured.

One module per concept: :mod:`.provenance` (where a result was recorded), :mod:`.outcomes` (the crash scenarios),
:mod:`.invariance` (bitwise batch invariance), :mod:`.cost` (timings and throughput), :mod:`.releases` (the releases,
the patch and the two copies), :mod:`.serving` (the served requests).
"""

from flexfix.edition.tables.cost import (
    l2_effect,
    l2_effect_summary,
    ratio_summary,
    significant,
    throughput_ratios,
    throughput_runs,
    throughput_spread,
    throughput_table,
    timing_parameters,
    timing_ratios,
    timing_spread,
)
from flexfix.edition.tables.invariance import (
    device_title,
    engine_grid,
    engine_label,
    engine_verdicts,
    every_request_table,
    kernel_grid,
)
from flexfix.edition.tables.outcomes import (
    batch_records,
    engine_summary,
    outcome_summary,
    outcome_table,
    replay_steps,
    sanitizer_view,
    select_scenarios,
    threshold_table,
)
from flexfix.edition.tables.provenance import notebook_times_line, provenance_line, recorded_where
from flexfix.edition.tables.releases import random_shapes, release_checks, release_ranges, shared_copies, source_diff
from flexfix.edition.tables.serving import (
    differences,
    error_summary,
    failed_requests,
    log_tail,
    print_log_tails,
    scenario_table,
    stage_table,
)

__all__ = [
    "provenance_line",
    "recorded_where",
    "notebook_times_line",
    "outcome_summary",
    "engine_summary",
    "threshold_table",
    "sanitizer_view",
    "outcome_table",
    "batch_records",
    "select_scenarios",
    "replay_steps",
    "kernel_grid",
    "device_title",
    "engine_label",
    "engine_grid",
    "engine_verdicts",
    "every_request_table",
    "timing_ratios",
    "timing_parameters",
    "timing_spread",
    "significant",
    "l2_effect_summary",
    "l2_effect",
    "throughput_runs",
    "throughput_ratios",
    "throughput_table",
    "ratio_summary",
    "throughput_spread",
    "release_ranges",
    "shared_copies",
    "release_checks",
    "source_diff",
    "random_shapes",
    "scenario_table",
    "stage_table",
    "failed_requests",
    "differences",
    "error_summary",
    "log_tail",
    "print_log_tails",
]
