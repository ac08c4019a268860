"""Notebooks 06 and 07 as a newcomer read them (review r0607, round 11): one test per finding fixed, each tying the
sentence to the data or code it states."""

import re

import pandas as pd
from test_teaching_round4_06_07 import DATA, ROOT, _code, _markdown, _nb

from flexfix.edition.narrative import guard as guard_story
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.tables import guard as guard_tables

FAKE = ROOT / "tests" / "fake_vllm_server.py"


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", str(text))


# A1


def test_06_a1_the_fake_500_body_is_the_real_ones_and_the_printed_forms_are_said_to_differ_by_client():
    """A1: 'the errors printed for this run and the recorded run's read alike', while one printed the bare message
    and the other the whole JSON object (the openai client's version decides which)."""
    text = _markdown("06_serving")
    assert "read alike" not in text
    # round 14 (B1): no claim of what decides the printed form; the body and the forms are printed (serving_body)
    assert "depending on its version" not in text and "word for word" not in text
    recorded = (DATA / "serve-cuda.json").read_text()
    message = "EngineCore encountered an issue. See stack trace (above) for the root cause."
    assert message in recorded and f'"message": "{message}"' in FAKE.read_text()  # the same message, word for word
    assert "'type': 'InternalServerError', 'param': None, 'code': 500" in recorded
    assert '"type": "InternalServerError"' in FAKE.read_text() and '"param": None' in FAKE.read_text()
    assert "serving_body.error_bodies(" in _code("06_serving")


# A2


def test_06_a2_the_fake_server_runs_without_a_gpu_or_with_run_server_off_not_as_in_the_published_edition():
    text = _markdown("06_serving")
    assert "also on a GPU box, as in the published edition" not in text
    assert "Without a GPU, or with `RUN_SERVER = False` on a GPU machine (the setup cell's output says which" in text


# B1


def _demo(first: float, later: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"case": "healthy", "seconds importing openai": 0.6, "seconds of the completion": first},
            {"case": "exit_at_start", "seconds importing openai": "n/a", "seconds of the completion": "n/a"},
            {"case": "never_healthy", "seconds importing openai": "n/a", "seconds of the completion": "n/a"},
            {"case": "ignore_sigterm", "seconds importing openai": 0.0, "seconds of the completion": later},
        ]
    )


def test_06_b1_completion_times_to_the_ms_one_later_case_and_the_ratio_they_support():
    """B1: 0.2 s and 0.1 s, rounded to tenths, cannot support 'not more than twice'; and one later case, not several."""
    said = _flat(serving_story.manager_times(_demo(0.183, 0.104)))
    assert "0.183 s (healthy) and 0.104 s (ignore_sigterm)" in said
    assert "the first completion took 1.8 times as long as the later one (0.183 s against 0.104 s;" in said
    assert "later ones" not in said
    assert "0.0 s in the later case," in said and "later cases" not in said
    said = _flat(serving_story.manager_times(_demo(0.313, 0.104)))
    assert "is still the slowest, 3.0 times as long as the later one:" in said and "not more than twice" not in said
    said = _flat(serving_story.manager_times(_demo(0.02, 0.004)))  # a later time of a few ms: no ratio claimed
    assert "twice" not in said and "times as long" not in said and "still the slowest" not in said
    # the table keeps the completion to the ms, so that the sentence's figures are the table's
    assert "round(completion, 3)" in (ROOT / "flexfix" / "integration" / "serving" / "demo.py").read_text()


def test_06_b1_the_fake_servers_manager_table_is_read_to_the_ms(manager_demo_table):
    said = _flat(serving_story.manager_times(manager_demo_table))
    sent = pd.to_numeric(manager_demo_table["seconds of the completion"], errors="coerce").dropna()
    for s in sent:
        assert f"{s:.3f} s" in said
    if len(sent) == 2 and sent.iloc[1] >= 0.01:
        ratio = sent.iloc[0] / sent.iloc[1]
        assert f"{ratio:.1f} times" in said and "the later one" in said


# D2


def test_07_d2_a_late_first_alarm_is_explained_beside_the_eager_table():
    recorded = guard_tables.recorded(DATA)
    runs = recorded["guard_stock_eager"][0]
    engines, batches = guard_tables.engine_guard(runs), guard_tables.engine_batches(runs)
    equal = guard_tables.eager_vs_reference(runs, recorded["guard_patched_reference"][0])
    said = _flat(guard_story.eager_equal(equal, engines, batches))
    for _, row in engines.merge(batches, on="engine").iterrows():
        first = row["first alarm at replay"]
        sizes = [int(s) for s in str(row["engine sweep, batch sizes"]).split(",") if s.strip().isdigit()]
        if first > 1 and sizes and sizes[0] <= 16:
            small = [s for s in sizes if s <= 16]
            assert f"first alarm came only at its replay {first}" in said
            assert f"begins with batches of {', '.join(map(str, small[:-1]))} and {small[-1]} requests" in said
        else:
            assert f"only at its replay {first} " not in said
    assert "guard_tables.engine_batches(eager_runs))" in _code("07_replay_guard")
    assert "first alarm came only" not in _flat(guard_story.eager_equal(equal, engines))  # without the batches


# D4, D5


def test_07_d4_the_row_stride_bullet_says_why_a_row_can_be_one_entry_wide():
    text = _markdown("07_replay_guard")
    assert "a step whose sequences all still fit in one KV block has rows one entry wide" in text
    source = (ROOT / "flexfix" / "guard" / "mutants.py").read_text()
    assert "need = max(1, min(widest, -(-int(md.max_seq_len) // block_size)))" in source  # what the bullet says


def test_07_d5_frozen_decision_answers_need_not_be_either_references():
    text = _markdown("07_replay_guard")
    assert "answers are then those of neither reference" not in text
    assert "so that a request can match neither (the table counts the requests that match each)" in text
    table = guard_tables.mutant_table(guard_tables.recorded(DATA)["guard026_mutants"][0]).set_index("mutant")
    assert "requests with the clean tokens" in table and "requests as without graphs" in table


# D6


def test_06_d6_the_first_cell_says_plainly_what_runs_live():
    first = _flat("".join(_nb("06_serving")["cells"][0]["source"]))
    assert "Unless this run starts real servers" not in first
    # round 22 (D2): said in one sentence, pointing to the self-test that says what the FAKE server shows
    assert "What runs live afterwards is a harness self-test, against the FAKE server (an emulation) unless" in first
    assert "`RUN_SERVER` is on with a GPU: *Harness self-test* says what it shows and what it does not." in first
