"""A path a user mistyped or generated -- 300 characters, a name the file system refuses -- is a usage error naming
it on every command, never an ``OSError: [Errno 36] File name too long`` traceback from a check."""

import pytest
from adversarial_helpers import ROOT

from flexfix.edition import book, publish
from flexfix.edition import run_notebooks as rn
from flexfix.integration.releases import cli as releases_cli
from flexfix.integration.serving import recording
from flexfix.measure.record import cli as record_cli

FAKE = str(ROOT / "tests" / "fake_vllm_server.py")


def long_path(tmp_path) -> str:
    return str(tmp_path / ("x" * 300))


CASES = {
    "publish --src": lambda L, t: publish.main(["--src", L, "--dest", str(t / "d")]),
    "publish --dest": lambda L, t: publish.main(["--src", str(t), "--dest", L]),
    "book --src": lambda L, t: book.main(["--src", L, "--out", str(t / "b")]),
    "book --out": lambda L, t: book.main(["--src", str(publish.DEST), "--out", L]),
    "serve record --fake": lambda L, t: recording.main(["record", "--fake", L, "--out", str(t)]),
    "serve record --out": lambda L, t: recording.main(["record", "--fake", FAKE, "--out", L]),
    "serve record --models-dir": lambda L, t: recording.main(["record", "--fake", FAKE, "--models-dir", L]),
    "notebooks NOTEBOOK": lambda L, t: rn.main(["--out", str(t / "o"), "--times", str(t), L]),
    "notebooks --out": lambda L, t: rn.main(["--out", L, "--times", str(t)]),
    "notebooks --times": lambda L, t: rn.main(["--out", str(t / "o"), "--times", L]),
    "record --out": lambda L, t: record_cli.main(["kernel", "--device", "cpu", "--out", L]),
    "releases --out": lambda L, t: releases_cli.main(["--out", L, "--cache", str(t)]),
    "releases check-patch --work": lambda L, t: releases_cli.main(["check-patch", "--versions", "0.20.0", "--work", L]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_path_too_long_is_a_usage_error(case, tmp_path, capsys):
    try:
        code = CASES[case](long_path(tmp_path), tmp_path)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "xxxxxxxxxx" in err, err
