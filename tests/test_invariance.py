"""Kernel-level batch invariance: the needle, the sweep on CPU, and crashes as cell values."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from flexfix.measure import invariance as inv
from flexfix.measure.outcomes import Outcome
from flexfix.mechanism import paged

ROOT = Path(__file__).resolve().parents[1]

SW = inv.SweepShape(
    paged.PagedShape(max_num_seqs=48, max_model_len=256, num_pages=1024), needle_len=120, capture_len=40
)


def test_the_needle_is_the_same_request_in_every_batch():
    alone = inv.needle_step(SW, 1, "first", device="cpu", dtype=torch.float32)
    for batch in (2, 17, 48):
        for position in inv.POSITIONS:
            step = inv.needle_step(SW, batch, position, device="cpu", dtype=torch.float32)
            at = inv.needle_index(batch, position)
            assert int(step.seq_lens[at]) == SW.needle_len and int(step.seq_lens.max()) == SW.needle_len
            assert torch.equal(step.block_table[at, :8], alone.block_table[0, :8])
            assert torch.equal(step.query[0, :, at], alone.query[0, :, 0])
            others = step.block_table[torch.arange(batch) != at]
            assert not set(others[others > 0].tolist()) & set(alone.block_table[0].tolist())
            assert step.width == alone.width  # K is the needle's: only the batch changes


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(needle_len=2000), "needle_len"),
        (dict(capture_len=113), "another K"),
        (dict(paged=paged.PagedShape(max_num_seqs=48, max_model_len=256, num_pages=100)), "pages"),
    ],
)
def test_impossible_sweep_shapes_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        inv.SweepShape(**{**dict(paged=SW.paged, needle_len=120, capture_len=40), **bad})


@pytest.mark.parametrize("bad", [dict(kernel="cudnn"), dict(options="fast"), dict(launch="lazy"), dict(copy="memcpy")])
def test_unknown_configuration_values_are_refused(bad):
    with pytest.raises(ValueError):
        inv.KernelConfig(**bad)


def test_parse_configs():
    assert inv.parse_configs("flex:vllm:graph:as_strided,analog_page:vllm:frozen:sliced") == [
        inv.KernelConfig("flex", "vllm", "graph", "as_strided"),
        inv.KernelConfig("analog_page", "vllm", "frozen", "sliced"),
    ]
    with pytest.raises(ValueError, match="KERNEL:OPTIONS"):
        inv.parse_configs("flex:vllm")


def test_sweep_rejects_a_batch_the_buffers_cannot_hold():
    with pytest.raises(ValueError, match="max_num_seqs"):
        inv.kernel_sweep(inv.cpu_configs()[:1], SW, "cpu", batches=[64], progress=False)


@pytest.fixture(scope="module")
def cpu_sweep():
    return inv.kernel_sweep(inv.cpu_configs(), SW, "cpu", batches=[1, 2, 15, 16, 17, 32, 48], progress=False)


def test_schema(cpu_sweep):
    assert list(cpu_sweep.columns) == inv.KERNEL_COLUMNS
    assert len(cpu_sweep) == len(inv.cpu_configs()) * 7 * 3  # every cell present, crashes included


def test_page_by_page_kernel_is_bitwise_invariant_and_the_row_softmax_is_not(cpu_sweep):
    by = cpu_sweep.groupby("config")
    for cfg in inv.cpu_configs():
        if cfg.kernel == "analog_page" and not (cfg.launch == "frozen" and cfg.copy == "as_strided"):
            cells = by.get_group(cfg.name)
            assert (cells.outcome == "ok").all() and cells.bitwise_equal.all(), cfg.name
    row = by.get_group("analog, row softmax, eager, sliced")
    assert (row.outcome == "ok").all() and not row.bitwise_equal.all()
    assert row[row.batch == 1].bitwise_equal.all()
    assert row.max_abs_diff.max() < 1e-5  # rounding, not a wrong answer


def test_frozen_as_strided_breaks_only_past_the_first_query_block(cpu_sweep):
    cells = cpu_sweep[cpu_sweep.config == "analog, page-by-page softmax, frozen, as_strided"]
    assert (cells[cells.batch <= 16].outcome == "ok").all()
    # A needle in query block 0 is read right, but the launch can still fault on a later block.
    assert set(cells[cells.needle_query_block == 0].outcome) <= {"ok", "index_error"}
    later = cells[cells.needle_query_block >= 1]
    assert len(later) and set(later.outcome) <= {"index_error", "wrong_result"}
    verdict = inv.verdicts(cpu_sweep)["verdict"]
    assert verdict["analog, page-by-page softmax, frozen, as_strided"] == "crashes"
    assert verdict["analog, page-by-page softmax, frozen, sliced"] == "invariant"


def test_a_crashed_child_is_a_cell_value_and_the_sweep_resumes(monkeypatch):
    cfg = inv.KernelConfig("analog_page", "vllm", "frozen", "sliced")
    calls = []

    def fake_child(argv, timeout, **kw):
        spec = __import__("json").loads(argv[-1])
        cells = spec["cells"]
        calls.append(len(cells))

        def cell(b, p):
            return {
                **inv.cell_keys(cfg, SW, "cpu", b, p),
                "outcome": "ok",
                "bitwise_equal": True,
                "max_abs_diff": 0.0,
                "max_error_vs_reference": 0.0,
                "detail": "",
            }

        if len(calls) == 1:  # measures two cells, then dies on the third
            return Outcome(
                "illegal_memory_access",
                "CUDA error: an illegal memory access was encountered",
                records=[{"ready": "x"}, cell(*cells[0]), cell(*cells[1])],
            )
        return Outcome("ok", records=[{"ready": "x"}, *(cell(*c) for c in cells)])

    monkeypatch.setattr(inv, "run_child", fake_child)
    table = inv.kernel_sweep([cfg], SW, "cpu", batches=[1, 17], progress=False)
    assert calls == [6, 3]
    assert list(table.outcome) == ["ok", "ok", "illegal_memory_access", "ok", "ok", "ok"]
    assert table.loc[2, ["batch", "position"]].tolist() == [1, "last"]


def test_a_child_that_dies_before_its_first_cell_is_not_restarted_for_each_cell(monkeypatch):
    calls = []
    monkeypatch.setattr(inv, "run_child", lambda argv, timeout, **kw: calls.append(1) or Outcome("error", "boom"))
    table = inv.kernel_sweep(inv.cpu_configs()[:1], SW, "cpu", batches=[1, 2], progress=False)
    assert calls == [1] and (table.outcome == "error").all() and len(table) == 6
    assert table.detail.str.contains("before the first cell").all()


def test_parallel_units_give_the_same_table_in_the_same_order():
    configs = inv.cpu_configs()[2:4]
    one = inv.kernel_sweep(configs, SW, "cpu", batches=[1, 17], progress=False)
    two = inv.kernel_sweep(configs, SW, "cpu", batches=[1, 17], workers=3, progress=False)
    pd.testing.assert_frame_equal(one, two)


def test_parallel_units_split_only_the_configurations_that_may_crash():
    configs = inv.gpu_configs()
    units = inv._units(configs, [1, 17, 48], ["first", "last"], "cuda")
    by_config = {}
    for cfg, cells in units:
        by_config.setdefault(cfg.name, []).append(cells)
    for cfg in configs:
        parts = by_config[cfg.name]
        if inv.may_crash(cfg, "cuda"):  # one child per batch size: a crash costs one batch size's cells
            assert [sorted({b for b, _ in cells}) for cells in parts] == [[1], [17], [48]]
        else:  # one child, one compile, for every cell of the configuration
            assert len(parts) == 1 and len(parts[0]) == 6
    assert [len(cells) for _, cells in units] == sorted((len(cells) for _, cells in units), reverse=True)
    assert [c.name for c in configs if inv.may_crash(c, "cuda")] == [
        f"flex, {o} options, graph, as_strided" for o in ("pytorch", "vllm", "batch_invariant")
    ]
    # On CPU the frozen launch's misread is an IndexError in the child: nothing dies, nothing is split.
    cpu = inv._units(inv.cpu_configs(), [1, 17, 48], ["first", "last"], "cpu")
    assert len(cpu) == len(inv.cpu_configs()) and all(len(cells) == 6 for _, cells in cpu)


# Teaching round 4: the labels and tables a newcomer read in the published edition.


def _recorded(names, schema):
    from flexfix.edition import schemas

    return schemas.recorded(ROOT / "data", names, schema)[0]


def test_engine_label_says_patched_or_stock():
    """6: the label hid whether the engine ran with flexfix's patch."""
    from flexfix.edition.tables import engine_label

    row = {"model": "tiny", "batch_invariant": True, "graphs": "full", "patched": True}
    assert engine_label(row) == "tiny, BI=1, full, patched"
    assert engine_label({**row, "patched": False, "batch_invariant": False}) == "tiny, BI=0, full, stock"


def test_a_configuration_recorded_twice_gets_a_verdict_row_per_recording():
    """4: the verdict row of ``flex, batch_invariant options, graph, as_strided`` added up two recordings."""
    from flexfix.edition import schemas
    from flexfix.edition.narrative import invariance as story
    from flexfix.edition.tables import kernel_grid
    from flexfix.edition.tables.invariance import kernel_verdicts
    from flexfix.measure import record

    table = _recorded(record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    config = "flex, batch_invariant options, graph, as_strided"
    verdicts = kernel_verdicts(table)
    rows = verdicts.loc[[config]]
    assert list(rows["recording"]) == ["kernel_invariance (batch 1-16)", "kernel_invariance_part2 (batch 17-128)"]
    assert list(rows["cells"]) == [21, 21] and list(rows["crashed"]) == [0, 21]
    for source, part in table.groupby("source"):  # every number of a row comes from its one recording
        mine = verdicts[verdicts["recording"].str.split(" ").str[0] == source]
        assert mine["cells"].sum() == len(part)
    assert (verdicts.drop(index=config)["recording"] == "kernel_invariance").all()
    grid, notes = kernel_grid(table)
    assert f"{config}\n(batch 1-16: kernel_invariance; 17-128: kernel_invariance_part2)" in grid.index
    said = str(story.kernel_sweep(table, "the recorded runs"))
    assert "1 to 16 requests from `kernel_invariance`; 17 to 128 requests from `kernel_invariance_part2`" in said
    one = table[table["source"] == "kernel_invariance"]  # one recording: nothing to say, one row a configuration
    assert "Two recordings" not in str(story.kernel_sweep(one, "x")) and kernel_verdicts(one).index.is_unique


def test_the_engine_story_keeps_run_to_run_differences_apart_from_batch_variance():
    """5: "not batch-invariant" mixed the needle alone a second time (N = 1, run to run) with other batch sizes."""
    from flexfix.edition import schemas
    from flexfix.edition.narrative import invariance as story
    from flexfix.measure import engine_sweep, record

    needle = engine_sweep.invariance_rows(_recorded(record.RECORDED_SWEEP_TABLES, schemas.ENGINE_SWEEPS))
    said = str(story.engine_sweep(needle, "the recorded runs"))
    run_to_run = next(p for p in said.split("\n\n") if p.startswith("*Run to run*"))
    batch = next(p for p in said.split("\n\n") if p.startswith("*With the batch*"))
    assert "variance, BI=0, full graphs (greedy)" in run_to_run and "variance, BI=0, eager (greedy)" in run_to_run
    assert "seeded" not in run_to_run and "greedy" not in batch
    assert "variance, BI=0, full graphs (seeded) first at 4 requests" in batch
    assert "variance, BI=0, eager (seeded) first at 8 requests" in batch
    for (engine, sampling), rows in needle.groupby(["engine", "sampling"]):
        alone = rows[rows["requests"] == 1].iloc[0]
        if f"{engine.replace('eager graphs', 'eager')} ({sampling})" in batch:
            assert alone["logprobs_bitwise_equal"] and alone["tokens_equal"]
        if f"{engine.replace('eager graphs', 'eager')} ({sampling})" in run_to_run:
            assert not alone["logprobs_bitwise_equal"]
