"""Measurement: child processes that may crash, the recorded parts, the sweeps and the timings.

:mod:`~flexfix.measure.children` starts and stops child process groups; :mod:`~flexfix.measure.repro` runs one
crash scenario in a child and types its outcome; :mod:`~flexfix.measure.record` records every part with
provenance; :mod:`~flexfix.measure.invariance`, :mod:`~flexfix.measure.engine_sweep` and
:mod:`~flexfix.measure.timing` are the sweeps of notebooks 04 and 05.
"""
