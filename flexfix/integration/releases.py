"""Which vLLM releases carry the FlexAttention ``as_strided`` bug, read from the releases themselves.

``flexfix releases`` lists vLLM's final releases on the PyPI simple index (from ``--min``, 0.15.0 by
default, to the newest), reads each release's ``vllm/v1/attention/backends/flex_attention.py`` without building or
installing anything, classifies it with :mod:`ast` and writes the table with provenance
(``<out>/vllm_releases-cpu.json`` through :func:`flexfix.edition.results.write_results`):

* ``"as_strided"``: ``copy_to_persistent`` calls ``.as_strided(`` -- **affected** (0.20.0-0.20.2);
* ``"sliced"``: it copies into a slice of the destination (``dst[:G, :K]``) -- **fixed** (vLLM PR #40842);
* ``"no_persistent_buffers"``: no module-level ``copy_to_persistent`` (or no such file) -- **not affected**;
* ``"unknown"``: anything else (unparsable source, an unfamiliar copy), with the reason.

Each row also says whether ``FlexAttentionBackend`` overrides ``supports_batch_invariance`` (and what it returns
when the body is a plain ``return True``/``return False``), the sha256 of ``copy_to_persistent``'s source (equal
hashes: an identical function), the sha256 of the whole file and the archive it came from.

Where the file comes from: the manylinux x86_64 wheel pip would pick (highest build tag), read with HTTP range
requests (the zip's central directory, then the one member: a few MB of a 250-500 MB wheel); if a release has no
such wheel, or the server ignores ranges, its sdist is streamed and the stream stops at the member.  The member's
bytes (or the fact that it is absent) are cached under ``build/releases-cache/<archive file name>/``, so a rerun
only reads the index.

While it runs, the table so far is saved after every release under the name ``vllm_releases_partial``
(``<out>/vllm_releases_partial-cpu.json``, provenance ``complete: false``); the final name is written only when
every release was examined, and the partial file is then removed.  A complete file is never replaced by a run that
examined fewer releases (e.g. a higher ``--min``): that run's table stays in the partial file.  Ctrl-C stops it
within seconds (exit code 130), keeping what was classified.

``flexfix releases check-patch --versions 0.19.1,0.20.0,...`` checks :mod:`flexfix.integration.vllm_patch` and the
plugin against each release's *real* module: ``pip download --no-deps`` its wheel, ``pip install --no-deps
--target build/releases-site/<version>``, then, in a child process with ``PYTHONPATH`` set to that folder (it
shadows the virtualenv's vLLM; the virtualenv supplies the dependencies), import the backend and run
``release_class()``, ``status()``, ``apply()``, the copy, ``revert()`` and the plugin's ``register()`` with
``FLEXFIX_PATCH=1``.  The table goes to ``<out>/vllm_release_patch_checks-cpu.json`` (same partial-file rule).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import http.client
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

__all__ = [
    "INDEX_URL",
    "MEMBER",
    "VERDICTS",
    "ReleaseError",
    "DistFile",
    "parse_simple_index",
    "final_releases",
    "source_candidates",
    "member_from_wheel",
    "member_from_sdist",
    "classify_source",
    "verdict",
    "survey",
    "markdown_table",
    "check_patch",
    "main",
]

INDEX_URL = "https://pypi.org/simple/vllm/"
MEMBER = "vllm/v1/attention/backends/flex_attention.py"
DEFAULT_MIN = "0.15.0"
DEFAULT_CACHE = Path("build/releases-cache")
DEFAULT_WORK = Path("build")
RELEASES_NAME = "vllm_releases"
CHECKS_NAME = "vllm_release_patch_checks"
TIMEOUT_S = 60
RANGE_BLOCK = 1 << 20
VERDICTS = {
    "as_strided": "affected",
    "no_persistent_buffers": "not affected",
    "sliced": "fixed",
    "unknown": "unknown",
}
# The wheel pip installs on the machines this project targets.
WHEEL_PLATFORM = "x86_64"


class ReleaseError(RuntimeError):
    """A release that could not be read: the network, the index or an archive; names the URL."""


# --- the index -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistFile:
    """One file of a release on the simple index."""

    filename: str
    url: str
    sha256: str | None
    version: Version
    kind: str  # "wheel" or "sdist"
    build_tag: tuple = ()
    yanked: bool = False

    @property
    def is_x86_64_wheel(self) -> bool:
        return self.kind == "wheel" and self.filename.endswith(f"_{WHEEL_PLATFORM}.whl")


class _AnchorParser(HTMLParser):
    """The ``<a href=...>text</a>`` anchors of a PEP 503 page, with their attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def _dist_file(attrs: Mapping[str, str | None], text: str, base_url: str) -> DistFile | None:
    """The file an anchor names, or None for anything that is not a wheel or an sdist of a valid version."""
    href = attrs.get("href") or ""
    url, _, fragment = urllib.parse.urljoin(base_url, href).partition("#")
    filename = text or urllib.parse.unquote(url.rsplit("/", 1)[-1])
    sha256 = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
    yanked = "data-yanked" in attrs
    try:
        if filename.endswith(".whl"):
            _, version, build_tag, _ = parse_wheel_filename(filename)
            return DistFile(filename, url, sha256, version, "wheel", tuple(build_tag), yanked)
        if filename.endswith((".tar.gz", ".zip")):
            _, version = parse_sdist_filename(filename)
            return DistFile(filename, url, sha256, version, "sdist", (), yanked)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return None


def parse_simple_index(html: str, base_url: str = INDEX_URL) -> list[DistFile]:
    """Every wheel and sdist a PEP 503 project page lists (unparsable names are left out)."""
    parser = _AnchorParser()
    parser.feed(html)
    files = (_dist_file(attrs, text, base_url) for attrs, text in parser.anchors)
    return [f for f in files if f is not None]


def final_releases(files: Iterable[DistFile], min_version: Version) -> tuple[dict[Version, list[DistFile]], dict]:
    """The final (not pre-/dev-) releases from ``min_version`` on, oldest first, each with its files; and what was
    left out, as ``{version: reason}``."""
    releases: dict[Version, list[DistFile]] = {}
    left_out: dict[str, str] = {}
    for f in files:
        if f.version < min_version:
            left_out[str(f.version)] = f"older than --min {min_version}"
        elif f.version.is_prerelease:
            left_out[str(f.version)] = "pre-release or dev release (final releases only)"
        else:
            releases.setdefault(f.version, []).append(f)
    return dict(sorted(releases.items())), left_out


def source_candidates(files: Sequence[DistFile], source: str = "auto") -> list[DistFile]:
    """Where to read a release's backend from, in order: the x86_64 wheel pip would pick (highest build tag), then
    the sdist; ``source`` ``"wheel"`` or ``"sdist"`` keeps only that kind."""
    wheels = sorted((f for f in files if f.is_x86_64_wheel), key=lambda f: (f.build_tag, f.filename), reverse=True)
    sdists = [f for f in files if f.kind == "sdist" and f.filename.endswith(".tar.gz")]
    ordered = wheels[:1] + sdists[:1]
    return [f for f in ordered if source in ("auto", f.kind)]


# --- reading one member without building ---------------------------------------------------------------------------

_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, OSError)


def _fetch(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: status, headers, body; a :class:`ReleaseError` naming the URL on any network failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "flexfix-releases", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status or 200, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as e:
        raise ReleaseError(f"cannot fetch {url}: HTTP {e.code} {e.reason}") from None
    except _NETWORK_ERRORS as e:
        raise ReleaseError(f"cannot fetch {url}: {getattr(e, 'reason', None) or e}") from None


def fetch_index(url: str = INDEX_URL) -> str:
    """The simple index page of vLLM (HTML)."""
    return _fetch(url, {"Accept": "text/html"})[2].decode("utf-8")


class RangeUnsupported(ReleaseError):
    """The server answered a range request with something other than the range."""


def _fetch_range(url: str, start: int, end: int) -> tuple[bytes, int]:
    """Bytes ``start..end`` (inclusive) of ``url`` and the file's total size, by one HTTP range request."""
    status, headers, body = _fetch(url, {"Range": f"bytes={start}-{end}"})
    content_range = {k.lower(): v for k, v in headers.items()}.get("content-range", "")
    if status != 206 or "/" not in content_range:
        raise RangeUnsupported(f"{url} ignored the range request (HTTP {status})")
    return body, int(content_range.rsplit("/", 1)[1])


class HTTPRangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests, in cached blocks: enough for :class:`zipfile.ZipFile`
    to read the central directory and one member of a remote zip."""

    def __init__(self, url: str, block: int = RANGE_BLOCK) -> None:
        super().__init__()
        self.url, self.block, self.pos = url, block, 0
        self.size = _fetch_range(url, 0, 0)[1]
        self._blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"seek before the start of {self.url}")
        self.pos = base + offset
        return self.pos

    def _block(self, index: int) -> bytes:
        if index not in self._blocks:
            start = index * self.block
            self._blocks[index] = _fetch_range(self.url, start, min(start + self.block, self.size) - 1)[0]
        return self._blocks[index]

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(self.size - self.pos, 0))
        done = 0
        while done < wanted:
            index, offset = divmod(self.pos, self.block)
            chunk = self._block(index)[offset : offset + wanted - done]
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self.pos += len(chunk)
        return done


def member_from_wheel(url: str, member: str = MEMBER) -> bytes | None:
    """``member`` of the remote wheel at ``url`` (None if the wheel has no such file), read with range requests;
    zipfile checks the member's CRC-32."""
    try:
        with zipfile.ZipFile(HTTPRangeFile(url)) as wheel:
            if member not in wheel.NameToInfo:
                return None
            return wheel.read(member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise ReleaseError(f"{url} is not a readable zip: {e}") from None


def member_from_sdist(url: str, member: str = MEMBER) -> bytes | None:
    """``member`` (below the sdist's top folder) of the remote ``.tar.gz`` at ``url``, streamed: reading stops at
    the member; None if the archive ends without it."""
    request = urllib.request.Request(url, headers={"User-Agent": "flexfix-releases"})
    try:
        with (
            urllib.request.urlopen(request, timeout=TIMEOUT_S) as response,
            tarfile.open(fileobj=response, mode="r|gz") as archive,
        ):
            for info in archive:
                if info.isfile() and info.name.partition("/")[2] == member:
                    return archive.extractfile(info).read()
    except urllib.error.HTTPError as e:
        raise ReleaseError(f"cannot fetch {url}: HTTP {e.code} {e.reason}") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ReleaseError(f"{url} is not a readable .tar.gz: {e}") from None
    except _NETWORK_ERRORS as e:
        raise ReleaseError(f"cannot fetch {url}: {getattr(e, 'reason', None) or e}") from None
    return None


_READERS: dict[str, Callable[[str, str], bytes | None]] = {"wheel": member_from_wheel, "sdist": member_from_sdist}
_ABSENT = "ABSENT"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cached_member(dist: DistFile, cache_dir: Path, member: str = MEMBER) -> tuple[bytes | None, bool]:
    """The member's bytes (None: the archive has no such file) and whether they came from the cache, which is
    keyed by the archive's file name (unique on PyPI)."""
    folder = cache_dir / dist.filename
    cached, absent = folder / Path(member).name, folder / _ABSENT
    if cached.exists():
        return cached.read_bytes(), True
    if absent.exists():
        return None, True
    data = _READERS[dist.kind](dist.url, member)
    _write_atomically(cached if data is not None else absent, data if data is not None else b"")
    return data, False


# --- classifying the source ----------------------------------------------------------------------------------------


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


# --- the table of releases -----------------------------------------------------------------------------------------


class IncrementalTable:
    """Rows saved with provenance after every step: under ``<name>_partial`` while running, under ``<name>`` once
    :meth:`finish` is called (then the partial file is removed).  A complete file that holds keys (versions) this
    run lacks is not replaced: :meth:`finish` raises and the run's rows stay in the partial file."""

    def __init__(self, out_dir: Path, name: str, parameters: Mapping[str, Any], key: str = "version") -> None:
        self.out_dir, self.name, self.key = Path(out_dir), name, key
        self.parameters = dict(parameters)
        self.rows: list[dict[str, Any]] = []

    @property
    def partial_name(self) -> str:
        return f"{self.name}_partial"

    def path(self, partial: bool) -> Path:
        from flexfix.edition.results import results_path

        return results_path(self.out_dir, self.partial_name if partial else self.name, "cpu")

    def _write(self, name: str, complete: bool) -> Path:
        from flexfix.edition.results import write_results

        parameters = {**self.parameters, "complete": complete, "rows": len(self.rows)}
        return write_results(self.out_dir, name, self.rows, "cpu", parameters)

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        self._write(self.partial_name, complete=False)

    def _keys_lost(self) -> list[str]:
        final = self.path(partial=False)
        if not final.exists():
            return []
        try:
            old = json.loads(final.read_text())["records"]
        except (ValueError, KeyError, TypeError):
            return []
        kept = {str(r.get(self.key)) for r in self.rows}
        return [str(r.get(self.key)) for r in old if str(r.get(self.key)) not in kept]

    def finish(self) -> Path:
        lost = self._keys_lost()
        if lost:
            self._write(self.partial_name, complete=True)
            raise ReleaseError(
                f"{self.path(partial=False)} holds {', '.join(lost)}, which this run did not examine: not replaced; "
                f"this run's {len(self.rows)} rows are in {self.path(partial=True)}"
            )
        path = self._write(self.name, complete=True)
        self.path(partial=True).unlink(missing_ok=True)
        return path


def examine_release(version: Version, files: Sequence[DistFile], cache_dir: Path, source: str = "auto") -> dict:
    """One row: the release's backend read from its first usable archive, classified."""
    candidates = source_candidates(files, source)
    if not candidates:
        raise ReleaseError(f"vLLM {version}: no {'x86_64 wheel or sdist' if source == 'auto' else source} on PyPI")
    errors = []
    for dist in candidates:
        try:
            data, _ = cached_member(dist, cache_dir)
        except RangeUnsupported as e:  # the next candidate (the sdist) streams instead
            errors.append(str(e))
            continue
        classified = classify_source(data)
        return {
            "version": str(version),
            "copy_class": classified["copy_class"],
            "verdict": verdict(classified["copy_class"]),
            **{k: v for k, v in classified.items() if k != "copy_class"},
            "source_kind": dist.kind,
            "source_file": dist.filename,
            "source_url": dist.url,
            "source_archive_sha256": dist.sha256,
            "yanked": all(f.yanked for f in files),
        }
    raise ReleaseError(f"vLLM {version}: no archive could be read: {'; '.join(errors)}")


def survey(
    releases: Mapping[Version, Sequence[DistFile]],
    table: IncrementalTable,
    cache_dir: Path = DEFAULT_CACHE,
    source: str = "auto",
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Classify every release, oldest first, saving the table after each one."""
    for version, files in releases.items():
        row = examine_release(version, files, cache_dir, source)
        table.add(row)
        log(f"{row['version']:>8}  {row['copy_class']:<22} {row['verdict']:<13} {row['source_file']}")
    return table.rows


def survey_parameters(index_url: str, min_version: Version, source: str, releases, left_out) -> dict[str, Any]:
    """What the provenance says about a survey: where, from which version, what was examined and left out."""
    older = sorted((v for v, why in left_out.items() if why.startswith("older")), key=Version)
    return {
        "index_url": index_url,
        "min_version": str(min_version),
        "member": MEMBER,
        "source": source,
        "source_rule": "the manylinux x86_64 wheel pip would pick (highest build tag), read with HTTP range requests; "
        "the sdist (streamed) if there is none",
        "versions_examined": [str(v) for v in releases],
        "skipped": {v: why for v, why in left_out.items() if not why.startswith("older")},
        "older_not_examined": f"{len(older)} releases from {older[0]} to {older[-1]}" if older else "none",
        "note": "read from PyPI on a CPU machine; provenance's torch/vllm are the examining environment's, "
        "not the releases'",
    }


def readable_releases(releases: Mapping[Version, Sequence[DistFile]], source: str, left_out: dict[str, str]) -> dict:
    """The releases that have an archive to read (``source``); the others go to ``left_out`` with the reason."""
    readable = {}
    for version, files in releases.items():
        if source_candidates(files, source):
            readable[version] = files
        else:
            wanted = "no manylinux x86_64 wheel and no .tar.gz sdist" if source == "auto" else f"no {source}"
            left_out[str(version)] = f"{wanted} on the index (files: {', '.join(f.filename for f in files)})"
    return readable


def run_survey(args: argparse.Namespace) -> int:
    index_url, min_version = args.index, args.min
    releases, left_out = final_releases(parse_simple_index(fetch_index(index_url), index_url), min_version)
    releases = readable_releases(releases, args.source, left_out)
    if not releases:
        raise ReleaseError(f"{index_url} lists no final vLLM release from {min_version} on")
    table = IncrementalTable(
        args.out, RELEASES_NAME, survey_parameters(index_url, min_version, args.source, releases, left_out)
    )
    print(f"{len(releases)} final releases from {min_version} on; saving as it goes to {table.path(partial=True)}")
    for version, why in sorted(table.parameters["skipped"].items(), key=lambda kv: Version(kv[0])):
        print(f"skipped {version}: {why}")
    try:
        survey(releases, table, args.cache, args.source)
    except KeyboardInterrupt:
        return _interrupted(table)
    print(f"wrote {table.finish()}")
    return 0


def _interrupted(table: IncrementalTable) -> int:
    kept = f"kept {len(table.rows)} rows in {table.path(partial=True)}" if table.rows else "nothing was finished"
    print(f"\ninterrupted: {kept}", file=sys.stderr)
    return 130


def markdown_table(records: Iterable[Mapping[str, Any]]) -> str:
    """The ``version | class | verdict`` table of a survey, in Markdown (what README.md shows)."""
    lines = ["| version | class | verdict |", "| --- | --- | --- |"]
    lines += [f"| {r['version']} | `{r['copy_class']}` | {r['verdict']} |" for r in records]
    return "\n".join(lines)


# --- flexfix's patch against each release's real module ------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE_MARKER = "FLEXFIX_PROBE_JSON "
CHILD_TIMEOUT_S = 600
PIP_TIMEOUT_S = 1800


def _pip(args: Sequence[str], what: str) -> None:
    """Run ``python -m pip ARGS`` quietly; a :class:`ReleaseError` with pip's last lines if it fails."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
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
        import shutil

        shutil.rmtree(tmp)
    print(f"{version}: pip install --no-deps --target {target} {wheel.name} ...", flush=True)
    _pip(["install", "--no-deps", "--no-compile", "--target", str(tmp), str(wheel)], f"pip install {wheel.name}")
    os.replace(tmp, target)
    return target


def _error_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def _copy_semantics(copy: Callable) -> dict[str, Any]:
    """What ``copy(dst, src)`` does with a [2, 3] source and a [4, 8] destination (filled with -1)."""
    import torch

    dst = torch.full((4, 8), -1, dtype=torch.int32)
    src = torch.arange(1, 7, dtype=torch.int32).reshape(2, 3)
    out = copy(dst, src)
    return {
        "shape": list(out.shape),
        "strides": list(out.stride()),
        "values_equal": bool(torch.equal(out, src)),
        "destination_corner_equal": bool(torch.equal(dst[:2, :3], src)),
        "same_storage": out.untyped_storage().data_ptr() == dst.untyped_storage().data_ptr(),
    }


def _supports_batch_invariance(backend: type) -> bool | None:
    """``backend.supports_batch_invariance()``; None where the backend has no such method (vLLM 0.19 and older)."""
    method = getattr(backend, "supports_batch_invariance", None)
    return None if method is None else bool(method())


def _check_cycle(vllm_patch) -> dict[str, Any]:
    """``vllm_patch.check_cycle()`` (what notebook 02 shows) on this release: its rows, or the error it raised.
    Recorded for information; it is not one of the checks :func:`expectation_gaps` makes."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            rows = vllm_patch.check_cycle()
    except Exception as e:  # noqa: BLE001 - recorded
        return {"check_cycle": None, "check_cycle_error": _error_line(e)}
    return {"check_cycle": {r["check"]: r["value"] for r in rows}, "check_cycle_error": None}


def probe_patch() -> dict[str, Any]:
    """In this process: import the backend and put flexfix's vllm_patch and the plugin through their paces.  Every
    step's exception is recorded (``errors``), never raised."""
    import importlib
    from importlib import metadata

    result: dict[str, Any] = {"errors": {}}

    def step(key: str, fn: Callable[[], Any]) -> None:
        try:
            result[key] = fn()
        except Exception as e:  # noqa: BLE001 - recorded, this is what the check is for
            result[key] = None
            result["errors"][key] = _error_line(e)

    try:
        import vllm

        module = importlib.import_module("vllm.v1.attention.backends.flex_attention")
    except Exception as e:  # noqa: BLE001 - an unimportable release is a result
        return {**result, "import_error": _error_line(e)}
    from flexfix.integration import vllm_patch, vllm_plugin

    result.update(
        import_error=None,
        vllm_seen=metadata.version("vllm"),
        vllm_file=str(Path(vllm.__file__).parent),
    )
    backend = module.FlexAttentionBackend
    original_copy = module.__dict__.get("copy_to_persistent")
    original_bi = backend.__dict__.get("supports_batch_invariance")
    result["bi_override_defined"] = original_bi is not None
    result["bi_method_present"] = hasattr(backend, "supports_batch_invariance")
    step("release_class", vllm_patch.release_class)
    step("status_before", vllm_patch.status)
    step("bi_before", lambda: _supports_batch_invariance(backend))
    step("copy_before", lambda: None if original_copy is None else _copy_semantics(original_copy))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        step("apply", vllm_patch.apply)
    result["apply_output"] = printed.getvalue().splitlines()
    step("status_after", vllm_patch.status)
    step(
        "copy_after",
        lambda: _copy_semantics(module.copy_to_persistent) if hasattr(module, "copy_to_persistent") else None,
    )
    step("bi_after", lambda: _supports_batch_invariance(backend))
    step("revert", vllm_patch.revert)
    result["revert_restored_copy"] = module.__dict__.get("copy_to_persistent") is original_copy
    result["revert_restored_bi"] = backend.__dict__.get("supports_batch_invariance") is original_bi
    step("bi_reverted", lambda: _supports_batch_invariance(backend))
    result.update(_check_cycle(vllm_patch))
    os.environ["FLEXFIX_PATCH"] = "1"
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        step("plugin_register", vllm_plugin.register)
    result["plugin_raised"] = "plugin_register" in result["errors"]
    result["plugin_stderr"] = said.getvalue().splitlines()
    result["plugin_patched"] = vllm_patch.is_patched()
    vllm_patch.revert()
    return result


def _probe_main() -> int:
    """The child: probe, then print the result as one marked JSON line."""
    result = probe_patch()
    print(PROBE_MARKER + json.dumps(result, default=str), flush=True)
    return 0


def probe_in_child(site: Path) -> dict[str, Any]:
    """:func:`probe_patch` in a child whose ``PYTHONPATH`` starts with ``site`` (the release's own vLLM)."""
    env = {k: v for k, v in os.environ.items() if k != "FLEXFIX_PATCH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site.resolve()), str(REPO_ROOT)])
    command = [sys.executable, "-m", "flexfix.integration.releases", "_probe"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=CHILD_TIMEOUT_S)
    marked = [line for line in done.stdout.splitlines() if line.startswith(PROBE_MARKER)]
    if not marked:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return {"errors": {"child": f"exit {done.returncode}: {' | '.join(tail)}"}, "import_error": None}
    return {**json.loads(marked[-1][len(PROBE_MARKER) :]), "child_exit_code": done.returncode}


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
    if len(row.get("plugin_stderr") or []) != 1:
        gaps.append(f"the plugin printed {len(row.get('plugin_stderr') or [])} lines on stderr, not 1")
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
            f"bi_after={row.get('bi_after')!s:<5} plugin: {' | '.join(row.get('plugin_stderr') or [])}"
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
    except KeyboardInterrupt:
        return _interrupted(table)
    print(f"wrote {table.finish()}")
    return 1 if any(r["gaps"] for r in rows) else 0


# --- command line --------------------------------------------------------------------------------------------------

COMMANDS = ("survey", "check-patch")


def _version_arg(text: str) -> Version:
    try:
        version = Version(text)
    except InvalidVersion:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version (e.g. 0.15.0)") from None
    return version


def _versions_arg(text: str) -> list[Version]:
    versions = [_version_arg(part.strip()) for part in text.split(",") if part.strip()]
    if not versions:
        raise argparse.ArgumentTypeError(f"{text!r} names no version (e.g. 0.20.0,0.21.0)")
    return versions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flexfix.integration.releases",
        description="Which vLLM releases carry the FlexAttention as_strided bug, read from the releases themselves.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{survey,check-patch}")
    survey_p = commands.add_parser("survey", help="classify every final release on PyPI (the default command)")
    survey_p.add_argument("--min", type=_version_arg, default=Version(DEFAULT_MIN), help="oldest release (0.15.0)")
    survey_p.add_argument("--index", default=INDEX_URL, help=f"PEP 503 project page ({INDEX_URL})")
    survey_p.add_argument("--source", choices=("auto", "wheel", "sdist"), default="auto", help="archive to read")
    survey_p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"member cache ({DEFAULT_CACHE})")
    survey_p.add_argument("--out", type=Path, default=Path("build/results"), help="results folder (build/results)")
    survey_p.set_defaults(run=run_survey)
    check_p = commands.add_parser("check-patch", help="run flexfix's patch against each release's real module")
    check_p.add_argument("--versions", type=_versions_arg, required=True, help="e.g. 0.19.1,0.20.0,0.21.0")
    check_p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="wheels and installs go below (build)")
    check_p.add_argument("--out", type=Path, default=Path("build/results"), help="results folder (build/results)")
    check_p.set_defaults(run=run_check_patch)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments; without a command, ``survey``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "survey")
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["_probe"]:
        return _probe_main()
    args = parse_args(argv)
    try:
        return args.run(args)
    except ReleaseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
