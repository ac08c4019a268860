"""Notebooks 06 and 07 as a newcomer read their CPU edition: one test per finding fixed in the sources."""

import json
import re
from pathlib import Path

from flexfix.edition import tables
from flexfix.edition.narrative import guard as guard_story
from flexfix.edition.narrative import guard_servers, guard_serving
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.plots.guard import CAPTURED, NOW
from flexfix.edition.tables import guard as tg
from flexfix.edition.tables import serving as ts
from flexfix.integration import serving

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _markdown(stem: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    text = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return re.sub(r"\s+", " ", text)


def test_06_logprob_distance_is_said_over_same_token_requests_only():
    table, _ = serving.recorded_run(DATA)
    stages = tables.stage_table(table).set_index(["scenario", "stage", "requests"])
    bi0 = stages.loc[("patched_bi0", "together", 48)]
    assert bi0.max_abs_logprob_diff > 1 > bi0.max_logprob_diff_same_tokens > 0  # 3.02 came from other tokens
    said = serving_story.scenarios(table, tables.stage_table(table), "t")
    same = stages.loc["patched_bi0"]["max_logprob_diff_same_tokens"].max()  # round 8 D15: one per scenario
    assert f"where the tokens were the same, logprobs moved by up to {same:.3g}" in said
    assert "up to 3.02" not in said


def test_06_scenario_table_marks_unsent_batches_and_says_how_the_server_ended():
    table, _ = serving.recorded_run(DATA)
    shown = ts.scenario_table(table)
    assert shown.loc["stock", "server"] == "exited by itself, status 0"
    assert shown.loc["patched_bi1", "server"].startswith("still running")
    fake = table.assign(command=[["python", "tests/fake_vllm_server.py"]] * len(table))
    assert "loads no plugin" in str(ts.scenario_table(fake).loc["patched_bi1", "plugin_lines"])


def test_06_goal_says_what_the_recording_compares_and_where_like_with_like_is():
    text = _markdown("06_serving")
    # the one-model caveat is said once, in the result lead the setup cell prints (round 22, D1)
    lead = guard_servers.one_model(DATA)
    assert "No single recording ran a stock server without the guard and a patched server on one model" in lead
    assert "notebook 07's *Serving*" in lead and lead in serving_story.result_lead(DATA)
    assert "more than 16 decode requests are in flight" not in text
    # the rule, not "above 16", and max_num_seqs equal to the batch is not sold as safe (newcomer reading A2)
    assert "which needs `max_num_seqs` above 16" not in text and "nothing is misread" not in text
    assert "at most `max_num_seqs`" in text and "no safeguard" in text


def test_07_names_the_reference_engine_patched_and_each_guarded_engine():
    eager, reference = tg.recorded(DATA, ["guard_stock_eager", "guard_patched_reference"]).values()
    equal = tg.eager_vs_reference(eager[0], reference[0])
    assert all(", patched" in r for r in equal["reference"])
    said = guard_story.eager_equal(equal, tg.engine_guard(eager[0]))
    assert "the BI=0 engine, 17 of 17" in said and "the engine with batch invariance forced (BI=1), 48 of 48" in said


def test_07_serving_says_error_stops_the_server_and_shows_the_guard_lines(capsys):
    served, _ = tg.served(DATA)
    agree = tg.servers_agree(served, [("guard_eager", "patched_tiny"), ("patched_tiny", "patched_tiny_again")])
    said = guard_serving.serving(served, agree)
    assert "turns the crash into an error response" not in said
    assert "`error` stops the engine, and with it the server" in said and "not batch invariance" in said
    tg.print_guard_lines(served, "guard_error")
    assert "FlexAttentionMetadata.block_mask.kv_indices: strides" in capsys.readouterr().out


def test_07_k_is_in_entries_and_the_guide_says_what_each_mode_does():
    text = _markdown("07_replay_guard")
    assert "K counts KV blocks of 16 tokens" not in text  # in the parameters cell, which is code: checked below
    src = (ROOT / "notebooks" / "07_replay_guard.ipynb").read_text()
    assert "K counts KV blocks" not in src and "in entries" in src
    for said in ("`log` only counts and logs: it does not prevent the crash", "FLEXFIX_GUARD_NOT_READ",
                 "`guard-<pid>.json`", "tensor parallelism", "`eager` through the V1 runner only",
                 "out of its sight", "no `eager` run on model runner V2"):  # fmt: skip
        assert said in text, said
    assert "part from row 1" not in text and "query block 1" in text
    assert "query block g" in CAPTURED and "query block g" in NOW
