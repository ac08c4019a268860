"""Teaching round 9, notebooks 01 and 02: a newcomer's reading of the published GPU edition at 9ac52cf (findings A1
and D1-D10 of r0102). Each test ties a sentence, table or figure to the data it states, or to the notebook text."""

from test_teaching_01_03 import DATA, cells, text
from test_teaching_round4_01_02 import _kernel, _md

from flexfix.edition import glossary, schemas, tables
from flexfix.edition.narrative import outcome_cause as cause_story
from flexfix.edition.narrative import reproduce, workarounds
from flexfix.edition.tables import outcome_cause as cause_tables
from flexfix.edition.tables.outcomes import dispatch_pairs
from flexfix.measure import record


def _threshold(fault_at=None):
    """The recorded crash-threshold table, with the fresh engine at ``fault_at`` requests made to fault (as the
    published GPU run's stock_44 did), and its dispatch table."""
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    table = tables.threshold_table(engines)
    if fault_at is not None:
        fresh = table["how"] == table["how"].iloc[0]
        table.loc[fresh & (table["requests"] == fault_at), "outcome"] = "illegal_memory_access"
    return table, glossary.decode_dispatch(dispatch_pairs(table))


def _padded_past(table, dispatch):
    """Every count past one query block an engine of the table was given whose batch its dispatcher runs without a
    FULL graph, whatever the outcome."""
    tried = set(zip(table["max_num_seqs"], table["requests"]))
    rows = zip(dispatch["max_num_seqs"], dispatch["decode batch"], dispatch["runs with"])
    return sorted({int(b) for m, b, mode in rows if (m, b) in tried and b > 16 and mode != "FULL"})


# A1: a fault at a batch the dispatcher starts outside any FULL graph is listed, and not said to be impossible.


def test_a1_a_fault_at_a_padded_past_batch_is_listed_and_put_on_no_dispatch():
    table, dispatch = _threshold(fault_at=44)
    said = str(reproduce.crash_threshold(table, dispatch))
    outside = _padded_past(table, dispatch)
    assert 44 in outside  # the published run's fault: 44 padded to 48, past its largest FULL graph (40)
    assert f"a decode batch of {reproduce.listing(outside)} requests" in said
    assert "cannot misread *at that batch size*" in said and "cannot misread. " not in said
    largest = int(
        dispatch[(dispatch["max_num_seqs"] == 44) & (dispatch["decode batch"] == 44)]["largest FULL decode graph"].iloc[
            0
        ]
    )
    assert "Yet the engine at 44 requests faulted" in said and "does not explain this fault" in said
    assert f"shrunk to {largest} requests or fewer" in said and "do not record such a step" in said
    done = [n for n in outside if n != 44]
    assert f"At {reproduce.listing(done)} requests 'completed' therefore says nothing about the bug" in said


def test_a1_without_a_fault_there_nothing_is_said_of_one():
    table, dispatch = _threshold()
    said = str(reproduce.crash_threshold(table, dispatch))
    outside = _padded_past(table, dispatch)
    assert f"a decode batch of {reproduce.listing(outside)} requests" in said
    assert "Yet the engine" not in said and "does not explain" not in said
    assert "whether a batch shrank that far is not known" in said


def test_a1_the_dispatch_section_qualifies_cannot_misread():
    md = " ".join(_md("01_reproduce_ima").split())
    assert "its attention outside any graph, and cannot misread *at that batch size*" in md
    assert "to a size with a FULL graph and still more than one query block replays that graph and can." in md


# D1: a first fault with larger counts completed after it is an isolated fault, not a threshold.


def test_d1_an_isolated_fault_is_not_said_to_start_there():
    table, dispatch = _threshold(fault_at=44)
    said = str(reproduce.crash_threshold(table, dispatch))
    fresh = table[table["how"] == table["how"].iloc[0]]
    later = sorted({int(n) for n in fresh[(fresh["outcome"] == "completed") & (fresh["requests"] > 44)]["requests"]})
    assert later  # 45, 46 and 47 completed after the fault
    assert f"larger counts completed ({reproduce.listing(later)} requests), so 44 is an isolated fault" in said
    assert "starts there or at" not in said
    assert "no count from 41 to 43 was tried;" in said
    assert "no count from 33 to 47 was tried: the first fault lies there or at 48" in said  # nothing completed above


# D2: the CPU stand-in's source is shown only where it is what runs.


def test_d2_replay_frozen_is_shown_only_off_the_gpu():
    code = [text(c) for c in cells("01_reproduce_ima") if "smallest.replay_frozen" in text(c)]
    assert len(code) == 1
    assert 'if device != "cuda":' in code[0] and "    display(smallest.shown(smallest.replay_frozen))" in code[0]
    assert "shows no other code" in _md("01_reproduce_ima")


# D3: the torch-only section warns that a wrong run need not crash; the sentence says when none did.


def test_d3_a_run_with_no_crash_is_said_to_have_none():
    kernel, _ = _kernel()
    said = str(reproduce.kernel_outcomes(kernel, "the recorded run"))
    crashed = kernel["status"].isin(reproduce.CRASHES).any()
    assert ("None of them crashed" in said) is (not crashed)
    silent = kernel.copy()
    silent["status"] = silent["status"].replace({"illegal_memory_access": "wrong_result"})
    silent["records"] = [
        [{**r, "outcome": "wrong_result"} if r.get("outcome") == "illegal_memory_access" else r for r in recs]
        for recs in silent["records"]
    ]
    assert (silent["status"] == "wrong_result").any()
    assert "None of them crashed: every wrong run answered silently wrong" in str(
        reproduce.kernel_outcomes(silent, "this run")
    )
    md = " ".join(_md("01_reproduce_ima").split())
    assert "Do not expect every wrong run here to crash" in md
    assert "what the crash looks like and where it starts" not in md


# D6: the default placement's bullet says where V sat before it counts the driver's predictions.


def test_d6_the_default_bullet_explains_before_it_counts():
    runs, prov = cause_tables.recorded(DATA)
    said = str(cause_story.outcome_cause(runs, tables.recorded_where(prov)))
    bullet = next(line for line in said.splitlines() if line.startswith("* Caches `default`"))
    assert bullet.index("V ended where K began") < bullet.index("the outcome was the one those answers predict")
    plain = runs[(runs["copy"] == "as_strided") & (runs["batch"] > 16) & runs["touch"].isna()]
    d = plain[(plain["placement"] == "default") & (plain["v_placement"] == "default")]
    hit = int((d["status"] == d["predicted"]).sum())
    assert f"in {hit} of {len(d)}" in bullet
    assert ("the direct reads below show why the list can mispredict" in bullet) is (hit < len(d))


# D7: no undefined jargon: arm, face, needle prompt; "recording" defined where the words are.


def test_d7_jargon_is_replaced_or_defined():
    runs, prov = cause_tables.recorded(DATA)
    said = str(cause_story.outcome_cause(runs, tables.recorded_where(prov)))
    assert " arm" not in said
    kernel, _ = _kernel()
    assert "face" not in str(reproduce.faces(kernel, "here", kernel.assign(status="ok"), "there", "cuda"))
    assert "needle" not in _md("02_apply_flexfix")
    assert "A **recording** is a\nresults file under `data/`" in _md("01_reproduce_ima")


# D8: the two models are said apart, and an order that looks backwards is said to be one engine of each.


def test_d8_a_backwards_order_is_named_only_where_the_ratios_show_it():
    from flexfix.edition.tables.workarounds import workaround_table

    safety, _ = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    ways = workaround_table(safety, cost)
    said = str(workarounds.without_plugin(ways, "here", "there"))
    pw, eager = "piecewise CUDA graphs only", "no CUDA graphs"
    speeds = [c for c in ways.columns if "vs patched" in str(c)]
    backwards = any(float(ways.loc[pw, c]) < float(ways.loc[eager, c]) for c in speeds)
    assert ("which looks backwards: it is one engine of each" in said) is backwards
    flipped = ways.copy()
    for c in speeds:
        flipped.loc[pw, c], flipped.loc[eager, c] = 0.9, 0.5
    assert "looks backwards" not in str(workarounds.without_plugin(flipped, "here", "there"))
    md = " ".join(_md("02_apply_flexfix").split())
    assert "setting and patched engine on one model (the variance model below)" in md


# D9 and D10: which every-request check is the evidence; why the torch-only capture width need not be vLLM's.


def test_d9_d10_the_evidence_and_the_capture_width_are_said():
    md02 = " ".join(_md("02_apply_flexfix").split())
    assert "Which check is the evidence: the recorded one below" in md02
    assert "a batch run PIECEWISE tests nothing" in md02
    md01 = " ".join(_md("01_reproduce_ima").split())
    assert "It captures at a wider `K` than vLLM does, and need not match vLLM there" in md01
