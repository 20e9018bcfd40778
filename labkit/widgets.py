"""Interactive explorers for the notebooks (ipywidgets): change a value, see the numbers and the figure. Each is a
plain function (it runs headless too, under nbval or papermill) under a box of widgets that redraws once per change.
"""
from __future__ import annotations

from typing import Sequence

from . import capacity, checks, plots, tables

WIDTH_RANGE = (1, 8192)  # hidden widths a slider offers: every integer, the study's 4096 and 256 included


def capacity_view(widths: Sequence[int]):
    """The per-layer capacity table, the total in bits and the figure, for a head of `widths`: (Table, total, fig)."""
    widths = checks.integers("widths", widths, minimum=1, length=2)
    table = capacity.widths_table(widths)
    return tables.Table(table, title=f"head {widths}"), capacity.mec(widths), plots.capacity_table_bars(table)


def show_capacity(widths: Sequence[int]) -> int:
    """Print the table and the total and show the figure for `widths` (headless too); returns the total."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    table, total, fig = capacity_view(widths)
    display(table)
    print(f"total {total:,} bits")
    display(fig)
    plt.close(fig)
    return total


def capacity_explorer(widths: Sequence[int]):
    """Sliders for the hidden widths above the table, total and figure (redrawn once, on release); returns the box."""
    import ipywidgets as w
    from IPython.display import clear_output

    widths = checks.integers("widths", widths, minimum=1, length=3)
    low, high = WIDTH_RANGE
    sliders = [w.IntSlider(value=min(max(n, low), high), min=low, max=high, step=1, continuous_update=False,
                           description=f"hidden layer {i}", style={"description_width": "initial"},
                           layout=w.Layout(width="480px"))
               for i, n in enumerate(widths[1:-1])]
    out = w.Output()

    def redraw(*_):
        with out:
            clear_output(wait=True)
            show_capacity([widths[0], *(s.value for s in sliders), widths[-1]])

    for s in sliders:
        s.observe(redraw, names="value")
    redraw()
    return w.VBox([*sliders, out])
