"""Round 19 reading of the published edition (c731a12): the README, notebooks 01 and 02."""

from __future__ import annotations

import re
from pathlib import Path

from flexfix.edition import results

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _flat(path: Path) -> str:
    return " ".join(path.read_text().split())


README = _flat(ROOT / "README.md")


def _section(heading: str) -> str:
    return README.split(f"## {heading}", 1)[1].split(" ## ", 1)[0]


def test_a1_the_guard_cost_is_not_bounded_below_2_percent_where_the_runs_drifted_more():
    """A1: "Its cost is below 2%" while notebook 07 says the tokens/s ratios cannot tell a few percent from drift."""
    from flexfix.edition.tables import guard as tg

    view = tg.guard_cost(results.read_results(DATA / "guard_cost-cuda.json")[0])
    guarding = _section("Guarding a backend")
    assert "below 2%" not in guarding and "within 2%" not in README
    shares = view["checking, % of wall time"]
    assert f"checks took about {shares.median():.1f}% of the engine's time" in guarding
    drifted = ((view["slowest / fastest repetition"] - 1) > (1 - view["on / off"])).all()
    assert drifted, "the data no longer drift more than the difference: the README's sentence must change"
    assert "differed by less than the same work drifted from one repetition to the next" in guarding
    assert "notebook 07, *What it costs*" in guarding


def test_a2_the_patched_engine_is_bitwise_equal_only_with_batch_invariance_on():
    """A2: "the patched engine is bitwise equal alone and in the batch", unconditionally; 06's patched_bi0 differed."""
    from flexfix.edition.tables import serving

    served, _ = results.read_results(DATA / "serve-cuda.json")
    bi0 = serving.differences(served)
    assert (bi0.scenario == "patched_bi0").sum() > 0  # the condition matters
    assert "the patched engine is bitwise equal alone" not in README
    assert "the patched engine with `VLLM_BATCH_INVARIANT=1` is bitwise equal alone and in the batch" in README
    assert "`patched_bi0` server answered batched requests otherwise than alone" in README


def test_b1_b2_the_speed_comparisons_say_they_are_recorded_outside_the_notebooks_and_where():
    """B1/B2: backend and copy speeds stated as if the edition showed them; now the files, GPU and commits."""
    from flexfix.edition.tables.backends import recorded_runs

    using = _section("Using the patched backend")
    assert "recorded outside the notebooks: no notebook shows it" in using
    for path in sorted(DATA.glob("backend_speed*-cuda.json")):
        prov = results.read_results(path)[1]
        assert f"[`data/{path.name}`](data/{path.name})" in using, path.name
        assert prov["git_commit"][:7] in using and prov["device_name"] in using
    assert "at flexfix commits " + ", ".join(list(recorded_runs(DATA))[:-1]) in using
    copies, prov = results.read_results(DATA / "copy_speed-cuda.json")
    said = f"took {copies.ratio.min():.2f}-{copies.ratio.max():.2f}x vLLM 0.21.0's slice copy per call"
    assert said in using
    assert f"on an {prov['device_name']} at commit {prov['git_commit'][:7]}" in using
    assert "[`data/copy_speed-cuda.json`](data/copy_speed-cuda.json)" in using
    assert "also recorded outside the notebooks" in using


def test_b3_the_readme_states_no_suite_number_without_where_it_was_counted():
    """B3: 617/192/1174 damaged copies, "about five minutes", a durations list of 032a3e7 in the README: the counts
    (which had moved on: 736 at dd2a467) and the timings now live in tests/README.md with their commits."""
    reliability, development = _section("Reliability"), _section("Development")
    for stale in ("617", "1174", "192 of them", "silently wrong 0", "about five minutes", "--durations", "(4 s"):
        assert stale not in reliability + development, stale
    assert "[`tests/README.md`](tests/README.md#the-adversarial-suite)" in reliability
    assert "[`tests/README.md`](tests/README.md#how-long-the-suite-takes)" in development
    assert "the `max_examples` of `tests/test_persistent.py`" in reliability
    source = (ROOT / "tests" / "test_persistent.py").read_text()
    for n in re.findall(r"up to (\d+) (?:cases|of a source)", reliability):
        assert f"max_examples={n}," in source, n
    tests_readme = _flat(ROOT / "tests" / "README.md")
    assert "counted at commit dd2a467" in tests_readme and "736 in all" in tests_readme
    assert "The slowest tests at 032a3e7" in tests_readme and "waited 34 s" in tests_readme


def test_b4_the_guard_is_claimed_on_the_releases_it_ran_on():
    """B4: "on any vLLM from 0.20 to 0.26"; notebook 07 runs it on 0.20.0, 0.20.2 and 0.26.0."""
    ran = set()
    for path in DATA.glob("guard*-cuda.json"):
        ran.add(results.read_results(path)[1]["vllm"])
    assert ran == {"0.20.0", "0.20.2", "0.26.0"}, ran
    assert "0.20 to 0.26" not in README and "0.20-0.26" not in README
    assert "It was run on vLLM 0.20.0, 0.20.2 and 0.26.0 (notebook 07" in README
    assert "(run on vLLM 0.20.0, 0.20.2 and 0.26.0; the releases between were not run)" in README


def test_d8_the_readme_says_once_what_flexfix_status_classifies():
    affected = _section("Is my vLLM affected?")
    assert affected.count("`flexfix status` classifies") == 2  # the table's last row, then the sentence
    assert "says which class the vLLM you have installed is in" not in affected
