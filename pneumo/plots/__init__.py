"""The report's figures: matplotlib only, Agg-safe, no pyplot state.

This package only re-exports. Every function builds a :class:`matplotlib.figure.Figure`
directly (never through ``pyplot``), so nothing is shown twice in a notebook, nothing leaks
between cells and no display is needed; the caller displays the returned figure (a notebook
shows it as the cell's value) or saves it with ``fig.savefig(path)``.

Modules:

- :mod:`pneumo.plots.style`: colours, :data:`MAX_WIDTH`, the rc settings and the helpers
  every figure is built with;
- :mod:`pneumo.plots.classification` (data, training, grid) and
  :mod:`pneumo.plots.classification_eval` (test evaluation): Task 1 (re-exported here, as
  ``pneumo.plots.X``);
- :mod:`pneumo.plots.embeddings`, :mod:`pneumo.plots.anomaly`, :mod:`pneumo.plots.explain`:
  Tasks 2 to 4 (imported by name: ``from pneumo.plots import anomaly``).

``with pneumo.plots.use_style():`` gives ad-hoc figures the same look.
"""

from __future__ import annotations

from pneumo.plots.classification import class_balance, grid_comparison, learning_curves, sample_grid
from pneumo.plots.classification_eval import (
    auc_from_curve,
    average_precision_from_curve,
    confusion_matrix,
    misclassified_gallery,
    pr_curves,
    roc_curves,
    roc_pr_curves,
    threshold_plot,
)
from pneumo.plots.style import (
    CLASS_COLOURS,
    MAX_WIDTH,
    OKABE_ITO,
    SPLIT_COLOURS,
    STYLE,
    class_colour,
    use_style,
)

__all__ = [
    "OKABE_ITO", "CLASS_COLOURS", "SPLIT_COLOURS", "MAX_WIDTH", "STYLE", "class_colour", "use_style",
    # Task 1: pneumo.plots.classification.__all__, then pneumo.plots.classification_eval.__all__
    "class_balance", "sample_grid", "learning_curves", "grid_comparison",
    "confusion_matrix", "roc_curves", "pr_curves", "roc_pr_curves", "threshold_plot", "misclassified_gallery",
    "auc_from_curve", "average_precision_from_curve",
]
