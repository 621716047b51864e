"""Figures of Task 2: k-NN model selection, t-SNE maps and the retrieval gallery."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pneumo.plots.style import OKABE_ITO, _figure, _hide_unused, _imshow, _styled, class_colour

__all__ = ["knn_k_curves", "tsne_maps", "retrieval_gallery"]

_SETTING_STYLE = {
    ("euclidean", "none"): ("-", OKABE_ITO["blue"]),
    ("euclidean", "standard"): ("--", OKABE_ITO["sky"]),
    ("cosine", "none"): ("-", OKABE_ITO["vermillion"]),
    ("cosine", "standard"): ("--", OKABE_ITO["orange"]),
}


@_styled
def knn_k_curves(grid: pd.DataFrame, titles: Mapping[tuple[str, str], str], *,
                 metric: str = "val_balanced_accuracy", label: str = "validation balanced accuracy") -> Figure:
    """Validation score of every k-NN setting against k, one panel per (representation, question).

    Parameters
    ----------
    grid
        The ``knn_grid`` table: ``representation``, ``question``, ``k``, ``distance``,
        ``scaling`` and the validation scores; the first row of each pair is the chosen one.
    titles
        Panel title per ``(representation, question)``, in panel order.
    metric
        The score column to plot.
    label
        Axis label of the score.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels a row, one line per distance and scaling, the chosen setting circled.
    """
    pairs = list(titles)
    ncols = 2
    nrows = -(-len(pairs) // ncols)
    fig = _figure(6.3, 2.0 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for ax, pair in zip(axes.flat, pairs):
        rows = grid[(grid["representation"] == pair[0]) & (grid["question"] == pair[1])]
        for (distance, scaling), part in rows.groupby(["distance", "scaling"], sort=False):
            part = part.sort_values("k")
            linestyle, colour = _SETTING_STYLE[(distance, scaling)]
            ax.plot(part["k"], part[metric], linestyle=linestyle, color=colour, marker="o", markersize=2.5,
                    label=f"{distance}, {'standardised' if scaling == 'standard' else 'raw'}")
        best = rows.iloc[0]
        ax.scatter([best["k"]], [best[metric]], s=60, facecolors="none", edgecolors="black", zorder=4,
                   label="chosen")
        ax.set_xscale("log")
        ax.set_title(titles[pair])
        ax.set_ylabel(label if ax in axes[:, 0] else "")
    _hide_unused(axes, len(pairs))
    for ax in axes[-1]:
        ax.set_xlabel("k (neighbours, log scale)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=5)
    return fig


@_styled
def tsne_maps(maps: Mapping[str, np.ndarray], split: np.ndarray, colour_by: Mapping[str, np.ndarray], *,
              titles: Mapping[str, str], categories: Sequence[str], colours: Mapping[str, str] | None = None,
              show_train: bool = True) -> Figure:
    """t-SNE maps side by side: training points faint, test points on top.

    Parameters
    ----------
    maps
        ``{representation: (N, 2) coordinates}`` of every image.
    split
        (N,) ``"train"`` / ``"val"`` / ``"test"``.
    colour_by
        ``{representation: (N,) category name}`` used for the colours (e.g. the true class,
        or "correct" / "misclassified" for test points).
    titles
        Panel titles per representation.
    categories
        Category names in legend order.
    colours
        Colour per category (default: the class colours).
    show_train
        Draw the training points (in their category colour, faint) under the test points.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per representation and a shared legend below.
    """
    names = list(maps)
    fig = _figure(6.3, 2.55)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    colours = dict(colours or {c: class_colour(c, i) for i, c in enumerate(categories)})
    test = split == "test"
    train = split == "train"
    for ax, name in zip(axes, names):
        xy, category = maps[name], np.asarray(colour_by[name], dtype=object)
        for c in categories:
            if show_train:
                mask = train & (category == c)
                ax.scatter(xy[mask, 0], xy[mask, 1], s=1.5, color=colours[c], alpha=0.18, linewidths=0,
                           rasterized=True)
        for c in categories:  # test points above every training point
            mask = test & (category == c)
            ax.scatter(xy[mask, 0], xy[mask, 1], s=5, color=colours[c], alpha=0.9, linewidths=0.2,
                       edgecolors="white", rasterized=True)
        ax.set_title(titles[name])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.set_aspect("equal", adjustable="datalim")
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[c], markersize=4, label=c)
               for c in categories]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(categories))
    return fig


@_styled
def retrieval_gallery(images: Sequence[np.ndarray], gallery: pd.DataFrame) -> Figure:
    """Each query test image (first column) next to its nearest training images.

    Parameters
    ----------
    images
        One (H, W) image per row of ``gallery``, in its order.
    gallery
        The ``gallery`` table: ``query``, ``rank`` (0 = the query itself), ``label``,
        ``distance``.

    Returns
    -------
    matplotlib.figure.Figure
        One row per query, the query framed; each neighbour titled with its rank, class and distance.
    """
    queries = list(dict.fromkeys(gallery["query"]))
    ncols = int(gallery["rank"].max()) + 1
    cell = 6.3 / ncols
    fig = _figure(6.3, len(queries) * (cell + 0.28) + 0.2)
    axes = fig.subplots(len(queries), ncols, squeeze=False)
    position = {(q, int(r)): i for i, (q, r) in enumerate(zip(gallery["query"], gallery["rank"]))}
    for row, query in enumerate(queries):
        for rank in range(ncols):
            ax = axes[row, rank]
            i = position.get((query, rank))
            if i is None:
                ax.set_visible(False)
                continue
            _imshow(ax, images[i])
            label = gallery["label"].iloc[i]
            text = f"test: {label}" if rank == 0 else f"{rank}. {label} ({gallery['distance'].iloc[i]:.3g})"
            ax.set_title(text, color=class_colour(label), fontsize=6.5, pad=2)
            if rank == 0:
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_color("black")
                    spine.set_linewidth(1.5)
    return fig
