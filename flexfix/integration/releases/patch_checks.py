"""``flexfix releases check-patch``: flexfix's patch and plugin against each release's *real* module.

For each version: ``pip download --no-deps`` its wheel, ``pip install --no-deps --target
build/releases-site/<version>``, then, in a child process with ``PYTHONPATH`` set to that folder (it shadows the
virtualenv's vLLM; the virtualenv supplies the dependencies), import the backend and run
:func:`flexfix.integration.releases.probe.probe_patch`.  :func:`expectation_gaps` says how a release differs from
what flexfix promises for its class.  The table goes to ``<out>/vllm_release_patch_checks-cpu.json`` (saved after
each version, as the survey is).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.version import Version

from flexfix.edition.results import IncrementalTable
from flexfix.integration.releases.index import ReleaseError
from flexfix.integration.releases.probe import PROBE_MARKER
from flexfix.integration.releases.survey import RELEASES_NAME, interrupted

__all__ = [
    "CHECKS_NAME",
    "download_wheel",
    "install_wheel",
    "probe_in_child",
    "plugin_lines",
    "expectation_gaps",
    "check_patch",
]

CHECKS_NAME = "vllm_release_patch_checks"
DEFAULT_WORK = Path("build")
REPO_ROOT = Path(__file__).resolve().parents[3]
CHILD_TIMEOUT_S = 600
PIP_TIMEOUT_S = 1800


def _run(command: Sequence[str], timeout: float, what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """``command`` as a child of :mod:`flexfix.measure.children` (its own process group, dead with this process
    however it ends), its output captured; a :class:`ReleaseError` if it runs past ``timeout`` seconds."""
    from flexfix.measure import children

    proc = children.start(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ReleaseError(f"{what} did not finish within {timeout:g} s: stopped") from None
    finally:
        children.end(proc)
    return subprocess.CompletedProcess(list(command), proc.returncode, out, err)


def _pip(args: Sequence[str], what: str) -> None:
    """Run ``python -m pip ARGS`` quietly; a :class:`ReleaseError` with pip's last lines if it fails."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    done = _run(command, PIP_TIMEOUT_S, what)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise ReleaseError(f"{what} failed (pip exit {done.returncode}):\n{tail}")


def download_wheel(version: Version, wheels_dir: Path) -> Path:
    """The wheel pip picks for ``vllm==version`` on this machine, downloaded once into ``wheels_dir/<version>``."""
    folder = wheels_dir / str(version)
    found = sorted(folder.glob("vllm-*.whl"))
    if not found:
        print(f"{version}: pip download --no-deps vllm=={version} (a few hundred MB) ...", flush=True)
        _pip(
            [
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--no-cache-dir",
                "--progress-bar",
                "off",
                "--dest",
                str(folder),
                f"vllm=={version}",
            ],
            f"pip download vllm=={version}",
        )
        found = sorted(folder.glob("vllm-*.whl"))
    if len(found) != 1:
        raise ReleaseError(f"expected one vLLM wheel in {folder}, found {[p.name for p in found]}")
    return found[0]


def install_wheel(wheel: Path, version: Version, site_root: Path) -> Path:
    """``pip install --no-deps --target site_root/<version> wheel``, once: a folder that exists is complete (pip
    installs into a temporary folder that is renamed when it is done)."""
    target = site_root / str(version)
    if target.is_dir():
        return target
    tmp = site_root / f".{version}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    print(f"{version}: pip install --no-deps --target {target} {wheel.name} ...", flush=True)
    _pip(["install", "--no-deps", "--no-compile", "--target", str(tmp), str(wheel)], f"pip install {wheel.name}")
    os.replace(tmp, target)
    return target


def probe_in_child(site: Path) -> dict[str, Any]:
    """:func:`probe_patch` in a child whose ``PYTHONPATH`` starts with ``site`` (the release's own vLLM)."""
    env = {k: v for k, v in os.environ.items() if k != "FLEXFIX_PATCH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site.resolve()), str(REPO_ROOT)])
    command = [sys.executable, "-m", "flexfix.integration.releases.probe"]
    done = _run(command, CHILD_TIMEOUT_S, f"the probe of {site}", env=env, cwd=REPO_ROOT)
    marked = [line for line in done.stdout.splitlines() if line.startswith(PROBE_MARKER)]
    if not marked:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return {"errors": {"child": f"exit {done.returncode}: {' | '.join(tail)}"}, "import_error": None}
    return {**json.loads(marked[-1][len(PROBE_MARKER) :]), "child_exit_code": done.returncode}


def plugin_lines(row: Mapping[str, Any]) -> list[str]:
    """What the plugin said in a probe: its log lines (``plugin_log``), or, in rows recorded before it logged
    through ``vllm.flexfix``, what it printed on stderr (``plugin_stderr``)."""
    return list(row.get("plugin_log", row.get("plugin_stderr")) or [])


def expectation_gaps(row: Mapping[str, Any]) -> list[str]:
    """How a probed release differs from what flexfix promises for its class (empty: as promised).  Affected
    (``as_strided``): apply() patches, the copy keeps strides (8, 1) and the values, supports_batch_invariance()
    is True after and restored by revert(); the plugin patches.  Otherwise: apply() does nothing and says so in one
    line, the plugin says so in one line on stderr and does not raise."""
    if row.get("import_error"):
        return [f"the module could not be imported: {row['import_error']}"]
    gaps = [f"{step} raised {error}" for step, error in row.get("errors", {}).items()]
    if row.get("imported_from_release") is False:
        gaps.append(f"vLLM was imported from {row.get('vllm_file')}, not from the release's folder")
    if row.get("vllm_seen") != row.get("version"):
        gaps.append(f"the child saw vLLM {row.get('vllm_seen')}, not {row.get('version')}")
    if row.get("ast_class") and row.get("release_class") != row["ast_class"]:
        gaps.append(f"release_class() {row.get('release_class')!r} but the source reads {row['ast_class']!r}")
    said = plugin_lines(row)
    if len(said) != 1:
        gaps.append(f"the plugin said {len(said)} lines, not 1")
    if row.get("release_class") == "as_strided":
        copy_after = row.get("copy_after") or {}
        expected = {
            "apply": True,
            "bi_after": True,
            "revert": True,
            "revert_restored_copy": True,
            "revert_restored_bi": True,
            "plugin_patched": True,
        }
        gaps += [f"{k} is {row.get(k)!r}, expected {v!r}" for k, v in expected.items() if row.get(k) is not v]
        if copy_after.get("strides") != [8, 1] or not copy_after.get("values_equal"):
            gaps.append(f"the patched copy gave {copy_after}, expected strides [8, 1] and the source's values")
    else:
        if row.get("apply") is not False:
            gaps.append(f"apply() returned {row.get('apply')!r}, expected False")
        if len(row.get("apply_output") or []) != 1:
            gaps.append(f"apply() printed {len(row.get('apply_output') or [])} lines, not 1")
        if row.get("plugin_patched"):
            gaps.append("the plugin patched a release with nothing to patch")
    return gaps


def _recorded_classes(out_dir: Path) -> dict[str, str]:
    """Version -> class from the survey table in ``out_dir``, if there is one."""
    path = out_dir / f"{RELEASES_NAME}-cpu.json"
    try:
        return {r["version"]: r["copy_class"] for r in json.loads(path.read_text())["records"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def check_patch(versions: Sequence[Version], table: IncrementalTable, work: Path = DEFAULT_WORK) -> list[dict]:
    """Download, install and probe every version; a row per version, saved after each."""
    classes = _recorded_classes(table.out_dir)
    for version in versions:
        site = install_wheel(download_wheel(version, work / "releases-wheels"), version, work / "releases-site")
        row = {"version": str(version), "ast_class": classes.get(str(version)), "wheel_site": str(site)}
        row.update(probe_in_child(site))
        vllm_file = Path(row["vllm_file"]) if row.get("vllm_file") else None
        row["imported_from_release"] = vllm_file is not None and vllm_file.is_relative_to(site.resolve())
        if vllm_file is not None and vllm_file.is_relative_to(REPO_ROOT):
            row["vllm_file"] = str(vllm_file.relative_to(REPO_ROOT))
        row["gaps"] = expectation_gaps(row)
        table.add(row)
        print(
            f"{row['version']:>8}  {row.get('release_class')!s:<22} apply={row.get('apply')!s:<5} "
            f"bi_after={row.get('bi_after')!s:<5} plugin: {' | '.join(plugin_lines(row))}"
            + (f"\n          gaps: {'; '.join(row['gaps'])}" if row["gaps"] else ""),
            flush=True,
        )
    return table.rows


def run_check_patch(args: argparse.Namespace) -> int:
    parameters = {
        "versions": [str(v) for v in args.versions],
        "method": "pip download --no-deps each wheel, pip install --no-deps --target <work>/releases-site/<version>, "
        "then a child process with PYTHONPATH=<that folder> imports the release's own backend module (the "
        "virtualenv supplies the dependencies) and runs flexfix's vllm_patch and vllm_plugin on it",
        "note": "ran on CPU against the wheels' modules; provenance's vllm is the virtualenv's, which the "
        "release shadowed",
    }
    table = IncrementalTable(args.out, CHECKS_NAME, parameters)
    try:
        rows = check_patch(args.versions, table, args.work)
    except KeyboardInterrupt as exc:
        return interrupted(table, exc)
    print(f"wrote {table.finish()}")
    return 1 if any(r["gaps"] for r in rows) else 0
