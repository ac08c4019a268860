"""A folder a command writes whole (``flexfix publish``'s edition, ``flexfix book``'s pages), replaced only if the
command provably wrote it.

:func:`replace_folder` builds the new folder next to the old one and swaps it in; into every folder it writes it
puts a marker, :data:`MARKER`, naming the command and the SHA-256 of every file it wrote.  An existing folder is
replaced only if it is empty or its marker names the same command and lists exactly the files it holds, unchanged
(:func:`replace_problems`): a folder of the user's own files, one a user added a file to or edited, or one written
by another command is refused, naming the files.  A destination that is a symbolic link is followed: the folder it
points to is replaced and the link stays.  The swap is one ``renameat2(RENAME_EXCHANGE)`` where Linux offers it (no
moment without a folder), otherwise two renames with the interrupts held off between them; whatever happens, the
old folder is put back unless the new one is in place.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from flexfix.measure import children

__all__ = ["MARKER", "OutputFolderError", "written_files", "replace_problems", "replace_folder"]

MARKER = ".flexfix-output.json"


class OutputFolderError(OSError):
    """A folder that must not be replaced (not written by this command, or changed since)."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def written_files(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` but the marker (relative POSIX path -> SHA-256)."""
    folder = Path(folder)
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() or path.is_symlink():
            rel = path.relative_to(folder).as_posix()
            if rel != MARKER:
                found[rel] = _digest(path) if path.is_file() else "symlink"
    return found


def _short(names: list[str]) -> str:
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def replace_problems(dest: str | os.PathLike, owner: str, label: str) -> list[str]:
    """Why ``dest`` must not be replaced by ``owner`` (e.g. ``"flexfix publish"``), one message each, naming it as
    ``label`` (e.g. ``"--dest data/notebooks"``); empty when it may (missing, empty, or written by ``owner`` and
    unchanged since)."""
    dest = Path(dest)
    try:
        target = dest.resolve() if dest.is_symlink() else dest
        if not target.exists():
            return []
        if not target.is_dir():
            return [f"{label} is a file, not a folder"]
        present = written_files(target)
        marker = target / MARKER
        if not present and not marker.exists():
            return []
        try:
            recorded = json.loads(marker.read_text())
            ok = isinstance(recorded, dict) and isinstance(recorded.get("files"), dict)
        except (OSError, ValueError):
            ok = False
    except OSError as e:
        return [f"{label} cannot be read: {e.strerror or e}"]
    if not ok:
        return [
            f"{label} holds {_short(sorted(present))}, not written by {owner} (it has no {MARKER}): refusing to "
            "replace it (choose a new or empty folder, or move these files away)"
        ]
    if recorded.get("written_by") != owner:
        return [f"{label} was written by {recorded.get('written_by')!r}, not {owner}: refusing to replace it"]
    files = recorded["files"]
    added = sorted(set(present) - set(files))
    changed = sorted(n for n in present if n in files and files[n] != present[n])
    found = []
    if added:
        found.append(f"{label} holds {_short(added)}, which {owner} did not write: refusing to replace it")
    if changed:
        found.append(f"{label}: {_short(changed)} changed since {owner} wrote it: refusing to replace it")
    return found


def _exchange() -> Callable[[str, str], None] | None:
    """``renameat2(a, b, RENAME_EXCHANGE)``: swap two paths atomically (Linux >= 3.15, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    at_fdcwd, rename_exchange = -100, 2

    def exchange(a: str, b: str) -> None:
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), a, None, b)

    return exchange


_EXCHANGE = _exchange()


def _swap(tmp: Path, target: Path) -> Path | None:
    """Put ``tmp`` at ``target``; the old folder's new place (to remove), or None.  Called with interrupts held."""
    if not target.exists():
        os.replace(tmp, target)
        return None
    if _EXCHANGE is not None:
        try:
            _EXCHANGE(str(tmp), str(target))
            return tmp  # now the old folder
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
                raise
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old / target.name, target)  # the old folder back: never neither
        old.rmdir()
        raise
    return old


def replace_folder(dest: str | os.PathLike, fill: Callable[[Path], None], *, owner: str = "flexfix") -> None:
    """Build a new ``dest`` with ``fill(tmp)`` in a temporary folder next to it, mark it as ``owner``'s
    (:data:`MARKER`), then swap it in and remove the old one.  Refused (:class:`OutputFolderError`, nothing
    changed) when :func:`replace_problems` has anything to say, checked again right before the swap.  If
    anything fails, the temporary folder is removed and the old ``dest`` stays as it was."""
    dest = Path(dest)
    target = dest.resolve() if dest.is_symlink() else dest
    problems = replace_problems(dest, owner, str(dest))
    if problems:
        raise OutputFolderError("; ".join(problems))
    target.parent.mkdir(parents=True, exist_ok=True)
    with children.deferred_signals():
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
        children.watch_folder(tmp)
    gone = None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        fill(tmp)
        marker = {"written_by": owner, "files": written_files(tmp)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        with children.deferred_signals():  # no interrupt between the check and the swap, nor inside the swap
            problems = replace_problems(dest, owner, str(dest))
            if problems:
                raise OutputFolderError("; ".join(problems))
            gone = _swap(tmp, target)
    finally:
        with children.deferred_signals():
            shutil.rmtree(tmp, ignore_errors=True)
            if gone is not None:
                shutil.rmtree(gone, ignore_errors=True)
            children.forget_folder(tmp)
