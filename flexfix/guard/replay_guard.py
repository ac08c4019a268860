"""The replay guard: a snapshot at each capture, a comparison before each replay, and what to do about it.

:class:`ReplayGuard` knows nothing of vLLM: a caller tells it when a graph with some key is captured
(:meth:`ReplayGuard.captured`, with the objects the graph reads) and asks it before each replay
(:meth:`ReplayGuard.before_replay`), which returns True (replay), False (run this step without the graph:
``eager`` mode) or raises :class:`ReplayGuardError` (``error`` mode).  The vLLM side
(:mod:`flexfix.guard.vllm_wrapper`) and the CPU analog (:mod:`flexfix.guard.analog`) are such callers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path

from flexfix.guard.mode import MODES
from flexfix.guard.snapshot import Finding, Snapshot, check, compare, take

__all__ = ["ReplayGuard", "ReplayGuardError", "LOGGER"]

LOGGER = "vllm.flexfix.guard"  # under vLLM's logger: its handlers and level apply inside vLLM


class ReplayGuardError(RuntimeError):
    """A CUDA graph was about to replay with metadata whose layout moved since its capture."""

    def __init__(self, message: str, key: Hashable, findings: list[Finding]):
        super().__init__(message)
        self.key = key
        self.findings = findings


class ReplayGuard:
    """One process's guard: a :class:`~flexfix.guard.snapshot.Snapshot` per captured graph (by key), compared
    before each of its replays; ``mode`` says what an alarm does.  Counts (``counts``), alarms and information by
    field (``alarms``, ``information``: ``"path: kind" -> replays``) and the first alarm are in :meth:`summary`;
    ``where`` (vLLM version, attention backend) heads its messages; ``facts`` holds what the hooks learnt of vLLM."""

    def __init__(
        self,
        mode: str,
        where: Mapping[str, str] | None = None,
        devices: Iterable[str] | None = ("cuda",),
    ):
        if mode not in MODES:
            raise ValueError(f"replay guard mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.where = dict(where or {})  # e.g. {"vLLM": "0.20.0", "attention backend": "FLEX_ATTENTION"}
        self.devices = None if devices is None else tuple(devices)
        self._captures: dict[Hashable, Snapshot] = {}
        self._logged: set[tuple] = set()
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.alarms: Counter[str] = Counter()  # "path: kind" -> replays
        self.information: Counter[str] = Counter()
        self.first_alarm: dict | None = None
        self.log = logging.getLogger(LOGGER)
        self.enabled = True  # False: every replay goes ahead unchecked (to time the guard against itself)
        self.stats_folder: str | None = None  # where write_summary() goes at the first alarm
        self.facts: dict[str, object] = {}  # what the hooks learnt of vLLM (its own DEBUG check on or off, ...)

    # -- the two calls ------------------------------------------------------------------------------------
    def captured(self, key: Hashable, roots: Mapping[str, object], not_read: Iterable[str] = ()) -> Snapshot:
        """Remember what the graph captured for ``key`` reads (``not_read``: paths no kernel of it reads)."""
        snap = take(roots, self.devices, not_read)
        with self._lock:
            self._captures[key] = snap
            self.counts["captures"] += 1
        return snap

    def before_replay(self, key: Hashable, roots: Mapping[str, object]) -> bool:
        """True: replay the graph; False: run the step without it (``eager``); raises in ``error`` mode.  The
        time it takes is added to ``counts["check_ns"]``: the guard's own cost, on the host, per replay."""
        if not self.enabled:
            return True
        start = time.perf_counter_ns()
        try:
            return self._before_replay(key, roots)
        finally:
            self.counts["check_ns"] += time.perf_counter_ns() - start

    def _before_replay(self, key: Hashable, roots: Mapping[str, object]) -> bool:
        capture = self._captures.get(key)
        if capture is None:  # captured before the guard was installed: nothing to compare with
            self.counts["replays_unguarded"] += 1
            return True
        findings = check(capture, roots)
        if findings is None:  # the step's structure differs from the capture's: walk it all
            findings = compare(capture, take(roots, self.devices))
            self.counts["replays_walked"] += 1
        alarms = [f for f in findings if f.alarm]
        first = False
        with self._lock:
            self.counts["replays_checked"] += 1
            self.counts["tensor_checks"] += capture.tensors
            self.counts["scalar_checks"] += capture.scalars
            for f in findings:
                (self.alarms if f.alarm else self.information)[f"{f.path}: {f.kind}"] += 1
            if alarms:
                self.counts["replays_alarmed"] += 1
                if self.first_alarm is None:
                    first = True
                    self.first_alarm = {
                        "key": str(key),
                        "replay_number": self.counts["replays_checked"],
                        "findings": [f.line() for f in alarms],
                    }
        self._log_once(key, findings)
        if alarms and first and self.stats_folder:
            self.write_summary(self.stats_folder)
        if not alarms:
            return True
        if self.mode == "error":
            self.counts["replays_refused"] += 1
            raise ReplayGuardError(self.message(key, alarms), key, alarms)
        if self.mode == "eager":
            self.counts["eager_steps"] += 1
            return False
        return True

    # -- reporting ----------------------------------------------------------------------------------------
    def message(self, key: Hashable, alarms: list[Finding]) -> str:
        """The refusal: the graph's key, where it ran, each field that moved (capture -> replay), what to do."""
        where = ", ".join(f"{k} {v}" for k, v in self.where.items())
        lines = [
            f"flexfix replay guard: refusing to replay the CUDA graph captured for {key}: "
            f"{_fields(len(alarms))} it reads moved since capture",
        ]
        if where:
            lines.append(f"  {where}")
        lines += [f"  {f.line()}" for f in alarms]
        lines.append(
            "  A captured kernel reads each tensor from the pointer and with the strides it saw at capture; "
            "replaying now would read other cells (wrong attention or an illegal memory access). "
            "FLEXFIX_GUARD=eager runs such steps without the graph; FLEXFIX_GUARD=log only counts them."
        )
        return "\n".join(lines)

    def _log_once(self, key: Hashable, findings: list[Finding]) -> None:
        for f in findings:
            mark = (key, f.path, f.kind)
            if mark in self._logged:
                continue
            self._logged.add(mark)
            if f.alarm:
                self.log.warning("flexfix replay guard (%s mode): graph %s: %s", self.mode, key, f.line())
            else:
                self.log.debug("flexfix replay guard: graph %s: %s (information)", key, f.line())

    def summary(self) -> dict:
        """What this guard saw, as JSON-ready data (the ``FLEXFIX_GUARD_STATS`` files hold it): mode, where,
        graphs captured, tensors and scalars per graph, the counts (captures, replays checked / alarmed / refused /
        run eagerly / unguarded / walked in full, ``check_ns`` the host time of all checks), alarms and information
        by field, the first alarm (graph, replay number, findings), and facts."""
        with self._lock:
            return {
                "mode": self.mode,
                "where": dict(self.where),
                "graphs_captured": len(self._captures),
                "fields_per_graph": max((s.tensors for s in self._captures.values()), default=0),
                "scalars_per_graph": max((s.scalars for s in self._captures.values()), default=0),
                **{k: self.counts[k] for k in _COUNTS},
                "alarms": dict(self.alarms),
                "information": dict(self.information),
                "first_alarm": self.first_alarm,
                "facts": dict(self.facts),
            }

    def write_summary(self, folder: str | os.PathLike) -> Path:
        """``guard-<pid>.json`` in ``folder`` (atomically): what this process's guard saw."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"guard-{os.getpid()}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.summary(), indent=1, default=str))
        os.replace(tmp, path)
        return path


_COUNTS = (
    "captures",
    "captures_without_metadata",
    "replays_checked",
    "replays_alarmed",
    "replays_refused",
    "eager_steps",
    "replays_unguarded",
    "replays_walked",
    "tensor_checks",
    "scalar_checks",
    "check_ns",
)


def _fields(n: int) -> str:
    """``1 field`` / ``3 fields``: the refusal is read by people, so it counts in words that agree."""
    return f"{n} field" if n == 1 else f"{n} fields"
