"""Record the GPU evidence: every crash scenario in its child process, written with provenance.

    flexfix record kernel --out build/results      # torch-only repro + sanitizer
    flexfix record engine --out build/results      # vLLM 0.20.0 engine scenarios
    flexfix record invariance --out build/results  # kernel-level batch invariance (notebook 04)
    flexfix record timing --out build/results      # decode attention timing (notebook 05)
    flexfix record engine-sweep --runs tiny:bi1:full,tiny:bi0:eager --name engine_sweep
                                             # engine invariance / every request / throughput (04, 05, 01)

Meant for a GPU machine with vLLM 0.20.0; the files it writes are what ``data/`` holds.
On CPU, ``kernel`` runs the frozen-launch analog instead (and says so in provenance); ``sanitizer``,
``engine`` and ``engine-sweep`` need a GPU and are refused without one.

Every argument is checked before any work: a bad value, a size over its maximum, an option that does
not apply to the part, an unwritable ``--out``, ``--device cuda`` without a GPU, or a results file the
run would replace with fewer records (without ``--replace``) is a usage error naming it (exit 2).
Progress goes to ``<name>-<device>.partial.json`` after each unit (run, cell group, engine); the
complete file is written at the end, and the partial one removed.  Ctrl-C or SIGTERM stops the run
within seconds, kills every child process, keeps the finished units in the partial file, says where,
and exits 130 (SIGINT) or 143 (SIGTERM).

One concept per module: :mod:`.recorded` (the tables ``data/`` holds), :mod:`.limits` (the largest values accepted),
:mod:`.pool` (children side by side, the table saved after each), :mod:`.kernel` (torch-only runs and the sanitizer),
:mod:`.engines` (vLLM engines), :mod:`.plan` (one planner per part: every argument checked before any work),
:mod:`.cli` (``flexfix record``).
"""

from flexfix.measure.record.engines import (
    engine_outcomes,
    engine_sweep,
    engines_side_by_side,
    model_dir,
    record_engine,
    record_engines_side_by_side,
)
from flexfix.measure.record.kernel import kernel_outcomes, sanitizer_outcomes
from flexfix.measure.record.limits import MAX_BATCH, MAX_ENGINE_WORKERS, MAX_WORKERS
from flexfix.measure.record.pool import outcome_row
from flexfix.measure.record.recorded import (
    RECORDED_ENGINE_TABLES,
    RECORDED_EVERY_REQUEST,
    RECORDED_KERNEL_INVARIANCE,
    RECORDED_SWEEP_TABLES,
    RECORDED_THROUGHPUT_TABLES,
)

__all__ = [
    "RECORDED_ENGINE_TABLES",
    "RECORDED_SWEEP_TABLES",
    "RECORDED_THROUGHPUT_TABLES",
    "RECORDED_KERNEL_INVARIANCE",
    "RECORDED_EVERY_REQUEST",
    "MAX_BATCH",
    "MAX_WORKERS",
    "MAX_ENGINE_WORKERS",
    "kernel_outcomes",
    "sanitizer_outcomes",
    "engine_outcomes",
    "record_engine",
    "outcome_row",
    "engine_sweep",
    "engines_side_by_side",
    "record_engines_side_by_side",
    "model_dir",
]
