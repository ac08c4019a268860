"""The releases vLLM has on PyPI, from the JSON simple API (PEP 691): every wheel and sdist of each version.

:func:`fetch_index` asks ``https://pypi.org/simple/vllm/`` for ``application/vnd.pypi.simple.v1+json``;
:func:`parse_simple_index` turns its ``files`` into :class:`DistFile` s (names parsed by :mod:`packaging`);
:func:`final_releases` keeps the final releases from a minimum version on, and :func:`source_candidates` says which
archive of a release to read its backend from.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

__all__ = [
    "INDEX_URL",
    "ReleaseError",
    "DistFile",
    "fetch_index",
    "parse_simple_index",
    "final_releases",
    "readable_releases",
    "source_candidates",
]

INDEX_URL = "https://pypi.org/simple/vllm/"
JSON_API = "application/vnd.pypi.simple.v1+json"
TIMEOUT_S = 60  # seconds: an archive member's whole read
INDEX_TIMEOUT_S = 30  # seconds: the index's whole answer (--timeout)
MAX_TIMEOUT_S = 600
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


def _read_within(response: Any, deadline: float, url: str, timeout: float) -> bytes:
    """The body of ``response``, read in blocks, each socket wait bounded by what is left until ``deadline``."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer within {timeout:g} s")
        sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(left)
        chunk = response.read1(1 << 16)  # what one receive brings: a slow drip cannot keep read() waiting
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def fetch_index(url: str = INDEX_URL, timeout: float = INDEX_TIMEOUT_S) -> dict[str, Any]:
    """The project page of the simple index at ``url``, as PEP 691 JSON; a :class:`ReleaseError` naming the URL
    on any network failure, when the whole answer takes more than ``timeout`` seconds (a server that accepts
    and never answers, or answers a byte at a time), or when the index does not answer in JSON."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "flexfix-releases", "Accept": JSON_API})
    except ValueError as e:
        raise ReleaseError(f"cannot fetch {url}: not a URL ({e})") from None
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            kind, body = response.headers.get("Content-Type", ""), _read_within(response, deadline, url, timeout)
    except urllib.error.HTTPError as e:
        raise ReleaseError(f"cannot fetch {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:  # ValueError: a URL urllib cannot use
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = f"timed out: no complete answer within {timeout:g} s"
        raise ReleaseError(f"cannot fetch {url}: {reason}") from None
    if "json" not in kind:
        raise ReleaseError(f"{url} did not answer in JSON (PEP 691), but {kind or 'without a Content-Type'}")
    try:
        return json.loads(body)
    except ValueError as e:
        raise ReleaseError(f"{url} answered JSON that cannot be read: {e}") from None


def _dist_file(entry: Mapping[str, Any], base_url: str) -> DistFile | None:
    """The file an index entry names, or None for anything that is not a wheel or an sdist of a valid version."""
    filename = str(entry.get("filename", ""))
    url = urllib.parse.urljoin(base_url, str(entry.get("url", "")))
    sha256 = (entry.get("hashes") or {}).get("sha256")
    yanked = bool(entry.get("yanked", False))  # False, or the reason (a string)
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


def parse_simple_index(page: Mapping[str, Any], base_url: str = INDEX_URL) -> list[DistFile]:
    """Every wheel and sdist a PEP 691 project page lists (unparsable names are left out)."""
    files = (_dist_file(entry, base_url) for entry in page.get("files", []))
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
