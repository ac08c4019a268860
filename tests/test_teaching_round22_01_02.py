"""Round 22 reading of the published edition (4011fc3): the edition index, notebooks 01 and 02.

Each test fails on the sources as they were before its fix. The published edition under ``data/notebooks`` is
regenerated later by a GPU run, so where a test needs 01's outputs it replaces the cells whose wording changed with
what this code now prints for them."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat

from flexfix.edition import schemas
from flexfix.measure import record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
EDITION = DATA / "notebooks"
STAMP = re.compile(r"commit (\w{10})\w*, (\d{4}-\d\d-\d\dT[\d:]+\+00:00)")


def _cells(name: str) -> list[str]:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return [" ".join("".join(c["source"]).split()) for c in nb["cells"]]


def _cell(name: str, marker: str) -> str:
    found = [c for c in _cells(name) if marker in c]
    assert len(found) == 1, (marker, len(found))
    return found[0]


def _md(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return " ".join(" ".join("".join(c["source"]).split()) for c in nb["cells"] if c["cell_type"] == "markdown")


def _flat(text) -> str:
    return " ".join(str(text).split())


def _brief(device="cuda", engine=True, sanitizer=False) -> str:
    from flexfix.edition.narrative import headline

    return str(headline.recorded_brief(DATA, device, engine, *([sanitizer] if sanitizer else [])))


def _support() -> str:
    from flexfix.edition.narrative import graph_path

    runs, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    return str(graph_path.support(runs, DATA))


def _published_01(now: bool = True):
    """The published 01, its brief and its graph-path paragraph replaced by what this code prints now (``now``)."""
    nb = nbformat.read(EDITION / "01_reproduce_ima.ipynb", as_version=4)
    if not now:
        return nb
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        new = _brief() if "headline.recorded_brief(" in cell.source else None
        new = _support() if "graph_path.support(" in cell.source else new
        if new is not None:
            cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": new, "text/plain": new})]
    return nb


def _printed(nb, skip: str = "") -> str:
    from flexfix.edition.evidence import _outputs_text

    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if not (skip and skip in c.source)]
    return "\n".join(line for line in _outputs_text(nb).splitlines() if not line.startswith("this run:"))


# A1: the index counted 5 recordings for 01, which named 7 by GPU, commit and time (two in its brief, in a form the
# count missed); its count now reads every form 01 prints, and equals the number the brief states.


def test_a1_the_index_counts_every_recording_01_names():
    from flexfix.edition import evidence

    nb = _published_01()
    text = _printed(nb)
    found, lines = evidence.recordings(text)
    named = {m for m in STAMP.findall(text)}
    counted = {(c[:10], t) for _, c, t in found if t}
    assert named <= counted, named - counted
    said = re.search(r"it prints (\d+) recordings", _brief()).group(1)
    assert evidence.about(nb)[1].startswith(f"live, except {said} recorded results")
    # the short form of a sentence: each recording once, a line naming two counts as one line
    two = "(recorded on G, commit abc, 2026-11-21T00:00:00+00:00; recorded on G, commit def, 2026-11-22T00:00:00+00:00)"
    assert [r[1] for r in evidence.recordings(two)[0]] == ["abc", "def"] and evidence.recordings(two)[1] == 1
    # a machine whose name holds a comma, as a CPU's does
    cpu = "recorded on cpu (x86_64, 2 cores), commit abc, 2026-11-21T00:00:00+00:00"
    assert evidence.recordings(cpu)[0] == [("cpu (x86_64, 2 cores)", "abc", "2026-11-21T00:00:00+00:00")]


# A2: the brief left out the sanitizer recording and the patched every-request engines, both printed later.


def test_a2_the_brief_names_every_recording_01_prints():
    rest = _printed(_published_01(now=False), skip="headline.recorded_brief(")
    for device, engine, sanitizer in (("cuda", True, False), ("cpu", True, False), ("cuda", False, False)):
        brief = _brief(device, engine, sanitizer)
        for commit, time in STAMP.findall(rest):
            assert f"commit {commit}, {time}" in brief, (device, commit, time)
    # the patched every-request engines and the sanitizer each have their row
    brief = _brief()
    assert "compute-sanitizer" in brief and "patched `VLLM_BATCH_INVARIANT=1`" in brief
    _, sprov = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    assert sprov["date"] in brief
    # where this run reruns the sanitizer, the recording is not printed, and the brief leaves it out
    assert sprov["date"] not in _brief("cuda", True, True)
    # the brief's rows: one recording per named file, the count it states the files it names
    n = int(re.search(r"it prints (\d+) recordings", brief).group(1))
    assert n == len(set(STAMP.findall(brief)))
    assert "RUN_SANITIZER)" in _cell("01_reproduce_ima", "headline.recorded_brief(")


# A3: "one query block at a time" under max_num_seqs=16 contradicted the definition of a query block (16 query
# tokens: a prefill of one long prompt holds several); it is one query block per decode step, and only decode steps
# replay a FULL graph.


def _ways():
    from flexfix.edition.tables.workarounds import workaround_table

    safety, sprov = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    return workaround_table(safety, cost), sprov


def test_a3_max_num_seqs_16_keeps_one_query_block_per_decode_step():
    from flexfix.edition.narrative import workaround_control, workarounds

    ways, sprov = _ways()
    said = _flat(workarounds.without_plugin(ways, "a", "b", sprov, None, None))
    end = _flat(workaround_control.takeaway(sprov, None, []))
    for text in (said, end):
        assert "one query block at a time" not in text and "one query block was ever in flight" not in text
    assert "a decode step held one query block" in said and "for decode steps only" in said
    assert "no decode step held more than one query block, and only decode steps replay a FULL graph" in end


# B1: "on the plugin route, that the patch reached the engine" rested on the batch-invariance override alone; what
# the runs show of the copy on that route is now said (nothing: it is inferred from flexfix's code).


def test_b1_the_plugin_route_shows_the_override_and_infers_the_copy():
    said = _cell("02_apply_flexfix", "Two routes, both with `VLLM_BATCH_INVARIANT=1`")
    assert "that the patch reached the engine" not in said
    assert "so that flexfix's `vllm.general_plugins` entry point patches every engine and worker process" not in said
    assert "the patch's *second* change reached the process that runs the model" in said
    assert "That the *copy* was replaced in that process too, no output of these runs shows" in said
    assert "whose patched engines took the in-process route" in said
    # flexfix's code, as the paragraph says: apply() replaces the copy just before it overrides the answer
    import inspect

    from flexfix.integration import vllm_patch, vllm_plugin

    body = inspect.getsource(vllm_patch.apply)
    assert body.index("mod.copy_to_persistent = copy_to_persistent") < body.index(
        "mod.FlexAttentionBackend.supports_batch_invariance = classmethod(_supports_batch_invariance)"
    )
    assert "vllm_patch.apply(quiet=True)" in inspect.getsource(vllm_plugin._patch)
    from flexfix.measure import engine_sweep

    env = engine_sweep.EngineRun(model="tiny", batch_invariant=False, graphs="full").env()
    assert env.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"


# D11: why request 0 tests nothing of the fix was said three times in 02's engine section; now once, under the runs.


def test_d11_the_request_0_caveat_is_said_once():
    from flexfix.edition.narrative import workarounds

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    patched = engines[engines["scenario"].astype(str).str.startswith("patched")]
    first, again = _flat(workarounds.patched_batches(patched)), _flat(workarounds.patched_batches(patched, True))
    section = _cell("02_apply_flexfix", "Two routes, both with `VLLM_BATCH_INVARIANT=1`")
    texts = [section, first, again]
    assert sum(t.count("never misreads") for t in texts) == 1 and "never misreads" in first
    assert "under the 0.20.0 runs above" in again


# B2: the recorded engines' prompts and sampling were stated as fact; no recording keeps them: they are this code's.


def test_b2_prompts_and_sampling_are_said_to_be_this_codes():
    engine = _cell("01_reproduce_ima", "## The real vLLM 0.20.0 engine")
    assert "prompts of random tokens, sampled tokens" not in engine
    assert "is this code's (`flexfix.integration.engine`), not kept in the recordings" in engine
    for name, marker in (("01_reproduce_ima", "**Why the batches and engines differ.**"),
                         ("02_apply_flexfix", "### Every request, on the patched engine")):  # fmt: skip
        said = _cell(name, marker)
        assert "(seeded sampling)" not in said
        assert "seeded sampling: this code's, `flexfix.measure.engine_sweep`; the recordings do not keep them" in said
    # what the code does, as the notebooks now say it: random prompts, a seed per request; records without them
    import inspect

    from flexfix.integration import engine as eng
    from flexfix.measure import engine_sweep

    assert "temperature=" in inspect.getsource(eng._child) and "seed=1000 + i" in inspect.getsource(eng._child)
    assert 'sampling("seeded"' in inspect.getsource(engine_sweep._every_request)
    runs, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    assert not any("prompt" in c or "sampl" in c or "temperature" in c for c in runs.columns)
    every, _ = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    kept = {k for recs in every["records"] for r in recs if r.get("kind") == "every_request" for k in r}
    assert not any("prompt" in k or "sampl" in k for k in kept)


# D3: VLLM_ENABLE_V1_MULTIPROCESSING, one of the differences between (b) and (d), is explained where the scenarios
# are defined, before the paragraph that names it.


def test_d3_the_multiprocessing_setting_is_explained_with_the_scenarios():
    engine = _cell("01_reproduce_ima", "## The real vLLM 0.20.0 engine")
    said = "(`VLLM_ENABLE_V1_MULTIPROCESSING=0`): by default vLLM runs its engine core in a process of its own"
    assert said in engine
    cells = _cells("01_reproduce_ima")
    at = cells.index(engine)
    assert not any("VLLM_ENABLE_V1_MULTIPROCESSING" in c for c in cells[:at])


# D5: the pad-and-mapped-memory mechanism was restated at least eight times in 01; where a pad points is now said
# once (*Why before*, under the sanitizer's result) and what decides once (the section "Crash or wrong answer"); the
# introduction, the torch-only opening, the figures' captions and the takeaway point there or sum it up in a line.


def test_d5_the_pad_mechanism_is_said_once_and_pointed_to():
    nb = json.loads((ROOT / "notebooks" / "01_reproduce_ima.ipynb").read_text())
    md = [_flat("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "markdown"]
    where = [c for c in md if "KV head 0" in c or "KV head `0`" in c]
    assert len(where) == 2  # *Why before* says it; the section on what decides points back to it
    assert where[0].startswith("*Why before*") and "(*Why before*, in the sanitizer's section)" in where[1]
    mapped = [c for c in md if "mapped" in c and "pad" in c]
    assert len(mapped) <= 3, [c[:60] for c in mapped]  # what decides, the placement experiment, the takeaway
    intro = md[0]
    assert "given a pad" not in intro and "head 0 among them" not in intro
    torch_only = next(c for c in md if c.startswith("## Torch-only reproduction"))
    assert "`-1` pad" not in torch_only and '(section "Crash or wrong answer: what decides")' in torch_only
    windows = next(c for c in md if c.startswith("*How to read it:* query block 0 starts"))
    assert "no cell here points in front of the KV cache" not in windows


# D2: "frozen-launch analog" was used in the introduction and explained two hundred lines later.


def test_d2_the_frozen_launch_analog_is_explained_where_it_is_named():
    intro = _flat(_cells("01_reproduce_ima")[0])
    at = intro.index("**frozen-launch analog**")
    said = intro[at : at + 400]
    assert "it keeps the arguments a capture saw (each tensor's storage, offset and strides)" in said
    assert "at each replay runs the kernel again with them" in said


# D4: "tile" named both a query block and the kernel's launch tile; a query block is no longer called a tile, and the
# sanitizer's grid coordinate is the launch tile by name.


def test_d4_tile_names_only_the_launch_tile():
    intro = _flat(_cells("01_reproduce_ima")[0])
    assert "(a tile of 16 requests)" not in intro and "(16 consecutive requests of the step)" in intro
    from flexfix.edition.narrative import sanitizer

    said = _flat(sanitizer._grid("in block (2,0,1)"))
    assert "query tile" not in said and "launch tile" in said


# D8: the sanitizer's bullet was one sentence of about 150 words with nested parentheses; the fact a learner needs (a
# read in front of the cache, from a block after the first) now comes first, in sentences of their own.


def test_d8_the_sanitizer_bullet_is_in_short_sentences():
    from flexfix.edition.narrative.sanitizer import sanitizer_read

    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    said = str(sanitizer_read(sanitizer))
    bullet = next(_flat(b) for b in said.split("\n") if b.startswith("* `as_strided`"))
    sentences = [s for s in re.split(r"(?<=[.])\s+(?=[A-Z])", bullet) if s]
    assert max(len(s.split()) for s in sentences) < 60, [len(s.split()) for s in sentences]
    depth = max_depth = 0
    for ch in bullet:
        depth += (ch == "(") - (ch == ")")
        max_depth = max(max_depth, depth)
    assert max_depth == 1
    assert bullet.index("bytes *before*") < bullet.index("launch tile")


# D6: the first fault at 48 requests was stated four times in a row ("48 requests (fresh engine) and 48 requests (one
# engine, growing batches)", then in bold, then in each bullet); now once in the answer, once per way of counting.


def test_d6_the_first_fault_is_said_once_before_the_bullets():
    from flexfix.edition import tables
    from flexfix.edition.narrative import reproduce

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    table = tables.threshold_table(engines)
    said = str(reproduce.crash_threshold(table))
    first = int(table[table["outcome"] != "completed"]["requests"].min())
    prose = said.split("\n* ")[0]
    assert prose.count(f"{first} requests") == 1
    assert f"{first} requests (fresh engine) and {first} requests" not in said
    assert "**In the crash-threshold engines above" not in said


# D10: that the checks without the plugin hold no positive control was said in the verdict, again in the positive
# control's paragraph (with what the live control did, again), and again in the takeaway; the verdict says it, the
# paragraph says where each control comes from, the takeaway sums it up in a clause.


def test_d10_the_positive_control_caveat_is_said_once_in_full():
    from flexfix.edition.narrative import workaround_control, workarounds

    ways, sprov = _ways()
    every, provs = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    live = (every, {**provs[0], "device_name": sprov["device_name"]})
    verdict = _flat(workaround_control.verdict(ways, sprov, live))
    details = _flat(str(workarounds.without_plugin(ways, "a", "b", sprov, provs, live)).split("\n\n")[0])
    take = _flat(workaround_control.takeaway(sprov, live, provs))
    assert "no positive control in their own run" in verdict
    assert "these checks hold none of their own" not in details and "(the verdict above says what it did)" in details
    assert "differed from alone" in verdict and "requests come out otherwise than alone" not in details
    assert "That check had no positive control in its own run" not in take


# D12: the every-request verdict on the patched engines (192 requests) was said before the section's runs and again
# under the tables; the count is said once, under the tables, and the lead gives the verdict in a word.


def test_d12_the_patched_verdict_is_counted_once():
    from flexfix.edition.narrative import patched_lead, workarounds

    said = _flat(patched_lead.from_files(DATA, ROOT / "build" / "no-results", "cpu"))
    every, provs = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    from flexfix.edition import glossary, tables
    from flexfix.edition.tables.outcomes import every_request_dispatch
    from flexfix.measure import engine_sweep

    rows = tables.every_request_table(engine_sweep.request_rows(every))
    dispatch = glossary.decode_dispatch(every_request_dispatch(every, with_engine=True))
    total = int(rows[rows["engine"].str.endswith("patched")]["requests"].sum())
    under = _flat(workarounds.fix_on_every_request(rows, dispatch, "there", every))
    assert f"{total} requests in all" in under
    assert str(total) not in said and "answered every request exactly as alone" in said
    assert not re.search(r"commit \w{10}", said)


# D14: the fourteen patch checks were a table and then fourteen bullets restating its rows; each row now carries its
# meaning, and the sentence under the table sums them up.


def test_d14_the_patch_checks_mean_in_their_own_column():
    import pandas as pd

    from flexfix.edition.narrative import workarounds

    checks = pd.DataFrame({"check": list(workarounds._CYCLE), "value": [False, False] + [True] * 12})
    said = str(workarounds.patch_cycle(checks))
    assert "\n* " not in said and "What the rows of the table mean" not in said
    shown = workarounds.checks_table(checks)
    assert list(shown.columns) == ["value", "what it means"] and len(shown) == len(checks)
    cell = _cell("02_apply_flexfix", "pd.DataFrame(vllm_patch.check_cycle())")
    assert "display(workarounds.checks_table(checks))" in cell


# D13: the function apply() installs (flexfix's copy_to_persistent, with its checks) was never shown, and nothing shown
# exercised its refusals; its signature and docstring are printed after the diffs, and each refusal is tried.


def test_d13_the_installed_copy_and_its_refusals_are_shown():
    from flexfix.edition.tables.refusals import copy_refusals

    cell = _cell("02_apply_flexfix", "original, _ = vllm_patch.sources()")
    assert "inspect.getdoc(installed)" in cell and "installed = persistent.copy_to_persistent" in cell
    assert cell.rstrip().endswith("copy_refusals()")
    shown = copy_refusals()
    assert set(shown["raised"]) == {"ValueError"} and shown["buffer unchanged"].all()
    for word in ("dtype", "rank", "does not fit", "sparse", "requires grad", "several elements to one memory cell"):
        assert any(word in m for m in shown["message"]), word

    # vLLM 0.20.0's own copy (as_strided, as the diff shows it) accepts some of them: the refusals are flexfix's
    def as_strided_copy(dst, src):
        view = dst.as_strided(src.shape, src.stride())
        view.copy_(src)
        return view

    theirs = copy_refusals(as_strided_copy)
    assert (theirs["raised"] == "nothing").any()


# D7: "At which K" listed its five printouts as bullets before they appeared, and explained the largest-capture-size
# caveat there and the padding rule again after the table; now one sentence says what the cell shows, the rule is in
# the short answer, and the paragraph after the table keeps only what the table's PIECEWISE rows mean for the bug.


def test_d7_at_which_k_says_what_it_shows_once():
    cell = _cell("01_reproduce_ima", "## At which `K` vLLM captures its decode graphs")
    assert "The printouts, in the order they appear" not in cell
    assert cell.count("PIECEWISE") <= 3 and cell.count("`largest capture size`") == 1
    after = _cell("01_reproduce_ima", "So any later step whose longest sequence is longer than one page")
    assert "By the padding rule" not in after and "padded past `max_num_seqs`" not in after


# D9: much of 01's running text described the notebook's layout ("the sentence under the table says ...", "the
# paragraph under the placement table says ...", a tour of the later figures' colours); those signposts are gone.


def test_d9_fewer_signposts_in_01():
    md = _md("01_reproduce_ima")
    for gone in (
        "The sentence under the table says which this run got",
        "the recorded GPU run follows in the next section, after this run's figure",
        "the paragraph under the placement table says which placements have no control",
        "further down, the outcome grid colours outcomes",
        "**Where each answer is.**",
        "is said under the placement table",
        "the error figures above colour their points by copy instead",
        "is listed under the figure",
    ):
        assert gone not in md, gone
