"""Each notebook's reading of recorded data, run in-process: its parameters cell (with overrides, as papermill
applies them), its validating cell, and the cells that read ``DATA_DIR`` and show what they read -- the same code a
kernel runs, against a copy of ``data/`` that a test may damage, without starting a kernel.

:func:`run_data_cells` returns what the cells showed, as text (printed lines, the text of displayed tables and
sentences, a digest of each figure's drawing), so that a test can tell a damaged file that changed nothing from
one that changed what a reader is told."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
DATA = ROOT / "data"

# Per notebook: a piece of text that names each cell reading recorded data (or showing what such a cell read),
# in order; every other code cell after the validating one measures live and is left out.  A marker found in the
# validating cell names the statements of that cell that hold it (07 loads its recorded files there): they run
# again as the first data cell, on the data the test gives.
DATA_CELLS: dict[str, tuple[str, ...]] = {
    "01_reproduce_ima": (
        'schemas.recorded(DATA_DIR, "ima_kernel"',
        "plots.replay_errors(gpu_kernel",
        "sanitizer_from = ",
        "cause_runs, cause_prov = cause_tables.recorded(DATA_DIR)",
        "cause_tables.placement_table(cause_runs)",
        "outcome_grid(cause_runs",
        "engine_from = ",
        "tables.threshold_table(engine_runs)",
        "record.RECORDED_EVERY_REQUEST",
        "tables.outcome_table(",
    ),
    "02_apply_flexfix": (
        '"stock_workarounds", schemas.ENGINE_SWEEPS',
        '"vllm_releases"',
        '"vllm_release_patch_checks"',
        '"patched_inprocess", "patched_d", "patched_plugin"]',
        "tables.batch_records(patched_runs)",
        "workarounds.fix_on_every_request(",
        '"engine_scenarios_v0_20_2"',
    ),
    "04_batch_invariance": (
        "record.RECORDED_KERNEL_INVARIANCE",
        "tables.kernel_grid(gpu_kernel)",
        "plots.max_diff_vs_batch(gpu_kernel",
        "record.RECORDED_SWEEP_TABLES, schemas.ENGINE_SWEEPS)",
        "tables.engine_grid(needle)",
    ),
    "05_cost": (
        'schemas.recorded(DATA_DIR, "decode_timing"',
        '"graph_speedup",',
        '"bi_overhead",',
        '"flex_bw_fraction",\n    "batch",',
        "record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES",
        "plots.throughput_points(",
        "tables.throughput_spread(speed)",
        "tables.throughput_table(speed)",
        "bi_ratio.round(2)",
        "tables.ratio_summary(speed)",
        "anchors.anchor_table()",
    ),
    "06_serving": ("serving.show_recorded(DATA_DIR)",),
    "07_replay_guard": (
        "guard_tables.recorded(DATA_DIR)",  # the validating cell's last statement: the recorded files, loaded
        "stopped_runs = guard_tables.stopped_runs(",
        "guard_tables.first_message(recorded",
        "guard_tables.eager_vs_reference(eager_runs",
        'recorded["guard_v0_20_2"]',
        '("guard_false_alarms", "patched vLLM 0.20.0")',
        'recorded["guard_debug"]',
        'recorded["guard026_mutants"]',
        "guard_tables.servers_agree(served",
        'recorded["guard_cost"]',
    ),
}
# A notebook that loads several recorded files into one dict (results name -> (table, provenance)) in one statement:
# the dict's name.  The baseline notes which cell uses which entry, so that a damaged file's replay runs the loading
# statement on it and then starts at the first cell that uses its entry (07's guard_cost: its last cell).
LOADED = {"07_replay_guard": "recorded"}
# The values that make every notebook take its recorded-data path on any machine.
OVERRIDES = {"DEVICE": "cpu", "RUN_ENGINE": False, "RUN_SANITIZER": False, "RUN_SERVER": False}


def code_cells(stem: str) -> tuple[list[str], list[bool]]:
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"], [
        "parameters" in c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"
    ]


def data_cells(stem: str) -> tuple[str, str, list[str]]:
    """(parameters cell, validating cell, the data cells in order)."""
    sources, tagged = code_cells(stem)
    at = tagged.index(True)
    chosen = []
    for marker in DATA_CELLS[stem]:
        if marker in sources[at + 1]:
            chosen.append(_statements(sources[at + 1], marker))
            continue
        found = [s for s in sources[at + 2 :] if marker in s]
        assert len(found) == 1, f"{stem}: {len(found)} cells hold {marker!r}"
        chosen.append(found[0])
    return sources[at], sources[at + 1], chosen


def _statements(source: str, marker: str) -> str:
    """The top-level statements of ``source`` that hold ``marker``, as source text."""
    found = [ast.get_source_segment(source, node) for node in ast.parse(source).body]
    found = [text for text in found if text and marker in text]
    assert found, f"no statement holds {marker!r}"
    return "\n".join(found)


def _figure_digest(fig) -> str:
    """What a figure draws, as a digest of its artists' data and texts (no rendering: fast, and exact)."""
    import numpy as np

    h = hashlib.sha256()

    def add(values) -> None:
        h.update(np.ma.filled(np.ma.asarray(values, dtype=float), np.nan).tobytes())

    texts = [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        for line in ax.get_lines():
            add(line.get_xydata())
        for collection in ax.collections:
            add(collection.get_offsets())
            if collection.get_array() is not None:
                add(collection.get_array())
        for patch in ax.patches:
            add(patch.get_extents().bounds if not hasattr(patch, "get_bbox") else patch.get_bbox().bounds)
        for image in ax.images:
            add(image.get_array())
        texts += [t.get_text() for t in (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts)]
        texts += [t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels())]
        legend = ax.get_legend()
        texts += [t.get_text() for t in legend.get_texts()] if legend else []
    h.update("\x00".join(texts).encode())
    return "figure " + h.hexdigest()[:16]


def _shown(value) -> str:
    import matplotlib.figure
    import pandas as pd

    if isinstance(value, matplotlib.figure.Figure):
        return _figure_digest(value)
    if hasattr(value, "figure") and isinstance(getattr(value, "figure", None), matplotlib.figure.Figure):
        return _figure_digest(value.figure)
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return value.to_string()
    if hasattr(value, "_repr_png_") and callable(value._repr_png_):
        data = value._repr_png_()
        return "figure " + hashlib.sha256(data if isinstance(data, bytes) else json.dumps(data).encode()).hexdigest()
    return str(value)


def _exec_cell(source: str, namespace: dict, shown: list[str]) -> None:
    """Run ``source`` as IPython does: the value of a last expression is displayed."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102 - the notebook's own cell
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)  # noqa: S307
        if value is not None:
            shown.append(_shown(value))


class _Noted(dict):
    """A dict that notes the keys read from it (all of them when it is iterated)."""

    def __init__(self, data: dict, used: set):
        super().__init__(data)
        self.used = used

    def __getitem__(self, key):
        self.used.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.used.add(key)
        return super().get(key, default)

    def __iter__(self):
        self.used.update(super().keys())
        return super().__iter__()

    def keys(self):
        return list(iter(self))

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]


class Replay:
    """A notebook's data cells run once on ``data_dir`` (the baseline), remembering the state before each cell and
    which files each cell read, so that a run on a damaged copy can start at the first cell that reads it."""

    def __init__(self, stem: str, data_dir: Path, results_dir: Path, overrides: dict | None = None):
        from flexfix.edition import results

        self.stem, self.results_dir = stem, results_dir
        params, validate, self.cells = data_cells(stem)
        self.before: list[tuple[dict, list[str], str]] = []
        self.reads: list[set[str]] = []
        self.uses: list[set[str]] = []  # the entries of the LOADED dict each cell used
        self.loader: int | None = None  # the cell that fills the LOADED dict
        self._used: set[str] = set()
        reading: set[str] = set()
        original = results.read_results

        def logged(path, **kw):
            reading.add(Path(path).name)
            return original(path, **kw)

        namespace: dict = {"__name__": "__main__"}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(params, namespace)  # noqa: S102
            namespace.update({k: v for k, v in OVERRIDES.items() if k in namespace})
            namespace.update(DATA_DIR=str(data_dir), RESULTS_DIR=str(results_dir), **(overrides or {}))
            namespace["display"] = lambda *v, **_: None
            exec(validate, namespace)  # noqa: S102
        self.start = dict(namespace)
        results.read_results = logged
        try:
            self.shown = self.run(data_dir, 0, on_cell=lambda ns, shown, text: self._remember(ns, shown, text, reading))
        finally:
            results.read_results = original
        self.reads.append(set(reading))
        self.uses.append(set(self._used))

    def _remember(self, namespace: dict, shown: list[str], text: str, reading: set[str]) -> None:
        name = LOADED.get(self.stem)
        if self.before:
            self.reads.append(set(reading))
            self.uses.append(set(self._used))
            if name and isinstance(namespace.get(name), dict) and not isinstance(namespace[name], _Noted):
                namespace[name], self.loader = _Noted(namespace[name], self._used), len(self.before) - 1
        reading.clear()
        self._used.clear()
        self.before.append((dict(namespace), list(shown), text))

    def first_reading(self, names: list[str]) -> int:
        """The first cell that reads one of ``names`` (the baseline knows)."""
        return next(i for i, read in enumerate(self.reads) if read & set(names))

    def run_damaged(self, data_dir: Path, files: list[str]) -> list[str]:
        """What the cells show with ``files`` damaged in ``data_dir``: from the first cell that reads them, or -- when
        that is the loading cell of the LOADED dict -- the loading cell, then the first cell using their entries."""
        first, name = self.first_reading(files), LOADED.get(self.stem)
        names = {f.removesuffix("-cuda.json") for f in files}
        # the loading cell, if it shows nothing (what was shown before it and after it is the same)
        quiet = first == self.loader and self.before[first][1:] == self.before[first + 1][1:]
        if not quiet:
            return self.run(data_dir, first)  # not the loading cell, or one that shows something: the plain way
        namespace, out, shown = {**self.before[first][0], "DATA_DIR": str(data_dir)}, io.StringIO(), []
        with contextlib.redirect_stdout(out):
            _exec_cell(self.cells[first], namespace, shown)
        loaded = namespace.get(name)
        if out.getvalue() or shown or not isinstance(loaded, dict) or not names <= set(loaded):
            return self.run(data_dir, first)
        later = next((j for j in range(first + 1, len(self.cells)) if self.uses[j] & names), None)
        return self.shown if later is None else self.run(data_dir, later, loaded={name: loaded})

    def run(self, data_dir: Path, first: int = 0, on_cell=None, loaded: dict | None = None) -> list[str]:
        """The cells from ``first`` on, with ``DATA_DIR=data_dir``, from the state the baseline had there; what
        every cell showed (those before ``first`` as the baseline showed it)."""
        import matplotlib.pyplot as plt

        if first:
            start, shown, text = self.before[first]
            namespace, shown = dict(start), list(shown)
        else:
            namespace, shown, text = dict(self.start), [], ""
        namespace.update(loaded or {}, DATA_DIR=str(data_dir))
        namespace["display"] = lambda *values, **_: shown.extend(_shown(v) for v in values)
        out = io.StringIO(text)
        out.seek(0, io.SEEK_END)
        try:
            with contextlib.redirect_stdout(out):
                for source in self.cells[first:]:
                    if on_cell is not None:
                        on_cell(namespace, shown, out.getvalue())
                    _exec_cell(source, namespace, shown)
                    for number in plt.get_fignums():
                        shown.append(_figure_digest(plt.figure(number)))
                    plt.close("all")
        finally:
            plt.close("all")
        return [*out.getvalue().splitlines(), *shown]


def run_data_cells(stem: str, data_dir: Path, results_dir: Path, overrides: dict | None = None) -> list[str]:
    """Run ``stem``'s recorded-data cells with ``DATA_DIR=data_dir``; what they showed, in order."""
    return Replay(stem, data_dir, results_dir, overrides).shown


# Damaged copies of data/: a column dropped from every record, or nulled, or a list emptied; the same for a key of
# the records nested in a column (an engine's per-batch records, a run's per-step records).


def schema_groups(names: list[str], data_dir: Path) -> dict[str, list[str]]:
    """Files of one table kind together (one results name less its numbering: engine_scenarios_part2 goes with
    engine_scenarios): a damage is applied to a whole group at once."""
    groups: dict[str, list[str]] = {}
    for name in names:
        keys = frozenset().union(*json.loads((data_dir / name).read_text())["records"])
        groups.setdefault(str(sorted(keys)), []).append(name)
    return {files[0]: files for files in groups.values()}


def mutations(files: list[str], data_dir: Path) -> list[tuple]:
    """Every damage of a group: ("drop"|"null", column), ("empty", list column), ("drop"|"null", column, key)."""
    records = [r for name in files for r in json.loads((data_dir / name).read_text())["records"]]
    columns = sorted(set().union(*records))
    found: list[tuple] = []
    for c in columns:
        found += [("drop", c), ("null", c)]
        values = [r[c] for r in records if c in r]
        if any(isinstance(v, list) and v for v in values):
            found.append(("empty", c))
        nested = sorted({k for v in values if isinstance(v, list) for x in v if isinstance(x, dict) for k in x})
        found += [(how, c, k) for k in nested for how in ("drop", "null")]
    return found


def damage(files: list[str], data_dir: Path, mutation: tuple) -> None:
    """Apply ``mutation`` to ``files`` in ``data_dir`` (a copy)."""
    how, column, *key = mutation
    for name in files:
        path = data_dir / name
        payload = json.loads(path.read_text())
        for record in payload["records"]:
            if column not in record:
                continue
            if not key:
                if how == "drop":
                    del record[column]
                elif how == "null":
                    record[column] = None
                elif how == "empty" and isinstance(record[column], list):
                    record[column] = []
                continue
            for item in record[column] if isinstance(record[column], list) else []:
                if isinstance(item, dict) and key[0] in item:
                    if how == "drop":
                        del item[key[0]]
                    else:
                        item[key[0]] = None
        path.write_text(json.dumps(payload))


def outcome(replay: Replay, data_dir: Path, files: list[str]) -> tuple[str, str]:
    """("refused", message) for a clear refusal (ResultsError, DataError), ("same", "") when the damage of
    ``files`` changed nothing shown, ("raw", error) for any other exception, ("silent", first difference)."""
    from flexfix.edition.checks import DataError
    from flexfix.edition.results import ResultsError

    try:
        shown = replay.run_damaged(data_dir, files)
    except (ResultsError, DataError) as e:
        return "refused", str(e)
    except Exception as e:  # noqa: BLE001 - the point: which other exceptions a damaged file gives
        return "raw", f"{type(e).__name__}: {e}"
    if shown == replay.shown:
        return "same", ""
    diff = next(
        (f"{a!r} -> {b!r}" for a, b in zip(replay.shown, shown) if a != b), f"{len(replay.shown)} -> {len(shown)}"
    )
    return "silent", diff[:300]
