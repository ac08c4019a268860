"""The edition index's ``evidence`` cell of one executed notebook (:func:`about`): what it measured live, and how many
results it shows from earlier runs instead, counted from the ``recorded on`` lines it prints.

Two forms name a recording. The full one (:func:`flexfix.edition.tables.provenance.provenance_line`: GPU,
driver, torch, vLLM, commit and time) and the short one of a sentence or a table cell (``recorded on GPU, commit C,
time``, :func:`flexfix.edition.tables.provenance.recorded_on`, or ``recorded on GPU, flexfix commit C`` with or
without the time: notebook 01's table of the runs that used the same seeds). A short form is the same recording as a
full one of its GPU and commit (and time, where it says one); otherwise it is a recording of its own (r0102 round 22,
A1: 01's brief named two recordings, by GPU, commit and time, in a form this count missed). Printed outputs are read
once each: a stream's text, a display's markdown (its plain text only when it has no markdown, as a table is shown in
both); a line that names several recordings counts as one line."""

from __future__ import annotations

import re

import nbformat

from flexfix.edition.narrative.serving import FAKE_LEAD

__all__ = ["FAKE_LIVE", "about", "recordings"]

# A provenance line, wherever it sits in a printed line (05 and 07 put the file's name before it): the GPU, and the
# recording it names (commit and time), which tells the recordings apart.
_RECORDED = re.compile(r"recorded on (.+?)(?: \(driver [^)]*\))?, torch .*?, commit (\w+), (\S+?)(?:[,;\s]|$)", re.M)
# The short form of a sentence or a table cell: GPU (parentheses allowed) and commit, the time where given.
_SHORT = re.compile(
    r"recorded on ((?:[^,;|\n(<]|\([^)\n]*\))+?), (?:flexfix )?commit (\w+)(?:, (\d{4}-\d\d-\d\dT[^\s|,;<)]+))?"
)
# What notebook 06 prints when its live part is its FAKE server (RUN_SERVER False): no vLLM ran live there.
_FAKE = FAKE_LEAD
# Its index row: the scenarios are the FAKE server's, while the installed vLLM's dispatcher and the tokenizer check
# still run live
FAKE_LIVE = (
    "live part: the serving scenarios against a FAKE server, not vLLM; also live: the installed vLLM's dispatcher "
    "table and the tokenizer check"
)


def _outputs_text(nb: nbformat.NotebookNode) -> str:
    """Every printed output of ``nb`` once: a stream's text, a display's markdown, else its plain text."""
    texts = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            if o.get("output_type") == "stream":
                texts.append(o.get("text", ""))
            else:
                data = o.get("data", {})
                texts.append(str(data.get("text/markdown") or data.get("text/plain") or ""))
    return "\n".join(texts)


def recordings(text: str) -> tuple[list[tuple[str, str, str | None]], int]:
    """The recordings ``text`` names (GPU, commit, time: each once, in order of first appearance) and the number of
    lines naming them (full and short forms; a line naming several counts once)."""
    full = _RECORDED.findall(text)
    short = _SHORT.findall(text)
    found: list[tuple[str, str, str | None]] = list(dict.fromkeys(full))
    for gpu, commit, time in short:
        same = [r for r in found if r[0] == gpu and r[1] == commit and (not time or r[2] in (None, time))]
        if not same:
            found.append((gpu, commit, time or None))
    lines = sum(bool(_RECORDED.search(line) or _SHORT.search(line)) for line in text.splitlines())
    return found, lines


def about(nb: nbformat.NotebookNode) -> tuple[str, str]:
    """A notebook's purpose (its title, after the number) and what of its evidence is live and what recorded, read from
    its outputs: each printed provenance line (``recorded on ...``, wherever it sits in its line, full or a table
    cell's short form) is a results file shown as recorded, not run; a recording printed twice counts once (its GPU,
    commit and time tell it apart), and the number of lines is said beside it; every GPU they name is named; a
    notebook whose live part is a FAKE server says so."""
    title = next((c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source), "")
    purpose = re.sub(r"^#+\s*(\d+\s*·\s*)?", "", title).replace("|", "\\|") or "?"
    text = _outputs_text(nb)
    found, lines = recordings(text)
    fake = _FAKE in text
    if not found:
        return (
            purpose,
            FAKE_LIVE if fake else "live: every result was measured in this run",
        )
    gpus = list(dict.fromkeys(gpu for gpu, _, _ in found))
    n = len(found)
    said = f"{n} recorded result{'s' if n > 1 else ''} shown with a `recorded on` line (on {' and '.join(gpus)}"
    said += f"; {lines} such lines, as a recording printed more than once counts once)" if lines != n else ")"
    return purpose, f"{FAKE_LIVE}; {said}" if fake else f"live, except {said}"
