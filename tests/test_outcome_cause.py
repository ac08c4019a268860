"""Crash or wrong answer (issue #26 item 2): what the misread cells hold (CPU), the cache placements, the child run,
the recorder's CLI, and the sentences against the recorded GPU runs (data/outcome_cause-cuda.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from flexfix.edition import results
from flexfix.edition.checks import DataError
from flexfix.edition.narrative import outcome_cause as story
from flexfix.edition.tables import outcome_cause as tables
from flexfix.measure import outcome_cause as experiment
from flexfix.measure.outcomes import json_child_argv, run_child
from flexfix.mechanism import cache_placement, misreads, paged
from flexfix.mechanism.kernel_repro import KernelScenario, run_kernel_scenario

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture(scope="module")
def reads():
    return experiment.reads_table([0, 1, 2])


# --- the misread cells (CPU, no kernel) ---


def test_the_misread_rows_hold_pages_and_pads_only(reads):
    strided = reads[(reads["copy"] == "as_strided") & (reads.step != "capture")]
    assert (strided.never_written == 0).all() and (strided.out_of_range == 0).all()
    assert (strided.pad > 0).any() and (strided.other_page > 0).all()
    assert (strided.cells_read == strided[list(misreads.KINDS)].sum(axis=1)).all()  # every cell sorted once
    assert set(strided.loc[strided.pad > 0, "front_bytes_read"]) == {paged.PAGE_SIZE * 64 * 2}  # bf16, head_dim 64
    assert (strided.missed > 0).all()


def test_the_capture_and_the_sliced_copy_read_their_own_pages(reads):
    right = reads[(reads["copy"] == "sliced") | (reads.step == "capture")]
    assert (right.own == right.cells_read).all() and (right.missed == 0).all() and (right.front_bytes_read == 0).all()


def test_one_query_block_reads_no_misread_row():
    rows = misreads.misread_steps(KernelScenario(batch=16))
    assert all(r["cells_read"] == 0 and r["front_bytes_read"] == 0 for r in rows)


def test_front_bytes_follow_the_cache_type():
    shape = paged.PagedShape()
    assert misreads.front_bytes(shape, torch.bfloat16) == 2048
    assert misreads.front_bytes(shape, torch.float32) == 4096


def test_a_cell_never_written_is_counted_as_such(monkeypatch):
    """A buffer whose cells the steps do not fill: the sentinel is seen, not taken for a page."""
    real = paged.build_kv_indices

    def short_rows(step):  # rows 1.. claim more cells than were written
        rows, counts = real(step)
        return rows, counts + torch.tensor([0] + [4000] * (len(counts) - 1), dtype=counts.dtype)

    monkeypatch.setattr(paged, "build_kv_indices", short_rows)
    rows = misreads.misread_steps(KernelScenario(copy="sliced"))
    assert rows[0]["never_written"] > 0


# --- placing the cache ---


def test_default_placement_is_the_cache_itself():
    t = torch.randn(2, 3)
    assert cache_placement.place(t, "default") is t


def test_guarded_placement_puts_mapped_zeros_in_front():
    t = torch.randn(1, 2, 32, 8)
    g = cache_placement.place(t, "guarded")
    assert torch.equal(g, t) and g.data_ptr() != t.data_ptr()
    assert g.storage_offset() * g.element_size() == cache_placement.GUARD_BYTES
    front = torch.empty(0, dtype=torch.uint8).set_(g.untyped_storage())[: cache_placement.GUARD_BYTES]
    assert int(front.count_nonzero()) == 0
    assert cache_placement.front_of(g, 2048)["front_mapped"] is None  # not asked on CPU


def test_fenced_placement_and_bad_names_are_refused_clearly():
    with pytest.raises(cache_placement.PlacementError, match="needs CUDA"):
        cache_placement.place(torch.randn(4), "fenced")
    with pytest.raises(ValueError, match="placement must be one of"):
        cache_placement.place(torch.randn(4), "elsewhere")
    with pytest.raises(ValueError, match="fenced placement needs device='cuda'"):
        KernelScenario(placement="fenced")
    with pytest.raises(ValueError, match="placement must be one of"):
        KernelScenario(placement="nowhere")
    with pytest.raises(ValueError, match="fenced placement needs device='cuda'"):
        KernelScenario(v_placement="fenced")
    with pytest.raises(cache_placement.PlacementError, match="needs a CUDA tensor"):
        cache_placement.read_front(torch.randn(4), 2048)


def test_a_guarded_cpu_scenario_gives_the_same_steps_as_the_default():
    """Placing the cache changes where it is, not what the scenario computes (CPU frozen launch)."""
    kw = dict(copy="sliced", batch=20, replay_lens=(60,), shape=paged.PagedShape(max_num_seqs=32, num_pages=512))
    seen = []
    default = run_kernel_scenario(KernelScenario(**kw))
    guarded = run_kernel_scenario(KernelScenario(placement="guarded", **kw), on_cache=lambda m, k, v: seen.append(m))
    assert [r["max_error"] for r in default] == [r["max_error"] for r in guarded]
    assert seen == ["placed", "captured"]


# --- the experiment's plan, prediction and child ---


def test_plan_runs_every_seed_and_the_controls_on_the_first():
    specs = experiment.plan([3, 4, 5])
    assert len(specs) == 3 * 3 + 2 + 2 + 2 + 1 + 1 + 2 + 1
    same = {s["placement"] for s in specs if s["placement"] == s["v_placement"] and not s["touch"] and s["batch"] == 48}
    assert same == {"default", "guarded", "fenced"}
    assert {(s["placement"], s["v_placement"]) for s in specs if s["placement"] != s["v_placement"]} == {
        ("guarded", "fenced"),
        ("fenced", "guarded"),
    }
    assert [s["seed"] for s in specs if s["copy"] == "sliced"] == [3, 4]


@pytest.mark.parametrize(
    "k, v, pads, expected",
    [
        (True, True, 5, "wrong_result"),
        (False, True, 5, "illegal_memory_access"),
        (True, False, 5, "illegal_memory_access"),
        (None, True, 5, "unknown"),
        (False, False, 0, "no_front_read"),
    ],
)
def test_prediction(k, v, pads, expected):
    assert experiment.predicted(k, v, pads) == expected


def test_the_child_reports_probes_and_steps():
    """The child on CPU (frozen analog, guarded cache): the probes come back as records, the steps too; the analog
    turns the pads' read in front of the cache into an IndexError whatever is there."""
    spec = {"copy": "as_strided", "placement": "guarded", "batch": 48, "seed": 0, "device": "cpu"}
    out = run_child(json_child_argv(experiment.MODULE, spec), timeout=240)
    assert out.status == "index_error", out
    row = experiment._row(spec, out, {("as_strided", 48, 0): 7})
    assert row["probe_moment"] == "captured" and row["front_k_mapped"] is None and row["predicted"] == "unknown"
    assert [r["step"] for r in row["records"]][:2] == ["capture", "replay 1"]
    assert row["launch"] == "frozen"


def test_cli_on_cpu_writes_the_reads(tmp_path, capsys):
    assert experiment.main(["--device", "cpu", "--out", str(tmp_path), "--seeds", "0"]) == 0
    table, prov = results.recorded(tmp_path, "outcome_cause_reads", "cpu", values=tables.READ_VALUES)
    assert prov["parameters"]["seeds"] == [0] and set(table["copy"]) == {"as_strided", "sliced"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0,-1"], "--seeds"),
        (["--workers", "0"], "--workers"),
        (["--timeout", "nan"], "--timeout"),
    ],
)
def test_cli_refuses_bad_input(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        experiment.main(["--out", str(tmp_path), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


# --- tables and sentences ---


def _runs(**status):
    rows = []
    for placement, outcome in status.items():
        for seed in (0, 1):
            mapped = placement != "fenced"
            rows.append(
                dict(
                    copy="as_strided",
                    placement=placement,
                    v_placement=placement,
                    touch=None,
                    touch_result=None,
                    batch=48,
                    seed=seed,
                    status=outcome,
                    front_k_mapped=mapped,
                    front_v_mapped=mapped,
                    predicted=experiment.predicted(mapped, mapped, 10),
                )
            )
    rows.append(
        dict(copy="sliced", placement="fenced", v_placement="fenced", touch=None, batch=48, seed=0, status="ok")
        | dict(front_k_mapped=False, front_v_mapped=False, predicted="no_front_read", touch_result=None)
    )
    return pd.DataFrame(rows)


def test_sentence_on_a_flip():
    runs = _runs(guarded="wrong_result", fenced="illegal_memory_access", default="wrong_result")
    text = story.outcome_cause(runs, "a test")
    assert "once a pad is read" in text and "2 runs on seeds 0 and 1: 2 with a silently wrong result" in text
    # a newcomer's B2: counts, not "every time"
    assert "a silently wrong answer in 2 of 2 runs" in text and "every time" not in text
    assert (
        "in front of K in 2 and in front of V in 2 of them; the outcome was the one those answers predict in 2 of 2"
        in text
    )
    assert "`sliced` copy, batch 48, cache `fenced`: 1 with correct at every step" in text
    table = tables.placement_table(runs)
    assert table.loc["as_strided, batch 48, cache fenced", "illegal_memory_access"] == 2
    assert table.loc["sliced, batch 48, cache fenced", tables.AS_PREDICTED] == "no pad read (control)"


def test_sentence_without_a_flip_says_so():
    runs = _runs(guarded="wrong_result", fenced="wrong_result")
    assert "did not flip every run" in story.outcome_cause(runs, "a test")


def test_sentences_refuse_what_they_cannot_state(reads):
    with pytest.raises(DataError):
        story.outcome_cause(_runs(default="wrong_result"), "a test")  # no guarded/fenced pair
    with pytest.raises(DataError):
        story.outcome_cause(_runs(guarded="ok", fenced="ok").drop(columns="predicted"), "a test")
    with pytest.raises(DataError):
        story.misread_cells(reads.drop(columns="pad"))


def test_misread_sentence_against_its_table(reads):
    text = story.misread_cells(reads)
    strided = reads[(reads["copy"] == "as_strided") & (reads.step != "capture")]
    assert f"read {int(strided.cells_read.sum())} cells" in text
    assert f"{int(strided.pad.sum())} `-1` pads" in text and "2,048 bytes in front" in text
    summary = tables.misread_summary(reads)
    assert int(summary.loc[("as_strided", "replay 1"), "pad"]) == int(strided[strided.step == "replay 1"].pad.sum())


def test_padless_replays_are_said_silent_only_where_they_read_nothing_outside_the_cache(reads):
    """Review 3 Honesty 6: "can only be silently wrong" only where the pad-free replays' never_written and
    out_of_range are 0."""
    strided = (reads["copy"] == "as_strided") & (reads.step != "capture")
    padless = reads[strided & (reads.pad == 0)]
    if padless.empty:  # make one replay read no pad, so the sentence about pad-free replays is said
        reads = reads.copy()
        first = reads[strided].index[0]
        reads.loc[first, ["own", "pad"]] = reads.loc[first, "own"] + reads.loc[first, "pad"], 0
        padless = reads.loc[[first]]
    assert "can only be silently wrong" in story.misread_cells(reads)
    odd = reads.copy()
    odd.loc[padless.index[0], "never_written"] = 3
    said = story.misread_cells(odd)
    assert "can only be silently wrong, whatever" not in said
    assert "read no pad, but 3 never-written cells and 0 values outside the cache" in said


def test_sanitizer_offset_is_read_from_its_lines():
    san = pd.DataFrame(
        {
            "sanitizer_lines": [
                [
                    "=== Access to 0x1 is out of bounds",
                    "=== and is 1,536 bytes before the nearest allocation at 0x7f00 of size 33,554,432 bytes",
                ]
            ]
        }
    )
    assert story.sanitizer_offset(san) == (1536, 33554432)
    assert story.sanitizer_offset(pd.DataFrame({"sanitizer_lines": [["nothing"]]})) is None


def test_recorded_reads_file_shape_is_json():
    """The reads table survives a round trip through the results writer (nested values, ints)."""
    table = experiment.reads_table([0])
    assert json.loads(table.to_json(orient="records"))[0]["copy"] == "as_strided"


def test_the_grid_shows_every_run_in_its_exported_colour():
    from matplotlib.colors import to_hex

    from flexfix.edition.plots.outcome_cause import OUTCOME_CAUSE_COLOURS, outcome_grid

    runs = _runs(guarded="wrong_result", fenced="illegal_memory_access", default="error")
    fig = outcome_grid(runs, "a test")
    (ax,) = fig.axes
    legend = ax.get_legend()
    shown = {t.get_text(): to_hex(h.get_facecolor()) for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert shown == {
        k: to_hex(OUTCOME_CAUSE_COLOURS[k][1]) for k in ("silently wrong", "illegal memory access", "other", "correct")
    }
    assert len(ax.patches) == len(runs)
    assert [t.get_text() for t in ax.texts].count("listed: K no, V no") == 3  # two fenced runs and the control
    with pytest.raises(ValueError):
        outcome_grid(runs.iloc[:0], "nothing")


def test_sentence_on_split_placements_and_direct_reads():
    runs = _runs(guarded="wrong_result", fenced="illegal_memory_access", default="wrong_result")
    extra = [
        dict(placement="guarded", v_placement="fenced", status="illegal_memory_access", touch=None, touch_result=None),
        dict(placement="default", v_placement="default", status="wrong_result", touch="v", touch_result="read"),
        dict(
            placement="fenced", v_placement="fenced", status="illegal_memory_access", touch="v", touch_result="faulted"
        ),
    ]
    common = dict(copy="as_strided", batch=48, seed=0, front_k_mapped=True, front_v_mapped=False, predicted="x")
    runs = pd.concat([runs, pd.DataFrame([common | e for e in extra])], ignore_index=True)
    runs.loc[runs.placement == "default", "front_v_mapped"] = False  # the driver lists nothing in front of V
    runs.loc[runs.placement == "default", "predicted"] = "illegal_memory_access"
    text = story.outcome_cause(runs, "a test")
    assert "K `guarded` and V `fenced`: 1 with an illegal memory access" in text
    assert "in front of V (caches `default`): 1 read" in text and "in front of V (caches `fenced`): 1 faulted" in text
    assert "predict in 0 of 2" in text and "where it listed none, something it does not list was mapped" in text
    table = tables.placement_table(runs)
    assert table.loc["as_strided, batch 48, cache default, then read in front of V", tables.OWN_READ] == "1 read"
    assert "as_strided, batch 48, K guarded, V fenced" in table.index


# --- the recorded GPU run (data/outcome_cause-cuda.json) ---


@pytest.fixture(scope="module")
def recorded():
    return results.recorded(DATA, "outcome_cause", columns=tables.RUN_COLUMNS)


def _group(runs, placement, v_placement=None, touch=None, copy="as_strided", batch=48):
    v_placement = v_placement or placement
    keep = (runs["copy"] == copy) & (runs["batch"] == batch) & (runs["placement"] == placement)
    keep &= runs["v_placement"] == v_placement
    keep &= runs["touch"].isna() if touch is None else runs["touch"] == touch
    return runs[keep]


def test_recorded_run_flips_the_outcome_on_demand(recorded):
    runs, prov = recorded
    assert prov["device_kind"] == "cuda" and prov["device_name"].startswith("NVIDIA H") and prov["git_commit"]
    guarded, fenced = _group(runs, "guarded"), _group(runs, "fenced")
    assert sorted(guarded.seed) == sorted(fenced.seed) == prov["parameters"]["seeds"]
    assert set(guarded.status) == {"wrong_result"} and set(fenced.status) == {"illegal_memory_access"}
    assert list(guarded.front_k_mapped) == list(guarded.front_v_mapped) == [True] * len(guarded)
    assert not any(fenced.front_k_mapped) and not any(fenced.front_v_mapped)
    # the same seed reads the same cells: the guarded runs' steps equal the default runs' errors step by step
    default = _group(runs, "default")
    for seed in guarded.seed:
        g = guarded[guarded.seed == seed].records.item()
        d = default[default.seed == seed].records.item()
        assert [s["K"] for s in g] == [s["K"] for s in d]


def test_recorded_splits_touches_and_controls(recorded):
    runs, _ = recorded
    assert set(_group(runs, "guarded", "fenced").status) == {"illegal_memory_access"}
    assert set(_group(runs, "fenced", "guarded").status) == {"illegal_memory_access"}
    assert set(_group(runs, "default", touch="v").touch_result) == {"read"}
    assert set(_group(runs, "fenced", touch="v").touch_result) == {"faulted"}
    assert set(_group(runs, "fenced", copy="sliced").status) == {"ok"}
    assert set(_group(runs, "fenced", batch=16).status) == {"ok"}
    assert (runs.loc[runs["copy"] == "sliced", "pads_read"] == 0).all()


def test_recorded_sentence_against_its_data(recorded):
    runs, prov = recorded
    text = story.outcome_cause(runs, tables_where(prov))
    default = _group(runs, "default")
    n = len(default)
    assert f"Caches `default` (PyTorch's caching allocator, as in every earlier run), {n} runs: " in text
    listed_v = int(sum(v is True for v in default.front_v_mapped))
    assert f"in front of V in {listed_v} of them" in text
    hits = int((default.status == default.predicted).sum())
    assert f"predict in {hits} of {n}" in text
    if set(_group(runs, "guarded").status) == {"wrong_result"} and set(_group(runs, "fenced").status) == {
        "illegal_memory_access"
    }:
        assert text.startswith("**What decides, once a pad is read: the memory in front of the KV cache.**")
    table = tables.placement_table(runs)
    assert int(table["runs"].sum()) == len(runs)
    # a run that faulted in its own read in front of a cache is counted apart from the replay's illegal memory accesses
    from flexfix.edition.tables.outcome_cause import OWN_READ_FAULT

    own = int((runs.touch_result == "faulted").sum())
    assert int(table["illegal_memory_access"].sum()) == int((runs.status == "illegal_memory_access").sum()) - own
    assert int(table[OWN_READ_FAULT].sum()) == own


def tables_where(prov):
    from flexfix.edition.tables import recorded_where

    return recorded_where(prov)


def test_data_readme_quotes_the_placements_as_recorded():
    """data/README.md's counts for the crash-or-wrong-answer placements are the recorded file's."""
    from pathlib import Path

    from flexfix.edition import results
    from flexfix.edition.tables import outcome_cause as ct

    root = Path(__file__).resolve().parent.parent
    runs, _ = results.recorded(root / "data", "outcome_cause", columns=ct.RUN_COLUMNS)
    t = ct.placement_table(runs)
    text = " ".join((root / "data" / "README.md").read_text().split())

    def row(name):
        return t.loc[f"as_strided, batch 48, {name}"]

    guarded, fenced, default = row("cache guarded"), row("cache fenced"), row("cache default")
    assert f"mapped bytes in front gave {guarded.wrong_result}/{guarded.runs} silently wrong results" in text
    assert f"unmapped bytes {fenced.illegal_memory_access}/{fenced.runs} illegal memory accesses" in text
    apart = [row("K guarded, V fenced"), row("K fenced, V guarded")]
    assert all(r.illegal_memory_access == r.runs for r in apart)
    assert f"either cache fenced alone faults ({apart[0].illegal_memory_access}/{apart[0].runs} each way)" in text
    assert f"all {default.runs} runs were wrong, not crashed" in text and default.wrong_result == default.runs
    read = row("cache default, then read in front of V")
    assert f"by a one-block kernel ({read.wrong_result}/{read.runs})" in text
