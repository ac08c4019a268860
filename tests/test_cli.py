"""The `flexfix` command (issue #20): one entry point, `--version`, every option with help text and its default
shown, usage errors named `flexfix <command>`, and `flexfix status`."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from flexfix import __version__, cli
from flexfix.edition.params import HelpFormatter


def actions(parser: argparse.ArgumentParser, prog: str):
    """Every action of ``parser`` and of its subcommands' parsers, with the ``prog`` they belong to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from actions(sub, f"{prog} {name}")
        else:
            yield prog, parser, action


def every_parser():
    yield "flexfix", cli.build_parser()
    for name in cli.COMMANDS:
        yield f"flexfix {name}", cli.command_parser(name)


@pytest.mark.parametrize("prog, parser", list(every_parser()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_has_help_and_shows_its_default(prog, parser):
    assert parser.prog == prog
    missing = []
    for where, owner, action in actions(parser, prog):
        assert isinstance(owner.formatter_class, type) and issubclass(owner.formatter_class, HelpFormatter), where
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue  # internal options (a child's --child) are hidden on purpose
        if not (action.help or "").strip():
            missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help: {missing}"
    defaults_hidden = []
    for where, owner, action in actions(parser, prog):
        owner.format_help()  # every help text renders (a stray % would not)
        skip = (argparse._HelpAction, argparse._VersionAction)
        if isinstance(action, skip) or action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        if action.default is None or action.default is False or action.required:
            continue  # nothing to show
        if "%(default)" not in (owner._get_formatter()._get_help_string(action) or ""):
            defaults_hidden.append(f"{where} {'/'.join(action.option_strings)}")
    assert not defaults_hidden, f"options whose default is not shown: {defaults_hidden}"


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"flexfix {__version__}"


def test_no_command_and_an_unknown_one_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([])
    assert done.value.code == 2 and "the following arguments are required: COMMAND" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        cli.main(["nonsense"])
    assert done.value.code == 2 and "invalid choice: 'nonsense'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, prog",
    [
        (["repro", "--batch", "0"], "flexfix repro"),
        (["record", "kernel", "--seeds", "0"], "flexfix record"),
        (["releases", "--min", "x"], "flexfix releases"),
        (["notebooks", "--param", "nonsense"], "flexfix notebooks"),
    ],
)
def test_usage_errors_name_the_command(argv, prog, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith(f"usage: {prog}") and f"\n{prog}" in err, err


def test_python_m_flexfix_is_the_command():
    done = subprocess.run([sys.executable, "-m", "flexfix", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: flexfix")
    assert all(f"  {name} " in done.stdout for name in cli.COMMANDS)


def test_status_reports_the_installed_release(monkeypatch, capsys):
    monkeypatch.setenv("FLEXFIX_PATCH", "0")
    report = cli.status()
    assert report["vllm"] == "0.20.0" and report["release_class"] == "as_strided"
    assert "upgrade to vLLM >= 0.21.0" in report["advice"] and report["plugin"] == "off"
    assert report["patched_in_this_process"] is False and report["FLEXFIX_PATCH"] == "0"
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "release class: as_strided" in out and "FLEXFIX_PATCH: 0 (off" in out


def test_status_without_vllm_and_with_a_bad_flag(monkeypatch):
    monkeypatch.setattr(cli, "_vllm_version", lambda: None)
    monkeypatch.setenv("FLEXFIX_PATCH", "maybe")
    report = cli.status()
    assert report["vllm"] == "not installed" and report["release_class"] is None
    assert report["plugin"].startswith("invalid") and "'maybe'" in report["plugin"]


@pytest.mark.parametrize(
    "value, says",
    [
        (None, "off (FLEXFIX_GUARD unset"),
        ("error", "error: a replay whose metadata moved since capture is refused"),
        ("eager", "eager: a step whose metadata moved since capture runs without the graph"),
        ("typo", "invalid (FLEXFIX_GUARD='typo' is not understood"),
    ],
)
def test_status_says_what_flexfix_guard_asks_of_vllm(monkeypatch, capsys, value, says):
    if value is None:
        monkeypatch.delenv("FLEXFIX_GUARD", raising=False)
    else:
        monkeypatch.setenv("FLEXFIX_GUARD", value)
    assert cli.status()["guard"].startswith(says)
    assert cli.main(["status"]) == (1 if value == "typo" else 0)  # what would stop vLLM's start fails here too
    assert f"FLEXFIX_GUARD: {says}" in capsys.readouterr().out


def test_status_checks_every_guard_setting_as_the_plugin_will(monkeypatch, capsys, tmp_path):
    """A malformed FLEXFIX_GUARD_NOT_READ or an unwritable FLEXFIX_GUARD_STATS stops vLLM's start: status says so."""
    monkeypatch.setenv("FLEXFIX_GUARD", "log")
    monkeypatch.setenv("FLEXFIX_GUARD_NOT_READ", "host_lens")
    assert cli.main(["status"]) == 1
    out = capsys.readouterr().out
    assert "FLEXFIX_GUARD: invalid (FLEXFIX_GUARD_NOT_READ: 'host_lens' is not Class.field" in out
    assert "FLEXFIX_GUARD_NOT_READ: host_lens" in out
    monkeypatch.setenv("FLEXFIX_GUARD_NOT_READ", "MyMetadata.host_lens")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FLEXFIX_GUARD_STATS", str(blocker))
    assert cli.main(["status"]) == 1
    assert f"invalid (FLEXFIX_GUARD_STATS {str(blocker)!r} is a file, not a folder" in capsys.readouterr().out
    monkeypatch.setenv("FLEXFIX_GUARD_STATS", str(tmp_path / "stats"))
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "FLEXFIX_GUARD: log:" in out and f"FLEXFIX_GUARD_STATS: {tmp_path / 'stats'}" in out
