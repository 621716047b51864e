"""Figures of Task 3 (anomaly detection with autoencoders): score histograms, ROC curves of
every variant, reconstructions with their residual heat maps, and training curves.

Same conventions as every figure module: each function returns a new matplotlib Figure no
wider than :data:`pneumo.plots.style.MAX_WIDTH`, built without pyplot in the shared style of
:mod:`pneumo.plots.style`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pneumo.plots.style import (MAX_WIDTH, OKABE_ITO, _figure, _hide_image_axes, _hide_unused, _imshow, _styled,
                                class_colour)

__all__ = ["score_histograms", "variant_roc_curves", "reconstruction_examples", "ae_training_curves"]

#: Readable names of the anomaly scores.
SCORE_NAMES = {
    "mse": "pixel MSE",
    "ssim": "1 - SSIM",
    "blur": "blurred residual",
    "knn": "latent k-NN",
    "mahalanobis": "latent Mahalanobis",
    "features": "encoder-feature Mahalanobis",
}

_VARIANT_COLOURS = [OKABE_ITO[k] for k in ("blue", "vermillion", "green", "orange", "purple", "sky", "black",
                                           "grey")]


@_styled
def score_histograms(scores: pd.DataFrame, column: str, threshold: float, *, split: str = "test",
                     bins: int = 40, width: float = MAX_WIDTH, height: float = 2.6,
                     title: str | None = None, xlabel: str | None = None) -> Figure:
    """Histogram of one anomaly score per class (normal, bacterial, viral) on one split.

    Parameters
    ----------
    scores
        The entry's ``scores`` table (``split``, ``label`` and one column per variant/score).
    column
        The score column to show.
    threshold
        Decision threshold, drawn as a vertical line (chosen on validation normals).
    split
        The split whose images are shown.
    bins
        Number of bins over the 0.5-99.5 percentile range (widened to the threshold);
        scores outside it are clipped into the end bins.
    width, height
        Figure size in inches (the width at most :data:`MAX_WIDTH`).
    title, xlabel
        Axis title (default: the split) and score name (default: the column).

    Returns
    -------
    matplotlib.figure.Figure
        One panel, a filled density histogram per class.
    """
    rows = scores[scores["split"] == split]
    values = rows[column].to_numpy(dtype=float)
    lo, hi = np.nanpercentile(values, [0.5, 99.5])
    lo, hi = min(lo, threshold), max(hi, threshold)
    edges = np.linspace(lo, hi + 1e-12, bins + 1)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    for label in ("normal", "bacterial", "viral"):
        v = rows.loc[rows["label"] == label, column].to_numpy(dtype=float)
        if len(v):
            ax.hist(np.clip(v, lo, hi), bins=edges, density=True, histtype="stepfilled", alpha=0.3,
                    color=class_colour(label))
            ax.hist(np.clip(v, lo, hi), bins=edges, density=True, histtype="step", color=class_colour(label),
                    label=f"{label} (n={len(v)})")
    ax.axvline(threshold, color=OKABE_ITO["black"], linestyle="--", linewidth=1,
               label="threshold (validation normals)")
    ax.set_xlabel(f"anomaly score: {xlabel or column} (clipped to the 0.5–99.5 percentile range)")
    ax.set_ylabel("density")
    ax.set_title(title or f"{split} images")
    ax.legend(loc="upper right")
    return fig


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr, float(roc_auc_score(y, s))


@_styled
def variant_roc_curves(scores: pd.DataFrame, variants: Sequence[str], score_names: Sequence[str], *,
                       split: str = "test", chosen: str | None = None, extra: Sequence[str] = (),
                       width: float = MAX_WIDTH) -> Figure:
    """ROC curves (normal vs pneumonia) of every variant, one panel per score.

    Parameters
    ----------
    scores
        The entry's ``scores`` table; ``split``, ``binary`` (1 = pneumonia) and columns
        named ``"<variant>/<score>"``.
    variants
        Autoencoder variants (one line each, same colour in every panel).
    score_names
        Scores, one panel each (three panels a row).
    split
        The split whose images are scored.
    chosen
        ``"<variant>/<score>"`` of the chosen pair: drawn thicker.
    extra
        Further columns (comparators) added to the first panel.
    width
        Figure width in inches; the height follows from square panels (at most 9 in).

    Returns
    -------
    matplotlib.figure.Figure
        The panels, each legend giving every curve's ROC AUC.
    """
    rows = scores[scores["split"] == split]
    y = rows["binary"].to_numpy()
    n = len(score_names)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    side = width / ncols
    fig = _figure(width, min(9.0, side * nrows + 0.2))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True)).ravel()
    colours = {v: _VARIANT_COLOURS[i % len(_VARIANT_COLOURS)] for i, v in enumerate([*variants, *extra])}
    for ax, score in zip(axes, score_names):
        columns = [f"{v}/{score}" for v in variants] + (list(extra) if score == score_names[0] else [])
        for column in columns:
            if column not in rows:
                continue
            fpr, tpr, auc = _roc(y, rows[column].to_numpy(dtype=float))
            name = column.rsplit("/", 1)[0]
            thick = column == chosen
            ax.plot(fpr, tpr, color=colours.get(name, OKABE_ITO["grey"]), linewidth=2.2 if thick else 1.0,
                    label=f"{name}{' (chosen)' if thick else ''}: {auc:.3f}")
        ax.plot([0, 1], [0, 1], color=OKABE_ITO["grey"], linestyle=":", linewidth=0.8)
        ax.set_title(SCORE_NAMES.get(score, score))
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize=5.5, handlelength=1.2)
    _hide_unused(axes, n)
    for ax in axes[:n]:
        if ax.get_subplotspec().is_last_row() or ax is axes[n - 1]:
            ax.set_xlabel("false positive rate")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("true positive rate")
    return fig


@_styled
def reconstruction_examples(inputs: np.ndarray, reconstructions: np.ndarray, residuals: np.ndarray,
                            labels: Sequence[str], *, scores: Sequence[float] | None = None,
                            width: float = MAX_WIDTH) -> Figure:
    """Input, reconstruction and squared-residual heat map, one row per example image.

    Two examples share a row when there is an even number of more than two.

    Parameters
    ----------
    inputs
        (N, H, W) uint8 inputs.
    reconstructions
        (N, H, W) reconstructions in normalised units (``(p/255 - 0.5) / 0.25``).
    residuals
        (N, H, W) squared residuals (normalised units); one colour scale for all rows, so
        the heat maps are comparable between images.
    labels
        Class of each image (row title).
    scores
        Optional anomaly score of each image, shown in the row title.
    width
        Figure width in inches; the height follows from the cells (at most 9 in).

    Returns
    -------
    matplotlib.figure.Figure
        The image triples and one colour bar for the residuals.
    """
    n = len(inputs)
    pairs_per_row = 2 if n % 2 == 0 and n > 2 else 1
    nrows = math.ceil(n / pairs_per_row)
    ncols = 3 * pairs_per_row
    cell = width / ncols
    fig = _figure(width, min(9.0, cell * nrows * 1.25 + 0.3))
    axes = np.atleast_2d(fig.subplots(nrows, ncols))
    vmax = float(np.percentile(residuals, 99.5)) if residuals.size else 1.0
    image = None
    for i in range(n):
        r, c0 = divmod(i, pairs_per_row)
        ax_in, ax_rec, ax_res = axes[r, 3 * c0:3 * c0 + 3]
        _imshow(ax_in, inputs[i])
        recon = np.clip((reconstructions[i] * 0.25 + 0.5) * 255, 0, 255).astype(np.uint8)
        _imshow(ax_rec, recon)
        image = ax_res.imshow(residuals[i], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        _hide_image_axes(ax_res)
        # Two-line titles: one line would run into the neighbouring panel's title.
        score = f"\nscore {scores[i]:.3g}" if scores is not None else "\n"
        ax_in.set_title(f"input: {labels[i]}{score}", fontsize=6.5, color=class_colour(labels[i]))
        ax_rec.set_title("reconstruction\n", fontsize=6.5)
        ax_res.set_title("squared\nresidual", fontsize=6.5)
    _hide_unused(axes, 3 * n)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="squared residual")
    return fig


@_styled
def ae_training_curves(history: pd.DataFrame, *, width: float = MAX_WIDTH, height: float = 2.5) -> Figure:
    """Training and validation reconstruction loss per epoch of every autoencoder variant.

    Parameters
    ----------
    history
        One row per variant and epoch: ``variant``, ``epoch``, ``train_loss``, ``val_loss``.
    width, height
        Figure size in inches (the width at most :data:`MAX_WIDTH`).

    Returns
    -------
    matplotlib.figure.Figure
        Training (left) and validation (right) losses on a log scale; a dot marks each
        variant's best validation epoch.
    """
    fig = _figure(width, height)
    left, right = fig.subplots(1, 2, sharey=True)
    for i, (variant, h) in enumerate(history.groupby("variant", sort=False)):
        colour = _VARIANT_COLOURS[i % len(_VARIANT_COLOURS)]
        left.plot(h["epoch"], h["train_loss"], color=colour, label=variant)
        right.plot(h["epoch"], h["val_loss"], color=colour, label=variant)
        best = h.loc[h["val_loss"].idxmin()]
        right.plot([best["epoch"]], [best["val_loss"]], "o", color=colour, markersize=3)
    left.set_title("training normals")
    right.set_title("validation normals")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
    left.set_ylabel("mean squared error")
    right.legend(loc="upper right")
    return fig
