"""``flexfix``: the one command of this repository (``python -m flexfix`` is the same).

::

    flexfix status                      # the installed vLLM: affected? patched? what FLEXFIX_PATCH says
    flexfix repro --copy as_strided     # one torch-only crash scenario in a child process
    flexfix record kernel|sanitizer|engine|invariance|timing|engine-sweep
    flexfix notebooks                   # execute every notebook (make notebooks)
    flexfix publish | book              # the published edition, and its HTML book
    flexfix releases [check-patch]      # which vLLM releases carry the bug, read from their wheels
    flexfix serve record                # the fix under vllm serve
    flexfix guard SET ...               # the replay guard's evidence (FLEXFIX_GUARD=error|eager|log in vLLM)
    flexfix copy-speed --device cuda    # the installed copy's cost per call against vLLM 0.21.0's slice copy

Each command's module builds its own parser (``build_parser(prog)``) and runs it (``main(argv, prog)``); they are
imported only when their command runs, so ``flexfix status`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from flexfix import __version__

__all__ = ["COMMANDS", "build_parser", "command_parser", "status", "main"]

# command -> (module with build_parser(prog) and main(argv, prog), one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "status": (
        "flexfix.cli",
        "the installed vLLM, its release class, whether it is patched, FLEXFIX_PATCH, FLEXFIX_GUARD",
    ),
    "repro": ("flexfix.measure.repro", "one torch-only crash scenario in a child process, its outcome typed"),
    "record": ("flexfix.measure.record.cli", "record a part of the GPU evidence with provenance (what data/ holds)"),
    "notebooks": ("flexfix.edition.run_notebooks", "execute every notebook with papermill (make notebooks)"),
    "publish": ("flexfix.edition.publish", "copy a GPU run's executed notebooks into data/notebooks"),
    "book": ("flexfix.edition.book", "a static HTML book of the published notebooks (make book)"),
    "releases": ("flexfix.integration.releases.cli", "which vLLM releases carry the bug, read from their wheels"),
    "serve": ("flexfix.integration.serving.recording", "the serving scenarios under vllm serve (serve record)"),
    "guard": ("flexfix.measure.guard_sets", "record the replay guard's evidence: named sets of engines (GPU)"),
    "copy-speed": ("flexfix.measure.copy_speed", "the installed copy's cost per call against vLLM 0.21.0's slice copy"),
}
ADVICE = {
    "as_strided": "upgrade to vLLM >= 0.21.0, or run vLLM with FLEXFIX_PATCH=1 (flexfix's plugin patches it)",
    "sliced": "nothing to do: the fix of PR #40842 is in this release",
    "no_persistent_buffers": "nothing to do: this release has no persistent FlexAttention buffers",
}


def build_parser() -> argparse.ArgumentParser:
    from flexfix.edition.params import HelpFormatter

    commands = "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="flexfix",
        description="Reproduce, fix and explain the vLLM 0.20.x FlexAttention CUDA-graph illegal memory access "
        "(vLLM PR #40842).",
        epilog=f"commands:\n{commands}\n\n`flexfix COMMAND --help` describes a command's options. {EXTRA_HINT}.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"flexfix {__version__}", help="print the version")
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's options")
    return p


EXTRA_HINT = (
    "a bare `pip install .` holds the plugin, the guard and `flexfix status`; the other commands need the "
    "investigation's packages: `pip install '.[notebooks]'` (and vLLM with torch for the GPU ones), or `make install`"
)


def _module(name: str) -> Any:
    return importlib.import_module(COMMANDS[name][0])


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``flexfix NAME``."""
    if name == "status":
        return build_status_parser()
    return _module(name).build_parser(f"flexfix {name}")


# flexfix status


def _vllm_version() -> str | None:
    try:
        return metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return None


def _guard_status() -> str:
    """What ``FLEXFIX_GUARD`` asks of the vLLM processes started from this environment (:mod:`flexfix.guard`)."""
    from flexfix import guard

    requested = guard.status()["requested"]
    return {
        "off": "off (FLEXFIX_GUARD unset: vLLM's graphs replay unchecked)",
        "error": "error: a replay whose metadata moved since capture is refused, naming the field",
        "eager": "eager: a step whose metadata moved since capture runs without the graph",
        "log": "log: a replay whose metadata moved since capture is counted and logged",
    }.get(requested, requested)


def status() -> dict[str, Any]:
    """What ``flexfix status`` reports, as a dict.  Without vLLM (a bare install, no torch either) it says so
    without importing the patch, which needs torch."""
    from flexfix.integration import vllm_plugin

    raw = os.environ.get(vllm_plugin.ENV)
    try:
        requested = "on" if vllm_plugin.patch_requested() else "off"
    except ValueError as e:
        requested = f"invalid ({e})"
    report: dict[str, Any] = {
        "flexfix": __version__,
        "vllm": _vllm_version() or "not installed",
        "release_class": None,
        "verdict": "no vLLM installed: nothing to patch",
        "advice": None,
        "patched_in_this_process": False,
        "FLEXFIX_PATCH": "unset" if raw is None else raw,
        "plugin": requested,
        "guard": _guard_status(),
        "FLEXFIX_GUARD_NOT_READ": os.environ.get("FLEXFIX_GUARD_NOT_READ", "unset"),
        "FLEXFIX_GUARD_STATS": os.environ.get("FLEXFIX_GUARD_STATS", "unset"),
    }
    if report["vllm"] != "not installed":
        from flexfix.integration import vllm_patch

        report["patched_in_this_process"] = vllm_patch.is_patched()
        try:
            kind = vllm_patch.release_class()
        except (ImportError, RuntimeError) as e:
            report.update(release_class="unknown", verdict=f"cannot tell: {type(e).__name__}: {e}")
        else:
            report.update(release_class=kind, verdict=vllm_patch.RELEASE_CLASSES[kind], advice=ADVICE[kind])
    return report


def build_status_parser(prog: str = "flexfix status") -> argparse.ArgumentParser:
    from flexfix.edition.params import HelpFormatter

    p = argparse.ArgumentParser(
        prog=prog,
        description="Is the installed vLLM affected, and is it patched? (imports vLLM: a few seconds)",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def status_main(argv: Sequence[str] | None = None, prog: str = "flexfix status") -> int:
    args = build_status_parser(prog).parse_args(argv)
    report = status()
    # 1 where a setting would stop vLLM's start (the plugin refuses it by name): say so here first
    code = 1 if any(str(report[k]).startswith("invalid") for k in ("plugin", "guard")) else 0
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return code
    plugin = {
        "on": "on: the plugin patches every vLLM process that starts with it",
        "off": "off: the plugin leaves vLLM as it is",
    }.get(report["plugin"], report["plugin"])
    lines = [
        f"flexfix {report['flexfix']}",
        f"vLLM: {report['vllm']}",
        f"release class: {report['release_class'] or '-'} ({report['verdict']})",
        *([f"what to do: {report['advice']}"] if report["advice"] else []),
        f"patched in this process: {'yes' if report['patched_in_this_process'] else 'no'}",
        f"FLEXFIX_PATCH: {report['FLEXFIX_PATCH']} ({plugin})",
        f"FLEXFIX_GUARD: {report['guard']}",
        *[f"{k}: {report[k]}" for k in ("FLEXFIX_GUARD_NOT_READ", "FLEXFIX_GUARD_STATS") if report[k] != "unset"],
    ]
    print("\n".join(lines))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``flexfix COMMAND ...``: the exit status of the command (2 for a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # --help, --version, or a usage error naming the command (exit 2)
        return 2
    name, rest = argv[0], argv[1:]
    prog = f"flexfix {name}"
    try:
        run = status_main if name == "status" else _module(name).main
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing.startswith("flexfix") or not missing:
            raise
        print(f"{prog}: needs {missing}, which this Python lacks: {EXTRA_HINT}", file=sys.stderr)
        return 2
    from flexfix.measure import children

    return children.exit_code(lambda: run(rest, prog), prog)
