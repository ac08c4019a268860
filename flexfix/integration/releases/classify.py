"""Classify one release's ``flex_attention.py`` with :mod:`ast`: which ``copy_to_persistent`` it carries.

* ``"as_strided"``: ``copy_to_persistent`` calls ``.as_strided(`` -- **affected** (0.20.0-0.20.2);
* ``"sliced"``: it copies into a slice of the destination (``dst[:G, :K]``) -- **fixed** (vLLM PR #40842);
* ``"no_persistent_buffers"``: no module-level ``copy_to_persistent`` (or no such file) -- **not affected**;
* ``"unknown"``: anything else (unparsable source, an unfamiliar copy), with the reason.

Each row also says whether ``FlexAttentionBackend`` overrides ``supports_batch_invariance`` (and what it returns
when the body is a plain ``return True``/``return False``), the sha256 of ``copy_to_persistent``'s source (equal
hashes: an identical function) and the sha256 of the whole file.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MEMBER", "VERDICTS", "classify_source", "verdict", "markdown_table"]

MEMBER = "vllm/v1/attention/backends/flex_attention.py"
VERDICTS = {
    "as_strided": "affected",
    "no_persistent_buffers": "not affected",
    "sliced": "fixed",
    "unknown": "unknown",
}


def _module_function(tree: ast.Module, name: str) -> ast.FunctionDef | None:
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name]
    return found[-1] if found else None


def _module_class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    return found[-1] if found else None


def _calls_named(tree: ast.AST, name: str) -> int:
    """How many calls ``name(...)`` or ``x.name(...)`` the tree makes."""
    return sum(
        1
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and (
            (isinstance(n.func, ast.Name) and n.func.id == name)
            or (isinstance(n.func, ast.Attribute) and n.func.attr == name)
        )
    )


def _subscripts_of(tree: ast.AST, name: str) -> list[ast.Subscript]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Subscript) and _names(n.value, name)]


def _names(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _copy_strategy(func: ast.FunctionDef) -> tuple[str, str]:
    """``("as_strided" | "sliced" | "unknown", reason)`` for a ``copy_to_persistent`` definition."""
    if _calls_named(func, "as_strided"):
        return "as_strided", "copy_to_persistent calls .as_strided("
    args = func.args.posonlyargs + func.args.args
    if not args:
        return "unknown", "copy_to_persistent takes no destination argument"
    dst = args[0].arg
    copies = _calls_named(func, "copy_")
    assigns_into_slice = any(
        isinstance(n, ast.Assign) and any(isinstance(t, ast.Subscript) and _names(t.value, dst) for t in n.targets)
        for n in ast.walk(func)
    )
    if _subscripts_of(func, dst) and (copies or assigns_into_slice):
        return "sliced", f"copy_to_persistent copies into a slice of its destination ({dst}[...])"
    return "unknown", "copy_to_persistent neither calls .as_strided( nor copies into a slice of its destination"


def _trivial_return(func: ast.FunctionDef) -> bool | None:
    """True/False for a body that is (a docstring and) ``return True``/``return False``; None otherwise."""
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) == 1 and isinstance(body[0], ast.Return) and isinstance(body[0].value, ast.Constant):
        value = body[0].value.value
        return value if isinstance(value, bool) else None
    return None


def _batch_invariance_override(tree: ast.Module) -> tuple[bool, bool | None]:
    """Does ``FlexAttentionBackend`` define ``supports_batch_invariance``, and what does it trivially return?"""
    backend = _module_class(tree, "FlexAttentionBackend")
    if backend is None:
        return False, None
    method = _module_function(ast.Module(body=backend.body, type_ignores=[]), "supports_batch_invariance")
    return (False, None) if method is None else (True, _trivial_return(method))


def _cudagraph_support(tree: ast.Module) -> str | None:
    """The value ``FlexAttentionMetadataBuilder._cudagraph_support`` is set to, as source text (None: not set,
    so the base builder's default applies -- ``NEVER`` in the releases read so far)."""
    builder = _module_class(tree, "FlexAttentionMetadataBuilder")
    for node in builder.body if builder is not None else []:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if _names(target, "_cudagraph_support") and node.value is not None:
            return ast.unparse(node.value)
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def classify_source(source: bytes | None) -> dict[str, Any]:
    """Classify one release's ``flex_attention.py`` (None: the release has no such file); see the module
    docstring for the classes."""
    row: dict[str, Any] = {
        "copy_class": "unknown",
        "reason": "",
        "copy_sha256": None,
        "copy_calls": 0,
        "has_backend_class": False,
        "bi_override": False,
        "bi_returns": None,
        "cudagraph_support": None,
        "file_sha256": None if source is None else _sha256(source),
    }
    if source is None:
        return {**row, "copy_class": "no_persistent_buffers", "reason": f"the release has no {MEMBER}"}
    try:
        text = source.decode("utf-8")
        tree = ast.parse(text)
    except (UnicodeDecodeError, SyntaxError, ValueError) as e:
        where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        return {**row, "reason": f"cannot parse the source{where}: {type(e).__name__}: {getattr(e, 'msg', e)}"}
    row["has_backend_class"] = _module_class(tree, "FlexAttentionBackend") is not None
    row["bi_override"], row["bi_returns"] = _batch_invariance_override(tree)
    row["copy_calls"] = _calls_named(tree, "copy_to_persistent")
    row["cudagraph_support"] = _cudagraph_support(tree)
    func = _module_function(tree, "copy_to_persistent")
    if func is None:
        return {**row, "copy_class": "no_persistent_buffers", "reason": "no module-level copy_to_persistent"}
    row["copy_sha256"] = _sha256(ast.get_source_segment(text, func).encode("utf-8"))
    row["copy_class"], row["reason"] = _copy_strategy(func)
    return row


def verdict(copy_class: str) -> str:
    """``"affected"``, ``"not affected"``, ``"fixed"`` or ``"unknown"`` for a copy class."""
    return VERDICTS.get(copy_class, "unknown")


def markdown_table(records: Iterable[Mapping[str, Any]]) -> str:
    """The ``version | class | verdict`` table of a survey, in Markdown (what README.md shows)."""
    lines = ["| version | class | verdict |", "| --- | --- | --- |"]
    lines += [f"| {r['version']} | `{r['copy_class']}` | {r['verdict']} |" for r in records]
    return "\n".join(lines)
