"""Notebook 07's figure: what the replay guard compares, and why the pointer is not enough."""

from __future__ import annotations

from collections.abc import Sequence

from flexfix.edition.plots.layouts import STORAGE_OWNER_COLOURS, _legend_blocks, _owner_colour
from flexfix.edition.plots.style import figure, wrap

__all__ = ["GUARD_COLOURS", "MARK_SIZE", "CAPTURED", "NOW", "guard_invariant"]

MARK_SIZE = 10  # points: two marks, one above the other, fit in one buffer row; each mark's g is written beside it

CAPTURED = "where the captured kernel starts reading query block g (upper half of a buffer row)"
NOW = "where this step wrote query block g (lower half of a buffer row)"

# guard_invariant: the buffer's cells as storage_owners colours them, and two marks per query block.
GUARD_COLOURS = {
    **STORAGE_OWNER_COLOURS,
    CAPTURED: ("black", "#000000"),
    NOW: ("white", "#ffffff"),
}


def _alarms(lay) -> list:
    """What :func:`flexfix.guard.layout.layout_changes` says of the two views (same pointer, offset, dtype, device)."""
    import torch

    from flexfix.guard.layout import Layout, layout_changes

    def view(k: int, strides: tuple) -> Layout:
        return Layout(0, (lay.g, k), tuple(strides), 0, torch.int32, torch.device("cpu"))

    return layout_changes(view(lay.k_capture, lay.capture_stride), view(lay.k_replay, lay.replay_stride))


def guard_invariant(layouts: Sequence):
    """One panel per copy (:func:`flexfix.mechanism.layouts.stride_layout` at a replay step): the persistent buffer
    coloured by which query block wrote each cell this step, a black triangle where the kernel captured earlier
    starts reading query block ``g`` (``g * capture row stride``) and a white circle where this step wrote it
    (``g * replay row stride``), each in the buffer row its offset falls in (triangle in the upper half, circle in the
    lower) with ``g=`` written beside it.  Both start row 0 at the same pointer; only the strides tell the copies apart.
    Colours: ``GUARD_COLOURS``."""
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    rows = max(lay.g_max for lay in layouts)
    fig, axes = figure((10.5, (0.62 * rows + 1.0) * len(layouts) + 0.6), len(layouts), 1, squeeze=False)
    g = max(lay.g for lay in layouts)
    cmap = ListedColormap([STORAGE_OWNER_COLOURS["not written"][1]] + [_owner_colour(i) for i in range(g)])
    for ax, lay in zip(axes[:, 0], layouts):
        ax.imshow(lay.owner_replay, cmap=cmap, vmin=-1.5, vmax=g - 0.5, aspect="auto", interpolation="nearest")
        for row in range(lay.g):
            # query block g's two marks sit in the buffer row their offset falls in: the triangle (capture stride) in
            # the row's upper half, the circle (this step's stride) in its lower half, each with its g written to
            # its right on a white ground, so that marks at the same column never pile up or straddle a row boundary
            for stride, marker, face, shift in (
                (lay.capture_stride[0], "v", "black", -0.24),
                (lay.replay_stride[0], "o", "white", 0.24),
            ):
                offset = row * stride
                if offset < lay.g_max * lay.w_max:
                    x, y = offset % lay.w_max, offset // lay.w_max + shift
                    ax.plot(x, y, marker, ms=MARK_SIZE, mfc=face, mec="black", mew=1.2, clip_on=False, zorder=3)
                    ground = {"facecolor": "white", "edgecolor": "none", "pad": 0.5}
                    ax.text(x + 0.9, y, f"g={row}", ha="left", va="center", fontsize=8, fontweight="bold", bbox=ground)
        verdict = "the guard refuses the replay" if _alarms(lay) else "the guard lets it replay"
        title = (
            f"{lay.copy_name}: data_ptr the same at capture and replay; strides {lay.capture_stride} at capture, "
            f"{lay.replay_stride} now: {verdict}"
        )
        ax.set_title(wrap(title, 6.5, 9), fontsize=9)
        ax.set_ylabel("buffer row")
        ax.set_yticks(range(lay.g_max))
        ax.set_xlim(-1.6, lay.w_max - 0.5)  # room for the marks of column 0
        ax.set_ylim(lay.g_max - 0.5, -0.5)
    axes[-1, 0].set_xlabel("buffer column (W_max cells per row)")
    fig.set_layout_engine("constrained", h_pad=0.12)
    handles, labels = _legend_blocks(g)
    marks = [
        Line2D([], [], ls="", marker="v", ms=MARK_SIZE * 0.8, mfc="black", mec="black"),
        Line2D([], [], ls="", marker="o", ms=MARK_SIZE * 0.8, mfc="white", mec="black"),
    ]
    fig.legend(
        handles + marks,
        labels + [CAPTURED, NOW],
        loc="outside lower center",
        ncol=2,
        fontsize=8,
    )
    return fig
