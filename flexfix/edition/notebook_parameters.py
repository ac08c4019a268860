"""What a notebook declares in its ``parameters`` cell, and what would go wrong with a run before anything runs.

:func:`notebook_parameters` reads the names and literal defaults of the cell tagged ``parameters``;
:func:`check_overrides` refuses a ``-p NAME`` no notebook declares, or a value of another type than the default
(``RUN_ENGINE='"false"'`` is a string, and a string is true); :func:`check_plan` adds notebooks that do not exist,
two notebooks with one output name, and an ``--out`` that would overwrite the sources or cannot be written.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexfix.edition import params

__all__ = ["UNKNOWN", "notebook_parameters", "check_overrides", "check_plan"]

# A parameter whose default is not a literal (an expression): its overrides are not type-checked.
UNKNOWN = object()


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """Names assigned in the notebook's cell tagged ``parameters``, each with its default value
    (:data:`UNKNOWN` where the default is not a literal); ``{}`` without such a cell.  ValueError
    (naming the notebook) if it cannot be read or its parameters cell is not Python."""
    import nbformat

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # noqa: BLE001 - nbformat raises many kinds: all mean "not a notebook"
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
        raise ValueError(f"notebook {str(path)!r} cannot be read: {reason}") from None
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        return {}
    source = "\n".join(
        ln for ln in cells[0].source.splitlines() if not ln.lstrip().startswith(("%", "!"))
    )  # IPython magics are not Python
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(
            f"notebook {path.name}: its parameters cell is not Python ({e.msg}, line {e.lineno})"
        ) from None
    found: dict[str, Any] = {}
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    found[target.id] = ast.literal_eval(value) if value is not None else UNKNOWN
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    found[target.id] = UNKNOWN
    return found


def _kind(value: Any) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "string", dict: "dict", type(None): "None"}
    if isinstance(value, (list, tuple)):
        items = sorted({names.get(type(v), type(v).__name__) for v in value})
        return f"a list of {' and '.join(i + 's' for i in items)}" if items else "an empty list"
    name = names.get(type(value), type(value).__name__)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _same_type(default: Any, value: Any) -> bool:
    """Whether ``value`` (from JSON) may replace ``default``: bool stays bool, int stays int (a float
    default takes an int too), a string stays a string, a list a list of the default's item type."""
    if default is UNKNOWN or default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            return False
        kinds = {type(d) for d in default}
        if len(kinds) != 1 or default[0] is None:  # empty or mixed default: items not checked
            return True
        return all(_same_type(default[0], v) for v in value)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))


def check_overrides(declared: dict[Path, dict[str, Any]], overrides: dict[str, Any]) -> list[str]:
    """Problems with ``-p`` overrides: a name no notebook declares, a value of another type than a
    notebook's default (each problem names the notebook and the value)."""
    problems = []
    for name, value in overrides.items():
        having = {nb: ps for nb, ps in declared.items() if name in ps}
        if not having:
            known = "; ".join(f"{nb.name}: {', '.join(ps) or 'no parameters cell'}" for nb, ps in declared.items())
            problems.append(f"-p {name}: no notebook being run has a parameter {name} (known: {known})")
            continue
        for nb, ps in having.items():
            if not _same_type(ps[name], value):
                problems.append(
                    f"-p {name}={json.dumps(value)}: {nb.name} has {name} = {ps[name]!r} ({_kind(ps[name])}), "
                    f"and the value given is {_kind(value)}"
                )
    return problems


def _inside(folder: Path, other: Path) -> bool:
    """Whether ``folder`` is ``other`` or one of its ancestors."""
    return folder == other or folder in other.parents


def check_plan(
    notebooks: Sequence[Path], out_dir: Path, overrides: dict[str, Any], results_dir: str | None
) -> tuple[list[str], dict[Path, dict[str, Any]]]:
    """Everything that would go wrong before anything runs: (problems, each notebook's parameters)."""
    problems: list[str] = []
    declared: dict[Path, dict[str, Any]] = {}
    outputs: dict[str, Path] = {}
    out = out_dir.resolve()
    out_ok = True
    for nb in notebooks:
        try:
            is_file, exists = nb.is_file(), nb.exists()
        except OSError as e:  # a name too long, a loop of links: the notebook cannot be named, let alone read
            problems.append(f"notebook {str(nb)[:120]!r} cannot be read: {e.strerror or e}")
            continue
        if not is_file:
            problems.append(f"notebook {str(nb)!r} " + ("is not a file" if exists else "does not exist"))
            continue
        if nb.suffix != ".ipynb":
            problems.append(f"notebook {str(nb)!r} is not an .ipynb file")
            continue
        try:
            declared[nb] = notebook_parameters(nb)
        except ValueError as e:
            problems.append(str(e))
            continue
        if nb.name in outputs:
            first = outputs[nb.name]
            same = first.resolve() == nb.resolve()
            problems.append(
                f"notebook {nb} is listed twice"
                if same
                else f"notebooks {first} and {nb} would both be written to {out_dir / nb.name}: run them into "
                "separate --out folders"
            )
        outputs.setdefault(nb.name, nb)
        if _inside(out, nb.resolve().parent):
            out_ok = False
            problems.append(
                f"--out {out_dir} is (or holds) the folder of {nb}: its executed copy would overwrite the source "
                "notebook; choose another --out"
            )
    if out_ok:
        try:
            params.writable_folder("--out", out_dir)
        except ValueError as e:
            problems.append(str(e))
    if results_dir is not None:
        try:
            params.writable_folder("--results", results_dir)
        except ValueError as e:
            problems.append(str(e))
        if declared and not any("RESULTS_DIR" in ps for ps in declared.values()):
            problems.append("--results: none of the notebooks being run has a RESULTS_DIR parameter")
    problems += check_overrides(declared, overrides) if declared else []
    return problems, declared
