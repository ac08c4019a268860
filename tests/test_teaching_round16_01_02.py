"""Teaching round 16, notebooks 01 and 02: a newcomer's reading of the published GPU edition (findings A1, B1, the
C note on figure 26, D2, D3, D6, D7, D9, D10 of r0102). Each test ties a sentence, table or figure to its data."""

import copy

import matplotlib
from test_teaching_01_03 import DATA, cells, text
from test_teaching_round15_01_02 import _code, _md

from flexfix.edition import schemas
from flexfix.measure import record

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _every():
    return schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)


# A1: the glossary tells the BlockMask's query block from the Triton kernel's launch tile BLOCK_M.


def test_a1_query_block_is_not_the_kernel_tile_block_m():
    from flexfix.edition import glossary
    from flexfix.edition.narrative.sanitizer import sanitizer_read
    from flexfix.mechanism import paged

    entry = " ".join(glossary.TERMS["query block"].split())
    assert f"`BLOCK_SIZE=({paged.Q_BLOCK}, {paged.PAGE_SIZE})`" in entry
    assert "flex's `BLOCK_M`" not in entry  # no longer named as the same thing
    assert "Not the Triton kernel's launch tile `BLOCK_M`" in entry and "do not record" in entry
    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    said = str(sanitizer_read(sanitizer))
    assert "A launch tile holds `BLOCK_M` queries, which this run does not record (glossary)" in said  # round 22
    assert "a tile of the attention kernel's work" not in _md("01_reproduce_ima")


# B1: each bullet of the brief names its recordings' machine, commit and date, from the files it counts.


def test_b1_the_brief_names_each_recordings_provenance():
    from flexfix.edition.narrative import headline
    from flexfix.edition.tables import outcome_cause as cause_tables

    for device in ("cpu", "cuda"):
        brief = str(headline.recorded_brief(DATA, device, True))
        # round 22, D1: one table row per experiment (torch-only, sanitizer, placements, engine, without full
        # graphs, every request), each naming its files
        rows = [r for r in brief.split("\n") if r.startswith("| ") and not r.startswith("| experiment")]
        assert len(rows) == 6
        _, kprov = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
        _, cprov = cause_tables.recorded(DATA)
        every, eprovs = _every()
        engines, gprovs = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
        for row, provs in ((rows[0], [kprov]), (rows[2], [cprov])):
            for p in provs:
                assert f"{p['device_name']}, commit {str(p['git_commit'])[:10]}, {p['date']}" in row
        # the engine row: on a GPU run that repeats the engines, the files holding scenarios (b) and (d), and only
        # those; without one, every engine file, as the engine section then shows them all
        used = set(engines[engines["scenario"].isin(["b", "d"])]["source"])
        for name, p in zip(record.RECORDED_ENGINE_TABLES, gprovs, strict=True):
            stamp = f"commit {str(p['git_commit'])[:10]}, {p['date']}"
            assert (stamp in rows[3]) == (name in used or device == "cpu"), name
        for p in eprovs:
            assert f"commit {str(p['git_commit'])[:10]}, {p['date']}" in rows[5]


def test_b1_recorded_from_names_each_distinct_file():
    from flexfix.edition.tables.provenance import recorded_from

    a = {"device_name": "CPU box", "git_commit": "abcdef0123456789", "date": "D1"}
    b = {**a, "git_commit": "0123456789abcdef", "date": "D2"}
    # round 22, A1: each file in the form the edition index counts, `recorded on`
    assert recorded_from(a) == "recorded on CPU box, commit abcdef0123, D1"
    assert recorded_from([a, a]) == "recorded on CPU box, commit abcdef0123, D1"
    both = "recorded on CPU box, commit abcdef0123, D1; recorded on CPU box, commit 0123456789, D2"
    assert recorded_from([a, b]) == both


# C: the ring of a silently wrong step is hollow and wider than the point, so the copy's marker shows inside it.


def test_c_rings_are_hollow_and_wider_than_the_point():
    from matplotlib.colors import to_rgba

    from flexfix.edition import plots
    from flexfix.edition.tables import outcome_cause as cause_tables

    runs, _ = cause_tables.recorded(DATA)
    arm = runs[(runs["placement"] == "default") & (runs["v_placement"] == "default") & runs["touch"].isna()]
    fig = plots.replay_errors(arm[["copy", "batch", "seed", "device", "status", "records"]], "t")
    ax = fig.axes[1]
    rings = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("silently wrong answer (")]
    points = [ln for ln in ax.get_lines() if ln.get_marker() in ("o", "s") and ln not in rings and len(ln.get_xdata())]
    assert rings and points
    assert to_rgba(rings[0].get_markerfacecolor())[3] == 0  # hollow
    assert rings[0].get_markersize() - rings[0].get_markeredgewidth() > max(p.get_markersize() for p in points)
    assert "hollow ring round the run's own point" in rings[0].get_label()
    plt.close(fig)


# D3: one label per run: the GPU's name, never the device kind "cuda".


def test_d3_this_run_is_named_by_its_machine():
    from flexfix.edition.narrative.outcome_cause import _machine

    for stem in ("01_reproduce_ima", "02_apply_flexfix"):
        assert 'f"this run ({device})"' not in _code(stem)
    assert _machine("cpu") == "CPU"
    import torch

    assert _machine("cuda") == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "GPU")


# D6: K at capture, with its chain in one sentence.


def test_d6_k_at_capture_says_why():
    from flexfix.edition import glossary
    from flexfix.edition.narrative import graph_path

    line = graph_path.k_at_capture_line()
    assert line.startswith(f"K at capture: {glossary.k_at_capture()} (")
    assert "uniform_decode_query_len = 1" in line and "1 page per request" in line
    assert "graph_path.k_at_capture_line()" in _code("01_reproduce_ima")


# D7: 01's introduction defines stock and patched before the patched engines appear.


def test_d7_patched_is_defined_in_the_intro():
    intro = " ".join(text(cells("01_reproduce_ima")[0]).split())
    assert "*patched* is vLLM 0.20.0 with flexfix's patch, the two changes of that PR" in intro  # round 20, A3
    assert "*stock* is vLLM 0.20.0 as shipped" in intro


# D9: 02's section "The engine, patched" opens with where the evidence is and its verdict, counted from the files.


def _with_differ(every):
    every = every.copy()
    i = next(i for i, e in enumerate(every["engine"]) if "stock" not in str(e))
    recs = copy.deepcopy(every.at[i, "records"])
    rec = next(r for r in recs if r.get("kind") == "every_request")
    rec["tokens_differ"] = [1, 20]
    every.at[i, "records"] = recs
    return every


def test_d9_the_engine_section_opens_with_the_verdict_both_ways():
    from flexfix.edition.narrative import patched_lead
    from flexfix.edition.narrative.workaround_control import _batches, _differ

    every, provs = _every()
    patched = every[~every["engine"].astype(str).str.contains("stock")]
    assert sum(_differ(r) for run in patched.itertuples() for r in _batches(run)) == 0
    # round 22, D12: the verdict in a word; the counts are said once, under the every-request tables
    ok = str(patched_lead.lead(every))
    assert "answered every request exactly as alone" in ok and "did **not**" not in ok
    bad = str(patched_lead.lead(_with_differ(every)))
    assert "did **not** answer every request as alone" in bad
    # the live rerun is named where there is one
    live = (every.reset_index(drop=True), {**provs[0], "device_name": "NVIDIA H200"})
    assert "live rerun of notebook 01 (NVIDIA H200)" in str(patched_lead.lead(every, live))
    # the cross-reference: the subsection it names comes after the lead, under the section it opens
    src = [text(c) for c in cells("02_apply_flexfix")]
    at = next(i for i, s in enumerate(src) if "patched_lead.from_files(" in s)
    assert src[at - 1].strip() == "## The engine, patched"
    sub = next(i for i, s in enumerate(src) if "### Every request, on the patched engine" in s)
    assert sub > at and not any(s.startswith("## ") for s in src[at + 1 : sub])


# D10: 02 says its quoted date is the results file's write time, and 01 says its first line is the start time.


def test_d10_the_two_times_are_labelled():
    from flexfix.edition.narrative import workarounds

    every, provs = _every()
    prov = {**provs[0], "device_name": "NVIDIA H200"}
    said = workarounds.live_control_said(every, prov)
    assert f"written {prov['date']}, after the start time notebook 01's first line prints" in said
    intro = " ".join(text(cells("01_reproduce_ima")[0]).split())
    assert "printed under the parameters (`this run: ...`) ends with the time this notebook *started*" in intro
    assert "is when that file was *written*" in intro
    src = [text(c) for c in cells("01_reproduce_ima")]
    assert src[1].startswith("DEVICE = ") and "results.run_header(device, globals())" in src[2]


# D2: fewer sentences that point at the notebook itself.


def test_d2_self_pointing_sentences_are_gone():
    from flexfix.edition.narrative import cause_lead
    from flexfix.edition.tables import outcome_cause as cause_tables

    md = _md("01_reproduce_ima")
    for gone in (
        "The paragraph above the figure says what this run saw",
        "the line above its table names it and says when a step counts as wrong",
        "the sentence under its table says which this run got",
    ):
        assert gone not in md
    runs, _ = cause_tables.recorded(DATA)
    assert cause_lead.answer(runs, "this run (NVIDIA H200)").data.startswith("**The answer, this run (NVIDIA H200):**")
