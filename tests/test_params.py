import pytest

from flexfix.edition import params


def test_unknown_device_is_named():
    with pytest.raises(ValueError, match="'gpu'"):
        params.resolve_device("gpu")


def test_cuda_without_a_gpu_says_so_and_runs_cpu(monkeypatch, capsys):
    monkeypatch.setattr(params, "cuda_available", lambda: False)
    assert params.resolve_device("cuda") == "cpu"
    assert "no usable GPU" in capsys.readouterr().out
    assert params.resolve_device("auto") == "cpu"


@pytest.mark.parametrize("value", [0, -3, 2.5, "4", True, None])
def test_impossible_sizes(value):
    with pytest.raises(ValueError, match="BATCH"):
        params.positive_int("BATCH", value)


def test_maximum_and_lists():
    with pytest.raises(ValueError, match="larger than the maximum 128"):
        params.positive_int("BATCH", 129, maximum=128)
    with pytest.raises(ValueError, match=r"SEEDS\[1\]"):
        params.positive_ints("SEEDS", [1, 0])
    with pytest.raises(ValueError, match="empty"):
        params.positive_ints("SEEDS", [])


def test_seeds_may_be_zero_but_not_negative():
    assert params.positive_ints("SEEDS", [0, 3], minimum=0) == [0, 3]
    with pytest.raises(ValueError, match=r"SEEDS\[1\] must be an integer >= 0, got -1"):
        params.positive_ints("SEEDS", [0, -1], minimum=0)


def test_papermill_reads_every_parameters_cell_without_a_warning(caplog):
    """papermill's parameter parser (used by `papermill --help-notebook` and its inspection) must read every line of
    each notebook's parameters cell: a comment holding `NAME=value` made it log "Unable to parse line" on every run."""
    import logging
    from pathlib import Path

    import nbformat
    from papermill.translators import PythonTranslator

    for path in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")):
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        with caplog.at_level(logging.WARNING, logger="papermill"):
            caplog.clear()
            names = [p.name for p in PythonTranslator.inspect(cell)]
        assert not [r.getMessage() for r in caplog.records], path.name
        assert "DEVICE" in names and "RESULTS_DIR" in names, path.name
