"""Notebook 07's figure: what the replay guard compares, and why the pointer is not enough."""

from __future__ import annotations

from collections.abc import Sequence

from flexfix.edition.plots.layouts import STORAGE_OWNER_COLOURS, _legend_blocks, _owner_colour
from flexfix.edition.plots.style import figure, wrap

__all__ = ["GUARD_COLOURS", "MARK_SIZE", "guard_invariant"]

MARK_SIZE = 12  # points: a digit of 7.5 points fits inside the triangle and the circle

# guard_invariant: the buffer's cells as storage_owners colours them, and two marks per query block.
GUARD_COLOURS = {
    **STORAGE_OWNER_COLOURS,
    "where the captured kernel starts row g (numbered g)": ("black", "#000000"),
    "where this step wrote row g (numbered g)": ("white", "#ffffff"),
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
    starts reading row ``g`` (``g * capture row stride``) and a white circle where this step wrote it
    (``g * replay row stride``).  Both start row 0 at the same pointer; only the strides tell the copies apart.
    Colours: ``GUARD_COLOURS``."""
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    fig, axes = figure((10, 2.1 * len(layouts) + 0.9), len(layouts), 1, squeeze=False)
    g = max(lay.g for lay in layouts)
    cmap = ListedColormap([STORAGE_OWNER_COLOURS["not written"][1]] + [_owner_colour(i) for i in range(g)])
    for ax, lay in zip(axes[:, 0], layouts):
        ax.imshow(lay.owner_replay, cmap=cmap, vmin=-1.5, vmax=g - 0.5, aspect="auto", interpolation="nearest")
        for row in range(lay.g):
            # the triangle sits on the top edge of its cell, the circle in its middle: apart, yet one above the other
            for stride, marker, face, lift in (
                (lay.capture_stride[0], "v", "black", -0.5),
                (lay.replay_stride[0], "o", "white", 0.0),
            ):
                offset = row * stride
                if offset < lay.g_max * lay.w_max:
                    x, y = offset % lay.w_max, offset // lay.w_max + lift
                    ax.plot(x, y, marker, ms=MARK_SIZE, mfc=face, mec="black", mew=1.2, clip_on=False, zorder=3)
                    # each mark numbered with its row g (white on the triangle, black in the circle), large enough
                    # to read: the digit sits in the triangle's wide upper part
                    ax.text(x, y - (0.1 if marker == "v" else 0), str(row), ha="center", va="center", fontsize=7.5,
                            color="white" if face == "black" else "black", fontweight="bold", zorder=4)  # fmt: skip
        verdict = "the guard refuses the replay" if _alarms(lay) else "the guard lets it replay"
        title = (
            f"{lay.copy_name}: data_ptr the same at capture and replay; strides {lay.capture_stride} at capture, "
            f"{lay.replay_stride} now: {verdict}"
        )
        ax.set_title(wrap(title, 6.5, 9), fontsize=9)
        ax.set_ylabel("buffer row")
        ax.set_yticks(range(lay.g_max))
        ax.set_xlim(-1.6, lay.w_max - 0.5)  # room for the marks of column 0 and of row 0's top edge
        ax.set_ylim(lay.g_max - 0.5, -1.2)
    axes[-1, 0].set_xlabel("buffer column (W_max cells per row)")
    fig.set_layout_engine("constrained", h_pad=0.12)
    handles, labels = _legend_blocks(g)
    marks = [
        Line2D([], [], ls="", marker="v", ms=MARK_SIZE * 0.7, mfc="black", mec="black"),
        Line2D([], [], ls="", marker="o", ms=MARK_SIZE * 0.7, mfc="white", mec="black"),
    ]
    fig.legend(
        handles + marks,
        labels + ["where the captured kernel starts row g (numbered g)", "where this step wrote row g (numbered g)"],
        loc="outside right upper",
        fontsize=8,
    )
    return fig
