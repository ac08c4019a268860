"""Teaching round 10, notebooks 01 and 02: a newcomer's reading of the published GPU edition at 664d37f (findings A1,
B1, C1 and D1, D2, D5-D10 of r0102). Each test ties a sentence, table or figure to the data it states, or to the
notebook text."""

import matplotlib
import numpy as np
from test_teaching_01_03 import DATA, cells, text
from test_teaching_round4_01_02 import _kernel
from test_teaching_round6_01_02 import _default_arm
from test_teaching_round7_01_02 import _cell, _code

from flexfix.edition import plots, schemas, tables
from flexfix.edition.narrative import outcome_cause as cause_story
from flexfix.edition.narrative import reproduce, workarounds
from flexfix.edition.tables import outcome_cause as cause_tables
from flexfix.measure import record

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _runs():
    runs, _ = cause_tables.recorded(DATA)
    return runs


# A1: a -1 pad points in front of the cache at KV head 0 only; every place that says where a pad points says so.


def test_a1_where_a_pad_points_names_kv_head_0():
    intro = _cell("01_reproduce_ima", "# 01 · Reproducing the illegal memory access")
    assert "which points just in front of the KV cache" not in intro
    # round 22, D5: where a pad points is said once, under the sanitizer's result (*Why before*); the intro points
    # to the section on what decides
    assert "Crash\nor wrong answer: what decides" in intro
    why = " ".join(_cell("01_reproduce_ima", "*Why before*").split())
    assert "At KV head 0 the kernel's address lands in front" in why and "inside the previous head's pages" in why
    assert "reads each pad at every KV head, so one pad is enough" in why  # why one pad is enough
    takeaways = " ".join(_cell("01_reproduce_ima", "## Takeaways").split())
    assert "reads a `-1` pad and the memory in front of the KV cache is unmapped" in takeaways


# B1: the gap between the recorded addresses and the size of the listed range are shown, run by run, from the data.


def test_b1_default_addresses_table_shows_the_recorded_gap_and_listed_size():
    runs = _runs()
    plain = _default_arm(runs)
    plain = plain[(plain["copy"] == "as_strided") & (plain["batch"] > 16)]
    table = cause_tables.default_addresses(runs)
    assert sorted(table.index) == sorted(int(s) for s in plain["seed"])
    for _, r in plain.iterrows():
        row = table.loc[int(r["seed"])]
        assert row["k_address"] == hex(int(r["k_address"])) and row["v_address"] == hex(int(r["v_address"]))
        assert row["k_address - v_address (bytes)"] == f"{int(r['k_address']) - int(r['v_address']):,}"
        assert row["range listed in front of K (bytes)"] == f"{int(r['front_k_size']):,}"
    said = str(cause_story.outcome_cause(runs, "t"))
    gap = int((plain["k_address"] - plain["v_address"]).iloc[0])
    assert f"the V cache started {gap:,} bytes before" in said
    assert "per run in the table right after this list" in said
    assert "display(cause_tables.default_addresses(cause_runs))" in _code(
        "01_reproduce_ima", "outcome_cause(cause_runs"
    )


def test_b1_without_adjacent_caches_the_sentence_points_to_the_table_and_claims_nothing():
    runs = _runs().copy()
    plain = _default_arm(runs).index
    runs.loc[plain[:1], "v_address"] = runs.loc[plain[:1], "v_address"] - 4096
    said = str(cause_story.outcome_cause(runs, "t"))
    assert "just that distance" not in said and "Where they sat, per run: the table right after this list" in said
    table = cause_tables.default_addresses(runs)
    gaps = set(table["k_address - v_address (bytes)"])
    assert len(gaps) == 2  # the table shows the run that differs


# C1: every run of a copy has its own x slot, far enough apart for the rings to be counted, within half a step.


def test_c1_rings_of_the_runs_sit_apart_and_within_half_a_step():
    from flexfix.edition.plots.replays import MAX_SHIFT

    for table in (_kernel()[0], _default_arm(_runs())[["copy", "batch", "seed", "device", "status", "records"]]):
        fig = plots.replay_errors(table, "t")
        ax = fig.axes[1]
        for line in ax.get_lines():
            xs = np.asarray(line.get_xdata(), dtype=float)
            if len(xs):
                assert np.abs(xs - np.round(xs)).max() <= MAX_SHIFT + 1e-9 < 0.5
        series = [ln for ln in ax.get_lines() if ln.get_marker() in ("o", "s") and ln.get_markersize() == 4]
        offsets = sorted({round(float(ln.get_xdata()[0]), 6) for ln in series})
        assert len(offsets) == len(series) == len(table)  # one slot per run
        assert min(np.diff(offsets)) >= 0.07  # at least 0.07 of a step apart (were 0.02: five rings on one spot)
        rings = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("silently wrong answer")]
        assert all(r.get_markersize() <= 8 for r in rings)
        plt.close(fig)


# D1: the crash threshold's headline says it is where these engines faulted, not where answers go wrong.


def test_d1_threshold_headline_is_no_wrong_answer_threshold():
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    said = str(reproduce.crash_threshold(tables.threshold_table(engines)))
    head = said.split("**What that first fault is, and is not.**")[1].split("\n\n")[0]  # r22 D6
    assert "not where answers first go wrong" in head and "next section check them" in head


# D2: where no torch-only run crashed, the sentence says so against the title and names where the crash is sought.


def test_d2_no_crash_in_the_torch_only_runs_points_to_the_engine_and_the_placements():
    kernel, _ = _kernel()
    silent = kernel.copy()
    silent.loc[silent["status"] == "illegal_memory_access", "status"] = "wrong_result"
    said = str(reproduce.kernel_outcomes(silent, "t", both_faces=False))
    assert "the notebook's title notwithstanding" in said
    assert 'section "The real vLLM 0.20.0 engine"' in said and "Crash or wrong answer: what decides" in said
    assert '"## The real vLLM 0.20.0 engine' in (DATA.parent / "notebooks" / "01_reproduce_ima.ipynb").read_text()
    crashed = str(reproduce.kernel_outcomes(kernel, "t", both_faces=False))
    assert "notwithstanding" not in crashed


# D5: the patched rows are named by a part of the name that they have ("unpatched" contains "patched" too).


def test_d5_patched_rows_named_by_their_name_part():
    table = _cell("01_reproduce_ima", "*Where each line comes from:*")
    assert "starts with `patched`" not in table and "has the part `, patched`" in table and "`unpatched`" in table


# D6: 02's missing positive control names notebook 01's live rerun and where it says how the stock engine went.


def test_d6_the_positive_control_names_notebook_01s_live_rerun():
    safety, safety_prov = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, cost_prov = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    _, control_provs = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    from flexfix.edition.tables.workarounds import workaround_table

    said = str(workarounds.without_plugin(workaround_table(safety, cost), "a", "b", safety_prov, control_provs))
    assert "notebook 01 reruns it live only when" in said and "positive control on the same GPU" in said
    assert '"Every request checked: stock vs patched"' in said
    assert _cell("01_reproduce_ima", "## Every request checked: stock vs patched")


# D7, D8, D9: 02 says what the patched-engine runs test, which status rows show the patch, and what BI= is.


def test_d7_d8_d9_02_says_what_is_tested_what_shows_the_patch_and_what_bi_means():
    engine = _cell("02_apply_flexfix", "Two routes, both with `VLLM_BATCH_INVARIANT=1`")
    assert "They show that the patched engine starts and completes its batches" in engine  # round 22, B1
    apply = _cell("02_apply_flexfix", "## Apply the patch")
    assert "`release_class` and `fixed_upstream` describe the installed release as shipped, not the patch" in apply
    every = [text(c) for c in cells("02_apply_flexfix") if "### Every request, on the patched engine" in text(c)]
    every = every[0] if len(every) == 1 else ""
    assert "`BI=` its `VLLM_BATCH_INVARIANT`" in every
    first = _cell("02_apply_flexfix", "## On an affected vLLM without the plugin")
    assert "the larger Llama of notebook 04" in first  # the variance model, defined where first used


# D10: stale cells are defined and tied to the misread table's column.


def test_d10_stale_cells_are_defined_and_tied_to_other_page():
    toy = [text(c) for c in cells("01_reproduce_ima") if text(c).startswith("**So the bug needs two things at once.**")]
    assert len(toy) == 1 and "an earlier step wrote there and this step did not overwrite" in toy[0]
    assert "counts under `other_page`" in toy[0]
    from flexfix.measure.outcome_cause import reads_table

    reads = reads_table([0], 48)
    said = str(cause_story.misread_cells(reads))
    assert "stale ones, `other_page` in the table above" in said
