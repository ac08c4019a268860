"""What notebook 04's recorded kernel sweep keeps of its kernel's settings, and what it does not (r21 B1).

The kernel options' values (``BLOCK_M``, ``BLOCK_N``, ...) and the dtype are this code's settings
(:func:`flexfix.mechanism.paged.kernel_options`, :mod:`flexfix.measure.needle`: bf16 on a GPU); the recording
keeps each cell's option set by name and the parameters its provenance lists.  This says which, from the data,
so that settings of today's code are not read as facts of the recording."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown

__all__ = ["kernel_settings", "SETTING_KEYS"]

SETTING_KEYS = ("kernel_options", "dtype")  # what the printed options and "bf16" would need a record to hold


def _kept_keys(provs: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for prov in provs:
        keys.update(dict.fromkeys((prov or {}).get("parameters") or {}))
    return list(keys)


def kernel_settings(cells: pd.DataFrame, provs: list[dict]) -> str:
    """One paragraph: the option sets the cells name, the parameter names the recordings keep, and which of
    ``SETTING_KEYS`` no record (cell column or parameter) holds, said as this code's settings, not the recording's."""
    keys = _kept_keys(provs)
    held = [k for k in SETTING_KEYS if k in keys or k in cells.columns]
    missing = [k for k in SETTING_KEYS if k not in held]
    names = list(dict.fromkeys(str(o) for o in cells["options"])) if "options" in cells else []
    text = "**What the recording keeps of the kernel's settings**: "
    text += f"each cell's option set by name ({listing(f'`{n}`' for n in names)})" if names else "no option set's name"
    text += f", and its parameters {listing(f'`{k}`' for k in keys)}" if keys else ""
    if held:
        text += f"; it also holds {listing(f'`{k}`' for k in held)}"
    if missing:
        words = {"kernel_options": "the option sets' values (`BLOCK_M`, `BLOCK_N`, ...)", "dtype": "the dtype"}
        text += (
            f"; no record holds {' or '.join(words[k] for k in missing)}. The kernel options printed above and bf16 "
            "are this code's settings (`flexfix.mechanism.paged.kernel_options`, `flexfix.measure.needle`), "
            "and they *request* the tiles, they do not record the one launched: that the recorded run compiled "
            "flex with them is what this code does, not something its records show"
        )
    return markdown(text + ".")
