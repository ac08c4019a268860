"""The survey: every final vLLM release from a minimum version on, its backend read and classified.

:func:`run_survey` lists the releases (:mod:`.index`), reads each one's ``flex_attention.py`` (:mod:`.transport`),
classifies it (:mod:`.classify`) and saves the table with provenance after every release
(:class:`flexfix.edition.results.IncrementalTable`: ``vllm_releases-cpu.partial.json`` while it runs,
``vllm_releases-cpu.json`` once every release was examined).  A complete file is never replaced by a run that
examined fewer releases (e.g. a higher ``--min``); a partial file left by an interrupted or failed run is
replaced by the next run's.  Ctrl-C stops it within seconds (exit 130; SIGTERM 143, SIGHUP 129), keeping what was
classified.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.version import Version

from flexfix.edition.results import IncrementalTable
from flexfix.integration.releases.classify import MEMBER, classify_source, verdict
from flexfix.integration.releases.index import (
    INDEX_TIMEOUT_S,
    DistFile,
    ReleaseError,
    fetch_index,
    final_releases,
    parse_simple_index,
    readable_releases,
    source_candidates,
)
from flexfix.integration.releases.transport import RangeUnsupported, cached_member

__all__ = ["RELEASES_NAME", "DEFAULT_CACHE", "examine_release", "survey", "survey_parameters", "run_survey"]

RELEASES_NAME = "vllm_releases"
DEFAULT_MIN = "0.15.0"
DEFAULT_CACHE = Path("build/releases-cache")


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


def run_survey(args: argparse.Namespace) -> int:
    index_url, min_version = args.index, args.min
    page = fetch_index(index_url, timeout=getattr(args, "timeout", INDEX_TIMEOUT_S))
    releases, left_out = final_releases(parse_simple_index(page, index_url), min_version)
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
    except KeyboardInterrupt as exc:
        return interrupted(table, exc)
    print(f"wrote {table.finish()}")
    return 0


def interrupted(table: IncrementalTable, exc: BaseException | None = None) -> int:
    """Say what an interrupted run kept, in one line; the exit status (130 for Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
    from flexfix.measure import children

    kept = f"kept {len(table.rows)} rows in {table.path(partial=True)}" if table.rows else "nothing was finished"
    name = children.signal_name(exc) if exc is not None else "SIGINT"
    print(f"interrupted by {name}: {kept}", file=sys.stderr)
    return children.exit_status(exc) if exc is not None else 130
