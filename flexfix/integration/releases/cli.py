"""``flexfix releases [survey] ...`` and ``flexfix releases check-patch --versions ...``: the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from packaging.version import InvalidVersion, Version

from flexfix.edition import params
from flexfix.edition.params import HelpFormatter
from flexfix.edition.results import ResultsError
from flexfix.integration.releases.index import INDEX_TIMEOUT_S, INDEX_URL, MAX_TIMEOUT_S, ReleaseError
from flexfix.integration.releases.patch_checks import DEFAULT_WORK, run_check_patch
from flexfix.integration.releases.survey import DEFAULT_CACHE, DEFAULT_MIN, run_survey
from flexfix.measure import children
from flexfix.measure.children import check_timeout

__all__ = ["PROG", "build_parser", "parse_args", "main"]

PROG = "flexfix releases"
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
    twice = [str(v) for i, v in enumerate(versions) if v in versions[:i]]
    if twice:
        raise argparse.ArgumentTypeError(f"{twice[0]} is listed twice")
    return versions


def _url_arg(text: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s):// or file:// URL")
    return text


def _timeout_arg(text: str) -> float:
    try:
        return check_timeout("--timeout", float(text), maximum=MAX_TIMEOUT_S)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--timeout ", "").replace("--timeout=", "")) from None


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Which vLLM releases carry the FlexAttention as_strided bug, read from the releases themselves.",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="{survey,check-patch}", help="survey is the default")
    survey_p = commands.add_parser(
        "survey", help="classify every final release on PyPI (the default command)", formatter_class=HelpFormatter
    )
    survey_p.add_argument("--min", type=_version_arg, default=Version(DEFAULT_MIN), help="oldest release")
    survey_p.add_argument(
        "--index", type=_url_arg, default=INDEX_URL, help="project page of a simple index with PEP 691 JSON"
    )
    survey_p.add_argument("--source", choices=("auto", "wheel", "sdist"), default="auto", help="archive to read")
    survey_p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where members read are kept")
    survey_p.add_argument("--out", type=Path, default=Path("build/results"), help="results folder")
    survey_p.add_argument(
        "--timeout",
        type=_timeout_arg,
        default=float(INDEX_TIMEOUT_S),
        help=f"seconds the index may take to answer in full (at most {MAX_TIMEOUT_S})",
    )
    survey_p.set_defaults(run=run_survey, folders=("out", "cache"))
    check_p = commands.add_parser(
        "check-patch", help="run flexfix's patch against each release's real module", formatter_class=HelpFormatter
    )
    check_p.add_argument("--versions", type=_versions_arg, required=True, help="e.g. 0.19.1,0.20.0,0.21.0")
    check_p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="wheels and installs go below")
    check_p.add_argument("--out", type=Path, default=Path("build/results"), help="results folder")
    check_p.set_defaults(run=run_check_patch, folders=("out", "work"))
    return parser


def parse_args(argv: Sequence[str] | None = None, prog: str = PROG) -> argparse.Namespace:
    """The arguments; without a command, ``survey``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "survey")
    return build_parser(prog).parse_args(argv)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Every folder is checked before the network is touched (a usage error, exit 2); a release or results
    problem is one line and exit 1; Ctrl-C, SIGTERM or SIGHUP one line and 130 / 143 / 129, what finished kept."""
    args = parse_args(argv, prog)
    for name in args.folders:
        try:
            params.writable_folder(f"--{name}", getattr(args, name))
        except ValueError as e:
            build_parser(prog).error(f"{args.command or 'survey'}: {e}")
    try:
        with children.interruptible():
            return args.run(args)
    except (ReleaseError, ResultsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"{prog}: interrupted by {children.signal_name(exc)}", file=sys.stderr)
        return children.exit_status(exc)
