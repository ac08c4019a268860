"""Results with provenance: tidy tables written atomically under a results folder.

Every file is JSON: ``{"provenance": {...}, "records": [...]}``, one record per row of a
tidy table.  The file name carries the device kind (``name-cuda.json``,
``name-cpu.json``), so a CPU run cannot overwrite what a GPU recorded; a guard also
refuses it explicitly.  Reading a file whose provenance is missing or incomplete fails
loudly: a number without its origin is not a result.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "PROVENANCE_KEYS",
    "ResultsError",
    "provenance",
    "results_path",
    "run_header",
    "write_results",
    "atomic_write",
    "IncrementalTable",
    "read_results",
    "recorded",
    "recorded_all",
]

PROVENANCE_KEYS = (
    "device_kind",
    "device_name",
    "driver",
    "torch",
    "cuda",
    "vllm",
    "git_commit",
    "date",
    "parameters",
)


class ResultsError(RuntimeError):
    """A results file that cannot be trusted or must not be written."""


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    # On the lent GPU machine the checkout travels without .git: the command that
    # runs the experiment passes the commit in FLEXFIX_GIT_COMMIT.
    if os.environ.get("FLEXFIX_GIT_COMMIT"):
        return os.environ["FLEXFIX_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def provenance(device: str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where a result comes from: device, driver, versions, commit, date, parameters."""
    import torch

    if device not in ("cpu", "cuda"):
        raise ValueError(f"provenance: device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        name, driver = torch.cuda.get_device_name(0), _driver_version()
    else:
        name, driver = f"cpu ({platform.machine()}, {os.cpu_count()} cores)", None
    return {
        "device_kind": device,
        "device_name": name,
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "vllm": _package_version("vllm"),
        "git_commit": _git_commit(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "parameters": dict(parameters or {}),
    }


def run_header(device: str, namespace: Mapping[str, Any]) -> str:
    """Two lines a notebook prints first, so that every executed copy says where it ran: the run's
    provenance (device, driver, CUDA, torch, vLLM, flexfix, commit, date) and its parameters, which
    are the UPPER_CASE names of ``namespace`` (the notebook's globals after the parameters cell)."""
    from flexfix import __version__

    prov = provenance(device)
    driver = f" (driver {prov['driver']})" if prov["driver"] else ""
    cuda = f", CUDA {prov['cuda']}" if device == "cuda" else ""
    commit = str(prov["git_commit"] or "unknown")[:10]
    run = (
        f"this run: {prov['device_name']}{driver}{cuda}, torch {prov['torch']}, vLLM {prov['vllm']}, "
        f"flexfix {__version__}, commit {commit}, {prov['date']}"
    )
    names = [k for k, v in namespace.items() if k.isupper() and not k.startswith("_") and _is_parameter(v)]
    return run + "\nparameters: " + ", ".join(f"{k}={namespace[k]!r}" for k in names)


def _is_parameter(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_parameter(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def results_path(results_dir: str | os.PathLike, name: str, device: str, *, partial: bool = False) -> Path:
    """``results_dir/name-<device>.json`` (``.partial.json`` for a run still in progress)."""
    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"results name must be a plain file stem, got {name!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"results device must be 'cpu' or 'cuda', got {device!r}")
    return Path(results_dir) / f"{name}-{device}{'.partial' if partial else ''}.json"


def _existing(path: Path) -> tuple[str | None, int | None]:
    """(device kind, number of records) of a results file already at ``path``; Nones if unreadable."""
    try:
        payload = json.loads(path.read_text())
        return payload["provenance"]["device_kind"], len(payload["records"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def write_results(
    results_dir: str | os.PathLike,
    name: str,
    table: pd.DataFrame | list[Mapping[str, Any]],
    device: str,
    parameters: Mapping[str, Any] | None = None,
    prov: Mapping[str, Any] | None = None,
    *,
    partial: bool = False,
    replace: bool = False,
) -> Path:
    """Write ``table`` with provenance to ``results_dir/name-<device>.json``, atomically.

    A temporary file in the same folder is renamed over the target, so a reader sees the old file or
    the new one, never half of one; a replaced file keeps its permissions.  Refused
    (:class:`ResultsError`, nothing written): an empty table; a CPU run over a file recorded on a GPU;
    and, unless ``replace``, a table with fewer records than the file it would replace.

    ``partial=True`` is for a run in progress: it writes ``name-<device>.partial.json`` and never touches
    the complete file, so an interrupted run keeps what it measured without replacing a finished result;
    the final (non-partial) write removes the partial file.  NaN is written as ``null`` and infinities as
    the strings ``"inf"``/``"-inf"`` (standard JSON).
    """
    prov = dict(prov) if prov is not None else provenance(device, parameters)
    records = table.to_dict(orient="records") if isinstance(table, pd.DataFrame) else list(table)
    path = results_path(results_dir, name, prov["device_kind"], partial=partial)
    final = results_path(results_dir, name, prov["device_kind"])
    if not records:
        raise ResultsError(f"refusing to write {final}: the table has no records")
    old_kind, old_count = _existing(final)
    if old_kind == "cuda" and prov["device_kind"] != "cuda":
        raise ResultsError(f"{final} holds a GPU-recorded result; a CPU run does not replace it")
    if not partial and not replace and old_count is not None and len(records) < old_count:
        raise ResultsError(
            f"{final} holds {old_count} records and this run has {len(records)}: refusing to replace it with "
            "fewer (write elsewhere, or replace it explicitly)"
        )
    payload = json.dumps(
        {"provenance": _standard(prov), "records": _standard(records)}, indent=1, default=_jsonable, allow_nan=False
    )
    atomic_write(path, payload + "\n")
    if not partial:
        results_path(results_dir, name, prov["device_kind"], partial=True).unlink(missing_ok=True)
    return path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, renamed over it: a reader sees the old
    file or the new one, never half of one.  A replaced file keeps its permissions; the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _standard(value: Any) -> Any:
    """``value`` with NaN -> None and +-inf -> "inf"/"-inf", recursively (for strict JSON)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {k: _standard(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_standard(v) for v in value]
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalars
        return _standard(value.item())
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return _standard(value.tolist())
    if hasattr(value, "item"):
        return _standard(value.item())
    if isinstance(value, set):
        return sorted(value, key=str)
    return str(value)


def _check_provenance(path: Path, prov: Any) -> None:
    if not isinstance(prov, dict):
        raise ResultsError(f"{path} has no provenance: refusing to use its numbers")
    missing = [k for k in PROVENANCE_KEYS if k not in prov]
    if missing:
        raise ResultsError(f"{path}: provenance lacks {', '.join(missing)}")
    if prov["device_kind"] not in ("cpu", "cuda"):
        raise ResultsError(f"{path}: provenance device_kind is {prov['device_kind']!r}, not 'cpu' or 'cuda'")
    empty = [k for k in ("device_name", "torch", "date") if not isinstance(prov[k], str) or not prov[k].strip()]
    if empty:
        raise ResultsError(f"{path}: provenance has no value for {', '.join(empty)}: refusing to use its numbers")
    try:
        _dt.datetime.fromisoformat(prov["date"])
    except ValueError:
        raise ResultsError(f"{path}: provenance date {prov['date']!r} is not an ISO date") from None
    if not isinstance(prov["parameters"], dict):
        raise ResultsError(f"{path}: provenance parameters must be a mapping, got {type(prov['parameters']).__name__}")


def read_results(
    path: str | os.PathLike, *, columns: Sequence[str] = (), values: Sequence[str] = ()
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load a results file and check it: provenance complete, records a non-empty list of objects, each
    record holding ``columns``, and a value (not null) for each of ``values``.  Anything else is a
    :class:`ResultsError` naming the file and what is wrong: a number without its origin, or a table that is not
    the one expected, is not a result."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"no results file at {path}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e}") from None
    if not isinstance(payload, dict):
        raise ResultsError(f"{path} is not a results file (a JSON object with provenance and records)")
    _check_provenance(path, payload.get("provenance"))
    records = payload.get("records")
    if records is None:
        raise ResultsError(f"{path} has no records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ResultsError(f"{path}: records must be a list of objects")
    if not records:
        raise ResultsError(f"{path} has no records (an empty table is not a result)")
    for i, record in enumerate(records):
        missing = [c for c in dict.fromkeys([*columns, *values]) if c not in record]
        if missing:
            raise ResultsError(f"{path}: record {i} lacks {', '.join(missing)} (not the table expected here)")
        empty = [c for c in values if record[c] is None]  # JSON null: NaN written as null, or a lost value
        if empty:
            raise ResultsError(f"{path}: record {i} has no value for {', '.join(empty)} (null): refusing to use it")
    return pd.DataFrame(records), payload["provenance"]


def recorded(
    data_dir: str | os.PathLike,
    name: str,
    device: str = "cuda",
    *,
    columns: Sequence[str] = (),
    values: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A result recorded earlier (by default on a GPU), with its provenance, checked by :func:`read_results`."""
    return read_results(results_path(data_dir, name, device), columns=columns, values=values)


def recorded_all(
    data_dir: str | os.PathLike,
    names: list[str],
    device: str = "cuda",
    *,
    columns: Sequence[str] = (),
    values: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Several recorded tables of one kind, concatenated (column ``source``: the file's name), with
    each file's provenance; every file must exist and pass :func:`read_results`."""
    if not names:
        raise ValueError("recorded_all needs at least one results name")
    loaded = [recorded(data_dir, name, device, columns=columns, values=values) for name in names]
    return (
        pd.concat([t.assign(source=name) for name, (t, _) in zip(names, loaded)], ignore_index=True),
        [p for _, p in loaded],
    )


class IncrementalTable:
    """Rows saved with provenance after every step, for a run that examines one key (a version, say) at a time:
    to the partial file (``name-<device>.partial.json``) while it runs, to the complete file once :meth:`finish`
    is called (the partial file is then removed).  A complete file that holds keys this run lacks is not replaced:
    :meth:`finish` raises :class:`ResultsError` and the run's rows stay in the partial file."""

    def __init__(
        self, out_dir: str | os.PathLike, name: str, parameters: Mapping[str, Any], *, key: str = "version"
    ) -> None:
        self.out_dir, self.name, self.key = Path(out_dir), name, key
        self.parameters = dict(parameters)
        self.rows: list[dict[str, Any]] = []

    def path(self, partial: bool) -> Path:
        return results_path(self.out_dir, self.name, "cpu", partial=partial)

    def _write(self, complete: bool, partial: bool) -> Path:
        parameters = {**self.parameters, "complete": complete, "rows": len(self.rows)}
        return write_results(self.out_dir, self.name, self.rows, "cpu", parameters, partial=partial, replace=True)

    def add(self, row: Mapping[str, Any]) -> None:
        """Keep ``row`` and save the table so far; an interrupt arriving meanwhile takes effect once it is saved."""
        from flexfix.measure.children import deferred_signals

        with deferred_signals():
            self.rows.append(dict(row))
            self._write(complete=False, partial=True)

    def _keys_lost(self) -> list[str]:
        final = self.path(partial=False)
        try:
            old = json.loads(final.read_text())["records"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        kept = {str(r.get(self.key)) for r in self.rows}
        return [str(r.get(self.key)) for r in old if str(r.get(self.key)) not in kept]

    def finish(self) -> Path:
        lost = self._keys_lost()
        if lost:
            self._write(complete=True, partial=True)
            raise ResultsError(
                f"{self.path(partial=False)} holds {', '.join(lost)}, which this run did not examine: not replaced; "
                f"this run's {len(self.rows)} rows are in {self.path(partial=True)}"
            )
        return self._write(complete=True, partial=False)
