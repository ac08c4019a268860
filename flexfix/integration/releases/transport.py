"""Read one member of a remote release archive without downloading the whole archive.

A wheel is a zip: :mod:`fsspec`'s HTTP filesystem (aiohttp) opens it as a seekable file that fetches blocks with
HTTP range requests, and :class:`zipfile.ZipFile` reads the central directory and the one member (a few MB of a
250-500 MB wheel; zipfile checks the member's CRC-32).  An sdist is a ``.tar.gz``: it is streamed, and the stream
stops at the member.  :func:`cached_member` keeps the member's bytes (or the fact that it is absent) under
``<cache>/<archive file name>/``, so a rerun only reads the index.
"""

from __future__ import annotations

import asyncio
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flexfix.edition.results import atomic_write
from flexfix.integration.releases.classify import MEMBER
from flexfix.integration.releases.index import TIMEOUT_S, DistFile, ReleaseError

__all__ = ["RANGE_BLOCK", "RangeUnsupported", "member_from_wheel", "member_from_sdist", "cached_member"]

RANGE_BLOCK = 1 << 20  # bytes per range request
_ABSENT = "ABSENT"


class RangeUnsupported(ReleaseError):
    """The server does not serve byte ranges of the file (or does not say its size)."""


def _storage_options(url: str) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        return {}
    import aiohttp

    return {
        "headers": {"User-Agent": "flexfix-releases"},
        "client_kwargs": {"timeout": aiohttp.ClientTimeout(total=TIMEOUT_S)},
    }


def _network_errors() -> tuple[type[BaseException], ...]:
    import aiohttp

    return (OSError, aiohttp.ClientError, asyncio.TimeoutError)


def member_from_wheel(url: str, member: str = MEMBER) -> bytes | None:
    """``member`` of the remote wheel at ``url`` (None if the wheel has no such file), read with range requests."""
    import fsspec
    from fsspec.implementations.http import HTTPStreamFile

    try:
        with fsspec.open(url, "rb", block_size=RANGE_BLOCK, **_storage_options(url)) as remote:
            if isinstance(remote, HTTPStreamFile):
                raise RangeUnsupported(f"{url} gave no size or refused range requests: it can only be streamed")
            with zipfile.ZipFile(remote) as wheel:
                return wheel.read(member) if member in wheel.NameToInfo else None
    except ValueError as e:  # fsspec: "The HTTP server doesn't appear to support range requests"
        if "range" not in str(e):
            raise
        raise RangeUnsupported(f"{url} ignored the range request ({e})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise ReleaseError(f"{url} is not a readable zip: {e}") from None
    except _network_errors() as e:
        raise ReleaseError(f"cannot fetch {url}: {e or type(e).__name__}") from None


def member_from_sdist(url: str, member: str = MEMBER) -> bytes | None:
    """``member`` (below the sdist's top folder) of the remote ``.tar.gz`` at ``url``, streamed: reading stops at
    the member; None if the archive ends without it."""
    import fsspec

    try:
        with (
            fsspec.open(url, "rb", block_size=0, **_storage_options(url)) as stream,
            tarfile.open(fileobj=stream, mode="r|gz") as archive,
        ):
            for info in archive:
                if info.isfile() and info.name.partition("/")[2] == member:
                    return archive.extractfile(info).read()
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ReleaseError(f"{url} is not a readable .tar.gz: {e}") from None
    except _network_errors() as e:
        raise ReleaseError(f"cannot fetch {url}: {e or type(e).__name__}") from None
    return None


READERS: dict[str, Callable[[str, str], bytes | None]] = {"wheel": member_from_wheel, "sdist": member_from_sdist}


def cached_member(dist: DistFile, cache_dir: Path, member: str = MEMBER) -> tuple[bytes | None, bool]:
    """The member's bytes (None: the archive has no such file) and whether they came from the cache, which is
    keyed by the archive's file name (unique on PyPI)."""
    folder = Path(cache_dir) / dist.filename
    cached, absent = folder / Path(member).name, folder / _ABSENT
    if cached.exists():
        return cached.read_bytes(), True
    if absent.exists():
        return None, True
    data = READERS[dist.kind](dist.url, member)
    atomic_write(cached if data is not None else absent, data if data is not None else b"")
    return data, False
