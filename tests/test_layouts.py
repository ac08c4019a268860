import pytest

from flexfix.mechanism import layouts
from flexfix.mechanism.persistent import copy_to_persistent, copy_to_persistent_as_strided


def table(k_capture, k_replay, g=3):
    lays = [
        layouts.stride_layout(c, n, g=g, g_max=4, w_max=64, k_capture=k_capture, k_replay=k_replay)
        for c, n in ((copy_to_persistent_as_strided, "as_strided"), (copy_to_persistent, "sliced"))
    ]
    return layouts.layout_table(lays).set_index(["copy", "row"])


def test_only_rows_after_the_first_are_misread_by_as_strided():
    t = table(32, 48)
    assert t.loc[("as_strided", 0), "misread"] == 0
    assert t.loc[("as_strided", 1), "misread"] > 0 and t.loc[("as_strided", 2), "misread"] > 0
    assert (t.loc["sliced", "misread"] == 0).all() and (t.loc["sliced", "never_written"] == 0).all()


def test_a_narrower_replay_reads_cells_nobody_wrote_this_step():
    t = table(48, 16)
    assert t.loc[("as_strided", 1), "never_written"] == 16
    assert t.loc[("as_strided", 0), "never_written"] == 0


def test_same_width_means_no_misread():
    assert (table(32, 32)["misread"] == 0).all()


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="K_replay=80"):
        layouts.stride_layout(copy_to_persistent, "x", g=1, g_max=2, w_max=64, k_capture=16, k_replay=80)
    with pytest.raises(ValueError, match="G=3"):
        layouts.stride_layout(copy_to_persistent, "x", g=3, g_max=2, w_max=64, k_capture=16, k_replay=16)


def test_figures_render_themselves_as_png_under_any_backend():
    """Executed notebooks must carry the pictures: a returned Figure has a PNG repr even with agg."""
    import pandas as pd

    from flexfix.edition import plots

    table = pd.DataFrame({"batch": [1, 2, 1, 2], "context": [8, 8, 16, 16], "ratio": [1.0, 1.2, 1.1, 1.3]})
    fig = plots.ratio_lines(table, "batch", "ratio", "context", "t", "y")
    png = fig._repr_png_()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_the_read_window_labels_are_readable_at_normal_size():
    """Review C6: the in-bar labels ("row 0: 32-47") were 6-7 pt; they are drawn at 9 pt or more, and every misread
    run of the wider replay gets its label."""
    from flexfix.edition import plots
    from flexfix.mechanism.persistent import copy_to_persistent_as_strided

    lay = layouts.stride_layout(
        copy_to_persistent_as_strided, "as_strided", g=3, g_max=4, w_max=64, k_capture=32, k_replay=48
    )
    fig = plots.read_windows([lay])
    texts = [t for ax in fig.axes for t in ax.texts]
    assert sorted(t.get_text() for t in texts) == ["block 0: 32-47", "block 1: 0-31", "block 1: 16-47", "block 2: 0-15"]
    assert min(t.get_fontsize() for t in texts) >= 9
