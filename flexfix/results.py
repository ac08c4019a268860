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
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "PROVENANCE_KEYS",
    "ResultsError",
    "provenance",
    "results_path",
    "write_results",
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


def results_path(results_dir: str | os.PathLike, name: str, device: str) -> Path:
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"results name must be a plain file stem, got {name!r}")
    return Path(results_dir) / f"{name}-{device}.json"


def write_results(
    results_dir: str | os.PathLike,
    name: str,
    table: pd.DataFrame | list[Mapping[str, Any]],
    device: str,
    parameters: Mapping[str, Any] | None = None,
    prov: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``table`` with provenance to ``results_dir/name-<device>.json``, atomically.

    A temporary file in the same folder is renamed over the target, so a reader sees
    the old file or the new one, never half of one.  A CPU run refuses to replace a
    file recorded on a GPU.
    """
    prov = dict(prov) if prov is not None else provenance(device, parameters)
    records = table.to_dict(orient="records") if isinstance(table, pd.DataFrame) else list(table)
    path = results_path(results_dir, name, prov["device_kind"])
    if path.exists():
        try:
            old_kind = json.loads(path.read_text())["provenance"]["device_kind"]
        except (ValueError, KeyError, TypeError):
            old_kind = None
        if old_kind == "cuda" and prov["device_kind"] != "cuda":
            raise ResultsError(f"{path} holds a GPU-recorded result; a CPU run does not replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"provenance": prov, "records": records}, indent=1, default=_jsonable)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(payload + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def read_results(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load a results file; fails with :class:`ResultsError` if provenance is missing."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"no results file at {path}") from None
    except ValueError as e:
        raise ResultsError(f"{path} is not valid JSON: {e}") from None
    prov = payload.get("provenance") if isinstance(payload, dict) else None
    if not isinstance(prov, dict):
        raise ResultsError(f"{path} has no provenance: refusing to use its numbers")
    missing = [k for k in PROVENANCE_KEYS if k not in prov]
    if missing:
        raise ResultsError(f"{path}: provenance lacks {', '.join(missing)}")
    if "records" not in payload:
        raise ResultsError(f"{path} has no records")
    return pd.DataFrame(payload["records"]), prov


def recorded(data_dir: str | os.PathLike, name: str, device: str = "cuda") -> tuple[pd.DataFrame, dict[str, Any]]:
    """A result recorded earlier (by default on a GPU), with its provenance."""
    return read_results(results_path(data_dir, name, device))


def recorded_all(
    data_dir: str | os.PathLike, names: list[str], device: str = "cuda"
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Several recorded tables of one kind, concatenated (column ``source``: the file's name), with
    each file's provenance."""
    loaded = [recorded(data_dir, name, device) for name in names]
    return (
        pd.concat([t.assign(source=name) for name, (t, _) in zip(names, loaded)], ignore_index=True),
        [p for _, p in loaded],
    )
