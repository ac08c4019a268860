"""Round 9 of the teaching reading (#26): what the round-8 reading left open, fixed before the republish."""

from pathlib import Path

import nbformat

from flexfix.edition import schemas, tables
from flexfix.edition.narrative import reproduce
from flexfix.measure import engine_sweep, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _markdown(name: str) -> str:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_d13_05_says_runs_are_numbered_within_a_model_and_defines_its_columns_at_the_table():
    text = _markdown("05_cost.ipynb")
    assert "Runs are numbered within each model" in text
    before_table = text.split("Runs are numbered within each model")[1].split("**")[0]
    assert "`slowest_first` counts" in before_table and "`by_chance` is" in before_table


def test_d18_01_every_request_lines_say_in_words_what_each_engine_was_given_and_completed():
    every, _ = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    rows = tables.every_request_table(engine_sweep.request_rows(every))
    said = reproduce.every_request(every, rows)
    assert "Batches planned" not in said and "completed: " not in said
    assert said.count("It was given batches of ") == len(every)
