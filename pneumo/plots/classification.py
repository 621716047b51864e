"""Figures of Task 1 (classification): the data, training and the choice among the grid's variants.

Class balance and example images, learning curves and the grid of variants. The test
evaluation's figures are in :mod:`pneumo.plots.classification_eval`. Every figure is built in
the shared style of :mod:`pneumo.plots.style`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pneumo.plots.style import (MAX_WIDTH, OKABE_ITO, SPLIT_COLOURS, _figure, _hide_unused, _imshow, _styled,
                                class_colour)

__all__ = ["class_balance", "sample_grid", "learning_curves", "grid_comparison"]


# -- data -------------------------------------------------------------------------------------
@_styled
def class_balance(counts: pd.DataFrame, *, title: str | None = None,
                  width: float = 6.0, height: float = 2.4) -> Figure:
    """Images per class in each split, as grouped bars labelled with count and share.

    Parameters
    ----------
    counts
        One row per split (the index: ``train``, ``val``, ``test``), one column per class,
        image counts as values; missing counts are 0.
    title
        Optional axes title.
    width, height
        Figure size in inches (the width at most :data:`MAX_WIDTH`).

    Returns
    -------
    matplotlib.figure.Figure
        One bar per class and split, each labelled with its count and its share of the split.
    """
    counts = counts.fillna(0)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    splits = list(counts.index)
    classes = list(counts.columns)
    x = np.arange(len(splits), dtype=float)
    bar = 0.8 / max(len(classes), 1)
    top = float(counts.to_numpy().max()) if counts.size else 1.0
    for j, name in enumerate(classes):
        values = counts[name].to_numpy(dtype=float)
        totals = counts.sum(axis=1).to_numpy(dtype=float)
        pos = x - 0.4 + bar * (j + 0.5)
        ax.bar(pos, values, bar * 0.92, color=class_colour(name, j), label=name)
        for p, v, t in zip(pos, values, totals):
            share = 100 * v / t if t else 0.0
            ax.text(p, v + 0.01 * top, f"{int(v):,}\n{share:.0f}%", ha="center", va="bottom",
                    fontsize=6.5, linespacing=0.95)
    ax.set_xticks(x, [str(s) for s in splits])
    ax.set_ylabel("images")
    ax.set_ylim(0, top * 1.22 if top > 0 else 1)
    ax.grid(axis="x", visible=False)
    ax.legend(ncols=len(classes), loc="upper right")
    if title:
        ax.set_title(title)
    return fig


@_styled
def sample_grid(images: Mapping[str, Sequence[np.ndarray]], *, captions: Mapping[str, Sequence[str]] | None = None,
                width: float = MAX_WIDTH) -> Figure:
    """Example images, one row per class, the class name in its colour on the left.

    Parameters
    ----------
    images
        ``{class name: [grey image (H, W), ...]}``; rows may have different lengths, empty
        rows are left out.
    captions
        Optional small caption under each image (same shape as ``images``).
    width
        Figure width in inches; the height follows from square cells.

    Returns
    -------
    matplotlib.figure.Figure
        One row of images per class.

    Raises
    ------
    ValueError
        When no row has an image.
    """
    rows = [name for name, imgs in images.items() if len(imgs)]
    if not rows:
        raise ValueError("sample_grid needs at least one image")
    ncols = max(len(images[name]) for name in rows)
    cell = width / (ncols + 0.35)
    fig = _figure(width, cell * len(rows) + (0.15 * len(rows) if captions else 0.0))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, name in enumerate(rows):
        for c, image in enumerate(images[name]):
            _imshow(axes[r, c], image)
            if captions and c < len(captions.get(name, ())):
                axes[r, c].set_xlabel(captions[name][c], fontsize=6)
        _hide_unused(axes[r], len(images[name]))
        axes[r, 0].set_ylabel(name, color=class_colour(name, r), fontsize=9, fontweight="bold")
    return fig


# -- training ------------------------------------------------------------------------------------
_HISTORY_METRICS = [
    ("train_acc", "train accuracy", SPLIT_COLOURS["train"], "-"),
    ("val_acc", "val accuracy", SPLIT_COLOURS["val"], "-"),
    ("val_bal_acc", "val balanced accuracy", SPLIT_COLOURS["val"], "--"),
    ("val_auc", "val ROC AUC", OKABE_ITO["green"], "-"),
]


@_styled
def learning_curves(history: pd.DataFrame, *, best_epoch: int | None = None, title: str | None = None,
                    width: float = MAX_WIDTH, height: float = 3.0) -> Figure:
    """Loss (left) and accuracy / AUC (right) per epoch, with the kept epoch marked.

    Parameters
    ----------
    history
        One row per epoch with ``epoch`` and any of ``train_loss``, ``val_loss``,
        ``train_acc``, ``val_acc``, ``val_bal_acc``, ``val_auc``.
    best_epoch
        The epoch whose weights were kept (dotted vertical line).
    title
        Optional figure title.
    width, height
        Figure size in inches (the width at most :data:`MAX_WIDTH`).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: the losses, and accuracy, balanced accuracy and ROC AUC.

    Raises
    ------
    KeyError
        When ``history`` has no ``epoch`` column.
    """
    if "epoch" not in history:
        raise KeyError(f"history needs an 'epoch' column, has {list(history.columns)}")
    epochs = history["epoch"].to_numpy()
    fig = _figure(width, height)
    left, right = fig.subplots(1, 2)
    for column, label, colour in (("train_loss", "train", SPLIT_COLOURS["train"]),
                                  ("val_loss", "validation", SPLIT_COLOURS["val"])):
        if column in history and history[column].notna().any():
            left.plot(epochs, history[column], color=colour, label=label, marker="o", markersize=2.5)
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.set_title("loss")
    for column, label, colour, style in _HISTORY_METRICS:
        if column in history and history[column].notna().any():
            right.plot(epochs, history[column], color=colour, linestyle=style, label=label,
                       marker="o", markersize=2.5)
    right.set_xlabel("epoch")
    right.set_title("accuracy and AUC")
    for ax in (left, right):
        if best_epoch is not None:
            ax.axvline(best_epoch, color=OKABE_ITO["grey"], linestyle=":", linewidth=1.2,
                       label=f"kept (epoch {best_epoch})")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


# -- model choice ----------------------------------------------------------------------------------
@_styled
def grid_comparison(grid: pd.DataFrame, *, metric: str = "val_roc_auc", chosen: str | None = None,
                    label: str = "validation ROC AUC", width: float = 4.5) -> Figure:
    """The grid's variants ranked by a validation metric (dots), the chosen one highlighted.

    Parameters
    ----------
    grid
        One row per variant: ``variant`` and the ``metric`` column; variants without the
        metric (not trained) are left out.
    metric
        The column to rank by.
    chosen
        The chosen variant, drawn in vermillion.
    label
        Axis label of the metric.
    width
        Figure width in inches; the height grows with the number of variants.

    Returns
    -------
    matplotlib.figure.Figure
        One dot per variant, best at the top.
    """
    trained = grid[grid[metric].notna()] if metric in grid else grid.iloc[0:0]
    trained = trained.sort_values(metric)
    fig = _figure(width, 0.3 + 0.24 * max(len(trained), 1))
    ax = fig.add_subplot()
    y = np.arange(len(trained))
    colours = [OKABE_ITO["vermillion"] if v == chosen else OKABE_ITO["blue"] for v in trained["variant"]]
    ax.scatter(trained[metric], y, color=colours, zorder=3, s=18)
    ax.set_yticks(y, trained["variant"])
    ax.set_xlabel(label)
    ax.grid(axis="y", visible=False)
    return fig
