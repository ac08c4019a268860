"""`flexfix publish` and `flexfix book` replace only what they provably wrote: their output folder carries a marker
listing every file they wrote and its hash, and a folder without it, with a file added, or with one edited is
refused by name and left as it was.  A symbolic link is followed (the link stays, its target is replaced); an
interrupt never lands between the two renames of the swap; Ctrl-C or SIGTERM ends either command in one line."""

import json
import os
import signal
import textwrap

import nbformat
import pytest
from adversarial_helpers import interrupt, start, wait_for
from test_book import executed

from flexfix.edition import book, output_folder, publish
from flexfix.measure import children

MARKER = output_folder.MARKER


@pytest.fixture
def tree(tmp_path):
    """tmp_path/notebooks (two sources), tmp_path/build (their executed copies)."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "build").mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        nbformat.write(nbformat.v4.new_notebook(), tmp_path / "notebooks" / name)
        nbformat.write(executed(), tmp_path / "build" / name)
    return tmp_path


def run_publish(tree, dest):
    return publish.main(["--src", str(tree / "build"), "--dest", str(dest), "--notebooks", str(tree / "notebooks")])


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def refused(call, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        call()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_publish_never_deletes_a_folder_of_ones_own_notebooks(tree, capsys):
    mine = tree / "mine"
    mine.mkdir()
    (mine / "analysis.ipynb").write_text("my own work")
    (mine / "README.md").write_text("my notes")
    before = snapshot(mine)
    err = refused(lambda: run_publish(tree, mine), capsys)
    assert f"--dest {mine} holds README.md, analysis.ipynb, not written by flexfix publish" in err
    assert snapshot(mine) == before and sorted(os.listdir(tree)) == ["build", "mine", "notebooks"]


def test_book_never_deletes_a_folder_of_ones_own_pages(tree, capsys):
    assert run_publish(tree, tree / "edition") == 0
    site = tree / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>my site</p>")
    (site / "about.html").write_text("<p>me</p>")
    before = snapshot(site)
    err = refused(lambda: book.main(["--src", str(tree / "edition"), "--out", str(site)]), capsys)
    assert f"--out {site} holds about.html, index.html, not written by flexfix book" in err
    assert snapshot(site) == before


def test_an_edition_with_a_file_added_or_edited_is_not_replaced(tree, capsys):
    dest = tree / "edition"
    assert run_publish(tree, dest) == 0
    (dest / "notes.md").write_text("added by hand")
    err = refused(lambda: run_publish(tree, dest), capsys)
    assert "holds notes.md, which flexfix publish did not write" in err
    (dest / "notes.md").unlink()
    (dest / "01_a.ipynb").write_text((dest / "01_a.ipynb").read_text().replace("A title", "My title"))
    before = snapshot(dest)
    err = refused(lambda: run_publish(tree, dest), capsys)
    assert "01_a.ipynb changed since flexfix publish wrote it" in err and snapshot(dest) == before


def test_one_command_does_not_replace_the_others_folder(tree, capsys):
    assert run_publish(tree, tree / "edition") == 0
    err = refused(lambda: book.main(["--src", str(tree / "edition"), "--out", str(tree / "edition")]), capsys)
    assert "was written by 'flexfix publish', not flexfix book" in err


def test_a_marker_that_is_not_json_proves_nothing(tree, capsys):
    dest = tree / "edition"
    assert run_publish(tree, dest) == 0
    (dest / MARKER).write_text("{not json")
    assert "not written by flexfix publish" in refused(lambda: run_publish(tree, dest), capsys)


@pytest.mark.parametrize("target_state", ["published", "empty", "missing"])
def test_a_symlinked_destination_keeps_its_link_and_its_target_gets_the_edition(tree, target_state):
    target = tree / "elsewhere" / "edition"
    if target_state == "published":
        assert run_publish(tree, target) == 0
    elif target_state == "empty":
        target.mkdir(parents=True)
    else:
        target.parent.mkdir()
    link = tree / "edition"
    link.symlink_to(target)
    assert run_publish(tree, link) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert sorted(os.listdir(target)) == [MARKER, "01_a.ipynb", "02_b.ipynb", "README.md"]
    assert sorted(os.listdir(target.parent)) == ["edition"], "no temporary folder left"


def test_a_symlink_to_ones_own_folder_is_refused_and_both_stay(tree, capsys):
    mine = tree / "mine"
    mine.mkdir()
    (mine / "keep.ipynb").write_text("mine")
    link = tree / "edition"
    link.symlink_to(mine)
    assert "keep.ipynb" in refused(lambda: run_publish(tree, link), capsys)
    assert link.is_symlink() and snapshot(mine) == {"keep.ipynb": b"mine"}


def published(dest):
    output_folder.replace_folder(dest, lambda tmp: (tmp / "old.ipynb").write_text("old"), owner="test")
    return snapshot(dest)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2 exchange", "two renames"])
def test_an_interrupt_at_the_swap_lands_after_it(tmp_path, monkeypatch, exchange):
    """The KeyboardInterrupt that fell between the two renames deleted both the old folder and the new one."""
    dest = tmp_path / "edition"
    published(dest)
    if not exchange:
        monkeypatch.setattr(output_folder, "_EXCHANGE", None)
    real = os.replace
    calls = []

    def replace(a, b):
        calls.append((a, b))
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after the first rename
        return real(a, b)

    monkeypatch.setattr(output_folder.os, "replace", replace)
    if exchange:
        swap = output_folder._EXCHANGE
        monkeypatch.setattr(
            output_folder, "_EXCHANGE", lambda a, b: (os.kill(os.getpid(), signal.SIGINT), swap(a, b))[1]
        )
    with pytest.raises(KeyboardInterrupt):
        output_folder.replace_folder(dest, lambda tmp: (tmp / "new.ipynb").write_text("new"), owner="test")
    assert sorted(os.listdir(dest)) == [MARKER, "new.ipynb"] and os.listdir(tmp_path) == ["edition"]


def test_a_failing_second_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    dest = tmp_path / "edition"
    before = published(dest)
    monkeypatch.setattr(output_folder, "_EXCHANGE", None)
    real = os.replace
    calls = []

    def replace(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(output_folder.os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        output_folder.replace_folder(dest, lambda tmp: (tmp / "new.ipynb").write_text("new"), owner="test")
    assert snapshot(dest) == before and os.listdir(tmp_path) == ["edition"]


# Ctrl-C and SIGTERM as real processes: one line, the old folder as it was, no temporary folder.

SLOW_PUBLISH = textwrap.dedent(
    """
    import sys, time
    from flexfix.edition import publish
    from flexfix.measure import children
    real = publish.readme
    def slow(*args, **kwargs):
        print("filling", flush=True)
        time.sleep(300)
    publish.readme = slow
    children.run_main(lambda: publish.main(sys.argv[1:]), "flexfix publish")
    """
)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_publish_interrupted_ends_in_one_line_and_keeps_the_edition(tree, signum, status):
    dest = tree / "edition"
    assert run_publish(tree, dest) == 0
    before = snapshot(dest)
    proc = start(
        SLOW_PUBLISH,
        ["--src", str(tree / "build"), "--dest", str(dest), "--notebooks", str(tree / "notebooks")],
        {},
    )
    wait_for(lambda: any(p.name.startswith(".edition.new-") for p in tree.iterdir()), what="the new folder")
    seconds, _, err = interrupt(proc, signum)
    name = signal.Signals(signum).name
    assert proc.returncode == status and seconds < 5
    assert err.strip() == f"flexfix publish: interrupted by {name}; nothing published ({dest} is as it was)"
    assert snapshot(dest) == before and sorted(os.listdir(tree)) == ["build", "edition", "notebooks"]


def test_book_interrupted_ends_in_one_line(tree, monkeypatch, capsys):
    assert run_publish(tree, tree / "edition") == 0

    def interrupted(*args, **kwargs):
        raise children.Terminated("SIGTERM")

    monkeypatch.setattr(book, "render_page", interrupted)
    out = tree / "book"
    assert book.main(["--src", str(tree / "edition"), "--out", str(out)]) == 143
    assert capsys.readouterr().err.strip() == (
        f"flexfix book: interrupted by SIGTERM; no book built ({out} is as it was)"
    )
    assert not out.exists() and sorted(os.listdir(tree)) == ["build", "edition", "notebooks"]


def test_the_committed_edition_is_marked_as_publish_wrote_it():
    from flexfix.edition.output_folder import replace_problems

    assert replace_problems(publish.DEST, "flexfix publish", "data/notebooks") == []
    assert json.loads((publish.DEST / MARKER).read_text())["written_by"] == "flexfix publish"
