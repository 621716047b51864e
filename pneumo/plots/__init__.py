"""The report's figures: matplotlib only, Agg-safe, no pyplot state.

This package only re-exports. Every function builds a :class:`matplotlib.figure.Figure`
directly (never through ``pyplot``), so nothing is shown twice in a notebook, nothing leaks
between cells and no display is needed; the caller displays the returned figure (a notebook
shows it as the cell's value) or saves it with ``fig.savefig(path)``.

Modules:

- :mod:`pneumo.plots.style`: colours, :data:`MAX_WIDTH`, the rc settings and the helpers
  every figure is built with;
- :mod:`pneumo.plots.classification`: Task 1 (re-exported here, as ``pneumo.plots.X``);
- :mod:`pneumo.plots.embeddings`, :mod:`pneumo.plots.anomaly`, :mod:`pneumo.plots.explain`:
  Tasks 2 to 4 (imported by name: ``from pneumo.plots import anomaly``).

``with pneumo.plots.use_style():`` gives ad-hoc figures the same look.
"""

from __future__ import annotations

from pneumo.plots import classification
from pneumo.plots.classification import *  # noqa: F401,F403  the Task 1 figures: classification.__all__
from pneumo.plots.style import (
    CLASS_COLOURS,
    MAX_WIDTH,
    OKABE_ITO,
    SPLIT_COLOURS,
    STYLE,
    class_colour,
    use_style,
)

__all__ = ["OKABE_ITO", "CLASS_COLOURS", "SPLIT_COLOURS", "MAX_WIDTH", "STYLE", "class_colour", "use_style",
           *classification.__all__]
