"""`flexfix releases`, with a local index and no network: an index that accepts and never answers (or answers a byte
at a time) is given up within ``--timeout``; every folder is checked before the index is asked; a version listed
twice is refused; a survey after an interrupted or failed one runs to the end; Ctrl-C, SIGTERM and SIGHUP end it in
one line with the classified releases kept."""

import json
import signal
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest
from adversarial_helpers import interrupt, last_line, start, wait_for
from test_releases import INDEX_JSON, fake_row

from flexfix.integration.releases import cli, index, survey


class Silent:
    """A TCP server on 127.0.0.1 that accepts connections and then says nothing (or drips a response's headers a
    byte every 0.2 s): counts the connections it got."""

    def __init__(self, drip: bool = False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.drip, self.connections, self.open = drip, 0, []
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/simple/vllm/"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.open.append(conn)
            if self.drip:
                threading.Thread(target=self.trickle, args=(conn,), daemon=True).start()

    def trickle(self, conn) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.pypi.simple.v1+json\r\nContent-Length: 99999\r\n\r\n"
        try:
            conn.recv(65536)
            conn.sendall(head)
            while True:
                conn.sendall(b" ")
                time.sleep(0.2)
        except OSError:
            return

    def close(self) -> None:
        for conn in self.open:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent():
    server = Silent()
    yield server
    server.close()


@pytest.mark.parametrize("drip", [False, True], ids=["never answers", "answers a byte at a time"])
def test_an_index_that_never_answers_is_given_up_within_the_timeout(tmp_path, capsys, drip):
    server = Silent(drip=drip)
    url = server.url
    try:
        t0 = time.monotonic()
        code = cli.main(["--index", url, "--timeout", "1", "--out", str(tmp_path), "--cache", str(tmp_path)])
        seconds = time.monotonic() - t0
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1 and seconds < 5, seconds
    assert err.strip() == f"error: cannot fetch {url}: timed out: no complete answer within 1 s"


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "601", "x"])
def test_a_timeout_that_never_fires_or_waits_too_long_is_refused(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--timeout", value, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --timeout: " in err and "Traceback" not in err


@pytest.mark.parametrize("which", ["--out", "--cache"])
def test_folders_are_checked_before_the_index_is_asked(tmp_path, capsys, silent, which):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    folders = {"--out": str(tmp_path / "out"), "--cache": str(tmp_path / "cache"), which: str(blocker)}
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--index", silent.url, *[x for kv in folders.items() for x in kv]])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"survey: {which} {str(blocker)!r} is a file, not a folder" in err
    assert silent.connections == 0


def test_a_folder_name_too_long_is_a_usage_error(tmp_path, capsys, silent):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--index", silent.url, "--out", str(tmp_path / ("o" * 300)), "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "is not a writable folder: File name too long" in err and "Traceback" not in err
    assert silent.connections == 0


def test_check_patch_folders_are_checked_before_any_download(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("flexfix.integration.releases.patch_checks.check_patch", lambda *a: pytest.fail("started"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check-patch", "--versions", "0.20.0", "--work", str(blocker), "--out", str(tmp_path)])
    assert exit_.value.code == 2 and f"check-patch: --work {str(blocker)!r} is a file" in capsys.readouterr().err


@pytest.mark.parametrize("versions", ["0.20.0,0.20.0", "0.20.0, 0.21.0,0.20.0", "0.20,0.20.0"])
def test_a_version_listed_twice_is_refused(tmp_path, capsys, versions):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check-patch", "--versions", versions, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "is listed twice" in err


# A survey after an interrupted or a failed one: each later run died on its first release (the partial file of
# the earlier run held more rows than the new one).


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(survey, "fetch_index", lambda url, timeout=None: INDEX_JSON)


@pytest.mark.parametrize("first", [KeyboardInterrupt, index.ReleaseError], ids=["interrupted", "failed"])
def test_a_survey_after_an_interrupted_or_failed_one_runs_to_the_end(tmp_path, offline, monkeypatch, first):
    def fails_at_third(version, *args):
        if str(version) == "0.21.0":
            raise first("planted")
        return fake_row(version)

    argv = ["--out", str(tmp_path), "--cache", str(tmp_path / "cache")]
    monkeypatch.setattr(survey, "examine_release", fails_at_third)
    assert cli.main(argv) in (1, 130)
    assert len(json.loads((tmp_path / "vllm_releases-cpu.partial.json").read_text())["records"]) == 2
    monkeypatch.setattr(survey, "examine_release", fake_row)
    assert cli.main(argv) == 0
    assert len(json.loads((tmp_path / "vllm_releases-cpu.json").read_text())["records"]) == 3
    assert not (tmp_path / "vllm_releases-cpu.partial.json").exists()


SLOW_SURVEY = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_releases import INDEX_JSON, fake_row
    from flexfix.integration.releases import survey
    from flexfix import cli
    survey.fetch_index = lambda url, timeout=None: INDEX_JSON
    def slow(version, *args):
        if str(version) == "0.21.0":
            time.sleep(300)
        return fake_row(version)
    survey.examine_release = slow
    sys.exit(cli.main(["releases", *sys.argv[1:]]))
    """
)


@pytest.mark.parametrize(
    "signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["INT", "TERM", "HUP"]
)
def test_an_interrupted_survey_ends_in_one_line_and_keeps_its_rows(tmp_path, signum, status):
    partial = tmp_path / "vllm_releases-cpu.partial.json"
    code = SLOW_SURVEY.format(tests=str(Path(__file__).resolve().parents[1]))
    proc = start(code, ["--out", str(tmp_path), "--cache", str(tmp_path / "cache")], {})
    wait_for(lambda: partial.exists() and len(json.loads(partial.read_text())["records"]) == 2, what="two rows")
    seconds, _, err = interrupt(proc, signum)
    name = signal.Signals(signum).name
    assert proc.returncode == status and seconds < 5, err
    assert last_line(err) == f"interrupted by {name}: kept 2 rows in {partial}" and "Traceback" not in err


@pytest.mark.parametrize("url", ["notaurl", "http://[::1", "ftp://example.org/simple/vllm/", "https://"])
def test_an_index_that_is_not_a_url_is_a_usage_error(tmp_path, capsys, url):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--index", url, "--out", str(tmp_path), "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument --index: {url!r} is not " in err and "Traceback" not in err
    with pytest.raises(index.ReleaseError, match="cannot fetch"):
        index.fetch_index(url, timeout=1)
