"""A static HTML book of the executed notebooks (``flexfix book``, ``make book``).

Reads the published edition (``data/notebooks``, see :mod:`flexfix.edition.publish`) and writes ``build/book``:
``index.html``, the series in order, each entry with the notebook's title (its first markdown heading), what it
shows (the "**What you will learn**" list of its first markdown cell) and its provenance (the ``this run:`` line
its run printed), linking to one page per notebook, ``<stem>.html``, rendered by nbconvert's ``HTMLExporter``
(JupyterLab's look) with every figure inline as a ``data:`` URI.

Offline by construction: nbconvert renders from local templates and CSS and fetches nothing, and the pages
load nothing either: the lab template's require.js and MermaidJS script tags (cdnjs) are left out (no output
here needs them), and MathJax's only in a notebook whose markdown has math (none today).  The notebooks are
checked as :func:`flexfix.edition.publish.problems` checks them (a CPU run is accepted): the book refuses (exit 2) a
notebook with an error output, an unexecuted cell or no ``this run:`` line.  The book is written into a
temporary folder next to ``--out`` and then swapped in; only a folder this command wrote, unchanged since, is
replaced (:mod:`flexfix.edition.output_folder`).
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import nbformat

from flexfix.edition import publish
from flexfix.edition.output_folder import replace_folder, replace_problems

PROG = "flexfix book"
ROOT = publish.ROOT
SRC = ROOT / "data" / "notebooks"
OUT = ROOT / "build" / "book"
INDEX = "index.html"

# The lab template, less its remote scripts; a navigation bar above and below each page.
TEMPLATE_NAME = "flexfix_book.html.j2"
TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}{%- if resources.flexfix_math -%}{{ super() }}{%- endif -%}{%- endblock -%}
{%- block html_head_css -%}<style>{{ resources.flexfix_css }}</style>{%- endblock html_head_css -%}
{%- block body_header -%}{{ super() }}{{ resources.flexfix_nav }}{%- endblock body_header -%}
{%- block body_footer -%}{{ resources.flexfix_nav }}{{ super() }}{%- endblock body_footer -%}
"""
NAV_CSS = (
    "nav.flexfix-nav{font-family:system-ui,sans-serif;font-size:14px;padding:8px 16px;margin:0 0 8px;"
    "border-bottom:1px solid #ddd;display:flex;gap:16px;flex-wrap:wrap}nav.flexfix-nav a{text-decoration:none}"
)
INDEX_CSS = """body{font-family:system-ui,sans-serif;max-width:56em;margin:2em auto;padding:0 1em;line-height:1.5;
color:#222}h1{font-size:1.7em}article{border-top:1px solid #ddd;padding:.5em 0 1em}h2{font-size:1.25em;margin:.4em 0}
h2 a{text-decoration:none}.run{font-family:ui-monospace,monospace;font-size:.85em;color:#555}code{font-size:.92em}"""
# Markdown math as nbconvert's MarkdownWithMath reads it: $...$, $$...$$, \\(...\\), \\[...\\], \\begin{...}.
MATH = re.compile(r"\$[^$\n]+\$|\$\$|\\\(|\\\[|\\begin\{")


class BookError(ValueError):
    """The book cannot be built; ``problems`` lists each one, naming the file."""

    def __init__(self, problems: Sequence[str]):
        super().__init__("\n  ".join(problems))
        self.problems = list(problems)


@dataclass
class Entry:
    """One notebook of the series: its page name and what the index shows of it."""

    stem: str
    title: str  # markdown, one line
    learn: str | None  # markdown list, or None
    run: str  # the "this run: ..." line
    seconds: float | None  # papermill's duration

    @property
    def page(self) -> str:
        return f"{self.stem}.html"


def _markdown_cells(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def title(nb: nbformat.NotebookNode, default: str) -> str:
    """The text of the notebook's first markdown heading (``default`` without one)."""
    for source in _markdown_cells(nb):
        found = re.search(r"^#{1,6}\s+(.+?)\s*#*\s*$", source, re.MULTILINE)
        if found:
            return found.group(1)
    return default


def learn(nb: nbformat.NotebookNode) -> str | None:
    """The bullet list under "**What you will learn**" in the first markdown cell, as markdown (or None)."""
    cells = _markdown_cells(nb)
    if not cells:
        return None
    lines = cells[0].splitlines()
    heading = [i for i, ln in enumerate(lines) if ln.strip().strip("*:").strip().lower() == "what you will learn"]
    if not heading:
        return None
    kept: list[str] = []
    for line in lines[heading[0] + 1 :]:
        if re.match(r"\s*(?:[*+-]|\d+[.)])\s", line) or (kept and (line.startswith((" ", "\t")) or not line.strip())):
            kept.append(line)
        elif kept or line.strip():
            break
    return "\n".join(kept).strip() or None


def has_math(nb: nbformat.NotebookNode) -> bool:
    """Whether MathJax has anything to typeset: math in a markdown cell, or a LaTeX output."""
    if any(MATH.search(s) for s in _markdown_cells(nb)):
        return True
    return any(
        "text/latex" in out.get("data", {}) for c in nb.cells if c.cell_type == "code" for out in c.get("outputs", [])
    )


def _inline(markdown: str) -> str:
    """One line of markdown as inline HTML (no enclosing paragraph)."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    rendered = markdown2html_mistune(markdown).strip()
    return rendered.removeprefix("<p>").removesuffix("</p>")


def _plain(markdown: str) -> str:
    """A heading as plain text, for a page's <title>."""
    return re.sub(r"`|\*\*?", "", markdown)


def exporter():
    """nbconvert's HTMLExporter with the lab template, less remote scripts (see :data:`TEMPLATE`)."""
    import jinja2
    from nbconvert import HTMLExporter

    quiet = logging.getLogger("flexfix.edition.book.nbconvert")  # its "alternative text is missing" warnings
    quiet.setLevel(logging.ERROR)
    return HTMLExporter(
        template_name="lab",
        template_file=TEMPLATE_NAME,
        extra_loaders=[jinja2.DictLoader({TEMPLATE_NAME: TEMPLATE})],
        log=quiet,
    )


def _nav(entries: Sequence[Entry], i: int) -> str:
    """Links to the index and to the previous and next notebooks."""

    def link(entry: Entry, text: str) -> str:
        return f'<a href="{quote(entry.page)}">{text}</a>'

    parts = [f'<a href="{INDEX}">↑ the series</a>']
    if i > 0:
        parts.append(link(entries[i - 1], f"← {html.escape(_plain(entries[i - 1].title))}"))
    if i + 1 < len(entries):
        parts.append(link(entries[i + 1], f"{html.escape(_plain(entries[i + 1].title))} →"))
    return f'<nav class="flexfix-nav">{" ".join(parts)}</nav>'


def render_page(ex, nb: nbformat.NotebookNode, entries: Sequence[Entry], i: int, src: Path) -> str:
    """One notebook as a standalone HTML page (figures inline), with the series' navigation."""
    import markupsafe

    resources = {
        "metadata": {"name": _plain(entries[i].title), "path": str(src)},
        "flexfix_math": has_math(nb),
        "flexfix_css": markupsafe.Markup(NAV_CSS),
        "flexfix_nav": markupsafe.Markup(_nav(entries, i)),
    }
    page, _ = ex.from_notebook_node(nb, resources=resources)
    return page


def index_page(entries: Sequence[Entry], src_label: str) -> str:
    """The series: each notebook's title (a link to its page), its provenance line and what it shows."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    articles = []
    for e in entries:
        took = f" (executed in {e.seconds:.0f} s)" if e.seconds is not None else ""
        shows = markdown2html_mistune(e.learn) if e.learn else ""
        articles.append(
            f'<article id="{html.escape(e.stem)}">\n<h2><a href="{quote(e.page)}">{_inline(e.title)}</a></h2>\n'
            f'<p class="run">{html.escape(e.run)}{took}</p>\n{shows}</article>'
        )
    body = "\n".join(articles)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>flexfix: the notebooks</title>
<style>{INDEX_CSS}</style>
</head>
<body>
<h1>flexfix: the notebooks</h1>
<p>vLLM 0.20.0's FlexAttention CUDA-graph bug (an illegal memory access), its fix (vLLM PR #40842) and why it
works, as executed notebooks: {len(entries)} of them, read from <code>{html.escape(src_label)}</code>. Each page
is the notebook as its run left it, with its figures; built by <code>make book</code>.</p>
{body}
</body>
</html>
"""


def _check_out(out: Path) -> list[str]:
    """``out`` is replaced whole: refuse a folder this command did not write, or one changed since
    (:func:`flexfix.edition.output_folder.replace_problems`)."""
    return replace_problems(out, PROG, f"--out {out}")


def build(src: str | os.PathLike = SRC, out: str | os.PathLike = OUT) -> list[Path]:
    """Render every notebook of ``src`` (sorted by name: the series' order) into ``out``; returns the pages,
    the index first.  :class:`BookError` lists every problem (nothing is written then)."""
    src, out = Path(src), Path(out)
    if not publish._is_dir(src):
        raise BookError([f"--src {str(src)[:120]} is not a folder (publish the notebooks first: flexfix publish)"])
    paths = [src / name for name in publish.listed(src)]
    found = [] if paths else [f"--src {src} holds no notebooks"]
    found += _check_out(out)
    notebooks, entries = [], []
    for path in paths:
        try:
            nb = publish.normalise(nbformat.read(path, as_version=4))
        except Exception as e:  # noqa: BLE001 - nbformat raises many kinds: all mean "not a notebook"
            found.append(f"{path}: not a notebook: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")
            continue
        found += publish.problems(nb, str(path), allow_cpu=True)
        duration = nb.metadata.get("papermill", {}).get("duration")
        entries.append(Entry(path.stem, title(nb, path.stem), learn(nb), publish.run_line(nb) or "", duration))
        notebooks.append(nb)
    if found:
        raise BookError(found)
    ex = exporter()

    def fill(tmp: Path) -> None:
        for i, nb in enumerate(notebooks):
            (tmp / entries[i].page).write_text(render_page(ex, nb, entries, i, src), encoding="utf-8")
        (tmp / INDEX).write_text(index_page(entries, _label(src)), encoding="utf-8")

    replace_folder(out, fill, owner=PROG)
    return [out / INDEX] + [out / e.page for e in entries]


def _label(src: Path) -> str:
    try:
        return str(src.resolve().relative_to(ROOT))
    except ValueError:
        return str(src)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from flexfix.edition.params import HelpFormatter

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--src", default=str(SRC), help="the executed notebooks")
    p.add_argument("--out", default=str(OUT), help="the book's folder")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    from flexfix.edition.output_folder import OutputFolderError
    from flexfix.measure import children

    p = build_parser(prog)
    args = p.parse_args(argv)
    start = time.monotonic()
    try:
        with children.interruptible():
            pages = build(args.src, args.out)
    except BookError as e:
        p.error(f"no book built:\n  {e}")
    except OutputFolderError as e:
        p.error(f"no book built: {e}")
    except OSError as e:
        print(f"{p.prog}: no book built: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(
            f"{p.prog}: interrupted by {children.signal_name(exc)}; no book built ({args.out} is as it was)",
            file=sys.stderr,
        )
        return children.exit_status(exc)
    print(f"{len(pages) - 1} notebooks in {pages[0]} ({time.monotonic() - start:.1f} s)")
    return 0
