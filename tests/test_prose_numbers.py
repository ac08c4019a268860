"""The notebooks' own markdown states no measured number: every number in it is a definition (flexfix.edition.glossary),
a parameter of that notebook, or part of a name (a version, a PR, a notebook, a model or GPU name). What a run
measured reaches the text through flexfix.edition.narrative, from the results themselves, so prose cannot drift from the
numbers (issue 16). This test fails on any other number, so a new measured claim typed into markdown fails CI."""

import ast
import json
import re
from pathlib import Path

import pytest

from flexfix.edition import glossary

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
         "eleven": 11, "twelve": 12, "twenty": 20, "hundred": 100, "dozen": 12}  # fmt: skip
NAMES = [
    r"\d+\.\d+\.\d+",  # versions
    r"#\d+",  # PRs and issues
    r"(?i)\bnotebooks? \d\d(?:[-–]\d\d)?(?:,? (?:and )?\d\d)*",  # cross-references
    r"HTTP \d{3}",  # status codes
    r"^#+ \d\d ·",  # the title's number
    r"^\s*\d+\. ",  # ordered-list markers
]
NUMBER = re.compile(r"(?<![\w.\-/#])(\d+(?:\.\d+)?(?:e-?\d+)?)(?:x|%)?(?![\w])")
WORD = re.compile(r"\b(" + "|".join(WORDS) + r")\b", re.IGNORECASE)


def parameters(nb: dict) -> set[float]:
    """Every number in the notebook's parameters cell (its defaults: what a reader sees, and can change)."""
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    found = set()
    for node in ast.walk(ast.parse("".join(cell["source"]))):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            found.add(float(node.value))
    return found


def prose(text: str) -> str:
    """Markdown without code: fenced blocks, and inline spans that hold code (a name or an operator)."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`([^`]*)`", lambda m: m.group(0) if re.fullmatch(r"[\d.,%x ]+", m.group(1)) else " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    for pattern in NAMES:
        text = re.sub(pattern, " ", text, flags=re.M)
    text = re.sub(r"(?<=\d)[–-](?=\d)", " – ", text)  # ranges: both ends count
    return text


def unbacked(text: str, allowed: set[float]) -> list[str]:
    text = prose(text)
    numbers = [(m.group(0), float(m.group(1))) for m in NUMBER.finditer(text)]
    numbers += [(m.group(0), float(WORDS[m.group(1).lower()])) for m in WORD.finditer(text)]
    return [shown for shown, value in numbers if value not in allowed]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_states_no_number_that_is_not_a_definition_or_a_parameter(path):
    nb = json.loads(path.read_text())
    allowed = {float(v) for v in glossary.defined_numbers()} | parameters(nb)
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown":
            for shown in unbacked("".join(cell["source"]), allowed):
                problems.append(f"cell {i}: {shown!r}")
    assert not problems, (
        f"{path.name}: numbers in markdown with nothing behind them (print them from a code cell or write them with "
        f"flexfix.edition.narrative; a definition belongs in flexfix.edition.glossary): {problems}"
    )


@pytest.mark.parametrize(
    "text, bad",
    [
        ("the tiny model has 4 layers", ["4"]),
        ("graph replay was 1.4-2.7x faster", ["1.4", "2.7x"]),
        ("it moved three times out of three", ["three", "three"]),
        ("an error of 7e-4 from the reference", ["7e-4"]),
        ("about `0.5` ms", ["0.5"]),
    ],
)
def test_the_check_catches_measured_numbers(text, bad):
    assert unbacked(text, {16.0, 48.0}) == bad


@pytest.mark.parametrize(
    "text",
    [
        "vLLM 0.20.0 and PR #40842, see notebook 03 and notebooks 01-05",
        "more than 16 query tokens, batch 48, `K = 16 * cdiv(max_seq_len, 16)`, an H100, bf16, Llama-3-8B",
        "1. first step\n2. second step",
    ],
)
def test_the_check_passes_names_definitions_and_parameters(text):
    assert unbacked(text, {16.0, 48.0}) == []
