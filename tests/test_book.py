"""The published notebooks (flexfix.edition.publish) and their HTML book (flexfix.edition.book).

The first part builds the book from the committed edition, ``data/notebooks``: it fails (never skips) while that
edition is missing, since the book is what a reader without a GPU opens.  The rest checks publish and book on
small synthetic notebooks."""

import base64
import os
import re
import socket
import time
from pathlib import Path

import nbformat
import pytest

from flexfix.edition import book, publish

PUBLISH_COMMANDS = ("`python -m flexfix.publish", "`flexfix publish")

ROOT = Path(__file__).resolve().parent.parent
EDITION = ROOT / "data" / "notebooks"
SOURCES = [p.stem for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
# Notebooks written after the published edition's GPU run: the next edition (issue 26: one cold GPU run of the whole
# series, then `flexfix publish`) holds them.  The edition is republished whole, never one notebook at a time.
UNPUBLISHED: dict[str, str] = {}  # notebook -> why the edition lacks it (empty: the edition holds every notebook)
STEMS = [s for s in SOURCES if s not in UNPUBLISHED]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()


def _no_network(monkeypatch):
    """Any connection to the internet fails: the build must not need one."""
    real = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"test: no network at build time (tried {address})")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The book of data/notebooks, built offline: (out folder, seconds, {stem: notebook})."""
    if not EDITION.is_dir():
        pytest.fail(
            f"{EDITION.relative_to(ROOT)} is missing: on a GPU box run `make notebooks`, then "
            "`flexfix publish --src build/notebooks --dest data/notebooks`, and commit it"
        )
    out = tmp_path_factory.mktemp("book") / "book"
    with pytest.MonkeyPatch.context() as mp:
        _no_network(mp)
        start = time.monotonic()
        book.build(EDITION, out)
        seconds = time.monotonic() - start
    notebooks = {p.stem: nbformat.read(p, as_version=4) for p in sorted(EDITION.glob("*.ipynb"))}
    return out, seconds, notebooks


def _figures(nb):
    return sum(
        "image/png" in out.get("data", {}) for c in nb.cells if c.cell_type == "code" for out in c.get("outputs", [])
    )


def test_the_unpublished_notebooks_are_exactly_those_the_edition_lacks():
    published = {name.removesuffix(".ipynb") for name in publish.listed(EDITION)}
    assert set(UNPUBLISHED) == set(SOURCES) - published, "publish them all with a GPU run, then empty UNPUBLISHED"
    assert published <= set(SOURCES)


def test_edition_is_a_complete_gpu_run():
    assert EDITION.is_dir(), f"{EDITION.relative_to(ROOT)} is missing (see test_book_index_links_every_notebook)"
    assert publish.listed(EDITION) == [f"{s}.ipynb" for s in STEMS]
    for stem in STEMS:
        nb = nbformat.read(EDITION / f"{stem}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert publish.problems(nb, stem, allow_cpu=False) == []
    readme = (EDITION / "README.md").read_text()
    # the published edition names the publishing command of its day (`python -m flexfix.publish` before `flexfix`)
    assert any(c in readme for c in PUBLISH_COMMANDS) and "do not edit by hand" in readme


def test_book_index_links_every_notebook(built):
    out, _, notebooks = built
    index = (out / "index.html").read_text()
    links = re.findall(r'<h2><a href="([^"]+)\.html">', index)
    assert links == STEMS, "the index lists the series in order"
    for stem in STEMS:
        assert (out / f"{stem}.html").is_file()
        assert publish.run_line(notebooks[stem]) in index, f"{stem}: its provenance line is on the index"


def test_book_pages_have_every_figure_inline(built):
    out, _, notebooks = built
    for stem, nb in notebooks.items():
        page = (out / f"{stem}.html").read_text()
        images = re.findall(r"<img\b[^>]*>", page)
        assert len(images) == _figures(nb), f"{stem}: {len(images)} <img> for {_figures(nb)} image/png outputs"
        assert all('src="data:image/png;base64,' in img for img in images), f"{stem}: a figure is not inline"


def test_every_notebook_draws_a_figure(built):
    _, _, notebooks = built
    without = [stem for stem, nb in notebooks.items() if _figures(nb) == 0]
    assert not without, f"no figure in {without}: every notebook draws at least one on the GPU path"


def test_book_pages_show_no_error(built):
    from bs4 import BeautifulSoup

    out, _, notebooks = built
    for stem, nb in notebooks.items():
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{stem}: error outputs {[(e.ename, e.evalue) for e in errors]}"
        soup = BeautifulSoup((out / f"{stem}.html").read_text(), features="html.parser")
        rendered = " ".join(o.get_text() for o in soup.select(".jp-OutputArea-output"))
        assert "Traceback" not in rendered, f"{stem}: a traceback among the rendered outputs"


def test_book_builds_fast_and_offline(built):
    out, seconds, notebooks = built
    assert seconds < 60, f"the book took {seconds:.1f} s"
    for stem, nb in notebooks.items():
        page = (out / f"{stem}.html").read_text()
        remote = re.findall(r"<(?:script|link|img)\b[^>]*(?:src|href)=\"https?://[^\"]*\"", page)
        assert remote == [] or book.has_math(nb), f"{stem}: the page loads {remote}"


# publish and book on synthetic notebooks.

STDERR_NOISE = [
    "/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter and ipywidgets.\n"
    "  from .autonotebook import tqdm as notebook_tqdm\n",
    "\rsweep:   0%|          | 0/4 [00:00<?, ?it/s]",
    "\rsweep: 100%|██████████| 4/4 [00:01<00:00,  3.50it/s]",
    "\n",
]
REAL_STDERR = "UserWarning: something a reader should see\n"


def executed(
    *, device="cuda", header=True, error=False, unexecuted=False, exception=None, stderr=True, order=True
) -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: parameters, injected parameters, the header cell, a figure cell."""
    v4 = nbformat.v4
    first = v4.new_markdown_cell("# 0X · A title with `code`\n\n**What you will learn**\n\n* one;\n* two.\n\nMore.")
    params = v4.new_code_cell('DEVICE = "auto"', execution_count=1, metadata={"tags": ["parameters"]})
    injected = v4.new_code_cell('DEVICE = "cuda"', execution_count=2, metadata={"tags": ["injected-parameters"]})
    text = f"device path: {device}\n"
    if header:
        text = f"this run: Fake GPU (driver 1), torch 2, vLLM 0.20.0, flexfix 0, commit abc, 2026-11-26\n{text}"
    head = v4.new_code_cell("print(header)", execution_count=3, outputs=[v4.new_output("stream", text=text)])
    outputs = [v4.new_output("stream", name="stderr", text=t) for t in STDERR_NOISE] if stderr else []
    outputs += [v4.new_output("stream", name="stderr", text=REAL_STDERR)] if stderr else []
    outputs.append(v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}))
    if error:
        outputs.append(v4.new_output("error", ename="ValueError", evalue="planted", traceback=["Traceback ..."]))
    figure = v4.new_code_cell("plot()", execution_count=None if unexecuted else (4 if order else 2), outputs=outputs)
    nb = v4.new_notebook(cells=[first, params, injected, head, figure, v4.new_markdown_cell("Takeaways")])
    nb.metadata["papermill"] = {"parameters": {"DEVICE": device}, "duration": 12.5, "exception": exception}
    return nb


@pytest.fixture
def tree(tmp_path):
    """tmp_path/notebooks (two sources), tmp_path/build (their executed copies), tmp_path/data/notebooks."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "build").mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        nbformat.write(nbformat.v4.new_notebook(), tmp_path / "notebooks" / name)
        nbformat.write(executed(), tmp_path / "build" / name)
    return tmp_path


def run_publish(tree, *extra):
    argv = ["--src", str(tree / "build"), "--dest", str(tree / "data" / "notebooks")]
    return publish.main([*argv, "--notebooks", str(tree / "notebooks"), *extra])


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else None


def test_publish_writes_a_normalised_edition(tree):
    assert run_publish(tree) == 0
    dest = tree / "data" / "notebooks"
    assert sorted(p.name for p in dest.iterdir()) == [".flexfix-output.json", "01_a.ipynb", "02_b.ipynb", "README.md"]
    nb = nbformat.read(dest / "01_a.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.papermill == {"parameters": {"DEVICE": "cuda"}, "duration": 12.5, "exception": None}
    figure = nb.cells[4].outputs
    assert [o.output_type for o in figure] == ["stream", "display_data"]
    assert figure[0].name == "stderr" and figure[0].text == REAL_STDERR, "noise dropped, real stderr kept"
    assert figure[1].data["image/png"] == PNG
    readme = (dest / "README.md").read_text()
    assert "`flexfix publish`" in readme and "Fake GPU" in readme and "12 s" in readme
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")], "no temporary folder left"
    before = snapshot(dest)
    assert publish.main(["--src", str(dest), "--dest", str(dest), "--notebooks", str(tree / "notebooks")]) == 0
    assert snapshot(dest) == before, "publishing the edition again changes nothing"


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(error=True), "cell [4] has an error output: ValueError: planted"),
        (dict(unexecuted=True), "cell [4] was not executed"),
        (dict(order=False), "cell [4] has execution count 2 after 3"),
        (dict(exception=True), "papermill recorded an exception"),
        (dict(header=False), "its first output does not begin with 'this run:'"),
        (dict(device="cpu"), "it ran on device path 'cpu', not a GPU (cuda)"),
        (dict(device="mps"), "it ran on device path 'mps', not a GPU"),
    ],
    ids=["error output", "unexecuted cell", "out of order", "papermill exception", "no header", "cpu", "mps"],
)
def test_publish_refuses_and_keeps_the_edition(tree, capsys, change, message):
    assert run_publish(tree) == 0
    dest = tree / "data" / "notebooks"
    before = snapshot(dest)
    nbformat.write(executed(**change), tree / "build" / "02_b.ipynb")
    with pytest.raises(SystemExit) as exc:
        run_publish(tree)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "nothing published" in err and f"02_b.ipynb: {message}" in err and "01_a.ipynb" not in err
    assert snapshot(dest) == before, "a refused publish leaves the edition as it was"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["notebooks"], "no temporary folder left"


def test_publish_allow_cpu(tree):
    for name in ("01_a.ipynb", "02_b.ipynb"):
        nbformat.write(executed(device="cpu"), tree / "build" / name)
    with pytest.raises(SystemExit):
        run_publish(tree)
    assert run_publish(tree, "--allow-cpu") == 0
    assert "--allow-cpu" in (tree / "data" / "notebooks" / "README.md").read_text()


def test_publish_refuses_a_missing_or_extra_notebook(tree, capsys):
    (tree / "build" / "02_b.ipynb").rename(tree / "build" / "03_c.ipynb")
    (tree / "build" / ".02_b.tmp123.ipynb").write_text("{}")  # run_notebooks' temporary file: ignored
    with pytest.raises(SystemExit) as exc:
        run_publish(tree)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "02_b.ipynb: missing" in err and "03_c.ipynb: extra notebook" in err
    assert ".02_b" not in err and not (tree / "data" / "notebooks").exists()


def test_publish_never_replaces_a_folder_that_is_not_an_edition(tree, capsys):
    data = tree / "data"
    data.mkdir()
    (data / "results-cuda.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        publish.main(["--src", str(tree / "build"), "--dest", str(data), "--notebooks", str(tree / "notebooks")])
    assert exc.value.code == 2 and "results-cuda.json" in capsys.readouterr().err
    assert snapshot(data) == {"results-cuda.json": b"{}"}


def test_a_failing_write_keeps_the_old_folder(tmp_path):
    dest = tmp_path / "edition"
    publish.replace_folder(dest, lambda tmp: (tmp / "old.ipynb").write_text("old"), owner="flexfix publish")
    before = snapshot(dest)
    assert set(before) == {".flexfix-output.json", "old.ipynb"}

    def fill(tmp):
        (tmp / "new.ipynb").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish.replace_folder(dest, fill, owner="flexfix publish")
    assert snapshot(dest) == before and os.listdir(tmp_path) == ["edition"]


def test_clean_stderr_drops_only_progress_noise():
    assert publish.clean_stderr("".join(STDERR_NOISE)).strip() == ""
    mixed = "first\n\rbar:  50%|#    | 1/2 [00:00<00:01, 2.0it/s]\rbar: 100%|##| 2/2 [00:01<00:00, 2.0it/s]\nlast\n"
    assert publish.clean_stderr(mixed) == "first\nlast\n"
    kept = "RuntimeWarning: 5 [x] happened\nValueError: bad 3/4\n  indented detail\n"
    assert publish.clean_stderr(kept) == kept
    assert publish.clean_stderr("\rcopy: 3it [00:01, 2.9it/s]\rdone\n") == "done\n"


def test_book_of_a_synthetic_edition(tree):
    assert run_publish(tree) == 0
    out = tree / "book"
    pages = book.build(tree / "data" / "notebooks", out)
    assert [p.name for p in pages] == ["index.html", "01_a.html", "02_b.html"]
    index = (out / "index.html").read_text()
    assert '<a href="01_a.html">0X · A title with <code>code</code></a>' in index
    assert "<li>one;</li>" in index and "More." not in index, "the learn list, and only it"
    assert "this run: Fake GPU (driver 1)" in index and "executed in 12 s" in index
    page = (out / "01_a.html").read_text()
    assert page.count("<img") == 1 and '<a href="02_b.html">' in page and '<a href="index.html">' in page
    assert "<script src=" not in page and "UserWarning: something a reader should see" in page


def test_book_refuses_an_error_and_a_foreign_out(tree, capsys):
    nbformat.write(executed(error=True), tree / "build" / "01_a.ipynb")
    with pytest.raises(SystemExit) as exc:
        book.main(["--src", str(tree / "build"), "--out", str(tree / "book")])
    assert exc.value.code == 2 and "01_a.ipynb: cell [4] has an error output" in capsys.readouterr().err
    nbformat.write(executed(), tree / "build" / "01_a.ipynb")
    (tree / "out").mkdir()
    (tree / "out" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        book.main(["--src", str(tree / "build"), "--out", str(tree / "out")])
    assert "keep.txt" in capsys.readouterr().err and (tree / "out" / "keep.txt").read_text() == "mine"
