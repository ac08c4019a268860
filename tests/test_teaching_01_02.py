"""Notebooks 01 and 02 as a newcomer read their CPU edition: each test states what a reader is told and checks it
against the table beside it, the data or the code."""

import json
from pathlib import Path

import pytest

from flexfix.edition import schemas, tables
from flexfix.edition.checks import DataError
from flexfix.edition.narrative import reproduce
from flexfix.measure import engine_sweep, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def cells(stem):
    return json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]


def text(cell):
    return "".join(cell["source"])


def _every():
    every, _ = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    return every, tables.every_request_table(engine_sweep.request_rows(every))


# Item 1: the every-request sentences say what the table beside them shows.


def test_every_request_sentences_match_the_table_for_the_patched_engines():
    every, rows = _every()
    said = reproduce.every_request(every, rows)
    # the table shows the patched engines at 17, 32 and 47, nothing differing; the sentence said "completed no batch"
    assert "completed no batch" not in said and "completed: none" not in said
    for engine, mine in rows.groupby("engine"):
        assert f"**{engine}**" in said  # the sentence names each engine as the table does
        if "patched" in engine:
            sizes = ", ".join(str(n) for n in mine["requests"][:-1]) + f" and {mine['requests'].iloc[-1]}"
            assert f"**{engine}** answered every request as it does alone" in said
            assert f"completed: {sizes}" in said


def test_an_engine_that_completed_but_has_no_rows_is_an_error_not_a_sentence():
    every, rows = _every()
    with pytest.raises(DataError):
        reproduce.every_request(every, rows[rows["engine"].str.contains("stock")])
