"""Figures of Task 1's test evaluation: confusion matrix, ROC and PR curves, threshold, errors.

The decision threshold against the validation scores, misclassified test images, and the
areas under curves given as points. Every figure is built in the shared style of
:mod:`pneumo.plots.style`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pneumo.plots.style import MAX_WIDTH, OKABE_ITO, _figure, _hide_unused, _imshow, _styled, class_colour

__all__ = [
    "confusion_matrix",
    "roc_curves",
    "pr_curves",
    "roc_pr_curves",
    "threshold_plot",
    "misclassified_gallery",
    "auc_from_curve",
    "average_precision_from_curve",
]


# -- curves from arrays ----------------------------------------------------------------------
def auc_from_curve(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a ROC curve given as points (trapezoids, as scikit-learn's ``auc``).

    Parameters
    ----------
    fpr, tpr
        False and true positive rates of the curve's points, in any order.

    Returns
    -------
    float
        The area, as ``roc_auc_score`` gives for the scores the curve came from.
    """
    fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
    order = np.lexsort((tpr, fpr))
    return float(np.trapezoid(tpr[order], fpr[order]) if hasattr(np, "trapezoid")
                 else np.trapz(tpr[order], fpr[order]))


def average_precision_from_curve(precision: np.ndarray, recall: np.ndarray) -> float:
    """Average precision (step-wise area) of a PR curve in scikit-learn's order.

    ``precision_recall_curve`` returns recall decreasing to 0 with a last point (1, 0); the
    average precision is ``sum((r[i] - r[i+1]) * p[i])``, as in ``average_precision_score``.

    Parameters
    ----------
    precision, recall
        The curve's points, recall decreasing (scikit-learn's order) or increasing.

    Returns
    -------
    float
        The average precision.
    """
    precision, recall = np.asarray(precision, float), np.asarray(recall, float)
    if recall[0] < recall[-1]:  # increasing order given: flip to scikit-learn's
        precision, recall = precision[::-1], recall[::-1]
    return float(np.sum(-np.diff(recall) * precision[:-1]))


# -- evaluation -----------------------------------------------------------------------------------
@_styled
def confusion_matrix(cm: np.ndarray | pd.DataFrame, classes: Sequence[str] | None = None, *,
                     title: str | None = None, width: float = 3.2, height: float | None = None) -> Figure:
    """Confusion matrix: counts and row percentages (share of each true class).

    Parameters
    ----------
    cm
        (K, K) counts, rows = true class, columns = predicted class; a DataFrame's columns
        (other than a ``true`` column) name the classes.
    classes
        Class names (default: the DataFrame's columns, else 0..K-1); the true classes'
        names are written in their class colour.
    title
        Optional axes title.
    width, height
        Figure width in inches; the height is ``height`` (default: ``width``) times 0.88 for
        two classes, 0.95 for more.

    Returns
    -------
    matplotlib.figure.Figure
        The matrix, each cell shaded by its row share.

    Raises
    ------
    ValueError
        When ``cm`` is not square.
    """
    if isinstance(cm, pd.DataFrame):
        frame = cm.set_index("true") if "true" in cm.columns else cm
        classes = list(classes) if classes is not None else [str(c) for c in frame.columns]
        cm = frame.to_numpy()
    cm = np.asarray(cm, dtype=float)
    k = cm.shape[0]
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix must be square, got {cm.shape}")
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    size = width if height is None else height
    fig = _figure(width, size * (0.88 if k <= 2 else 0.95))
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            colour = "white" if share[i, j] > 0.55 else "black"
            ax.text(j, i, f"{int(cm[i, j]):,}\n{100 * share[i, j]:.1f}%", ha="center", va="center",
                    color=colour, fontsize=8 if k <= 3 else 6.5)
    ax.set_xticks(range(k), classes)
    ax.set_yticks(range(k), classes)
    for tick, name in zip(ax.get_yticklabels(), classes):
        tick.set_color(class_colour(name))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    return fig


def _curves_with(curves: Mapping[str, Mapping[str, Any]], points: tuple[str, str], area: str,
                 area_of: Callable[[np.ndarray, np.ndarray], float]):
    """``(name, curve, colour, area)`` of each curve that has ``points``.

    The area is the curve's ``area`` entry when given, else ``area_of(*points)``; the colour
    is its ``colour`` entry, else the name's fixed colour (by position among all curves).
    """
    for i, (name, c) in enumerate(curves.items()):
        if points[0] not in c:
            continue
        value = c.get(area)
        value = area_of(*(c[p] for p in points)) if value is None else value
        yield name, c, c.get("colour") or class_colour(name, i), value


def _unit_square(ax, *, xlabel: str, ylabel: str, title: str, legend: str, top: float = 1.01) -> None:
    """Square axes over [0, 1] x [0, 1] (small margins) with its labels and legend."""
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, top)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend)


def _roc_axis(ax, curves: Mapping[str, Mapping[str, Any]]) -> None:
    for name, c, colour, auc in _curves_with(curves, ("fpr", "tpr"), "auc", auc_from_curve):
        ax.plot(c["fpr"], c["tpr"], color=colour, linestyle=c.get("linestyle", "-"),
                label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color=OKABE_ITO["grey"], linestyle=":", linewidth=1, label="chance")
    _unit_square(ax, xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
                 title="ROC", legend="lower right")


def _pr_axis(ax, curves: Mapping[str, Mapping[str, Any]]) -> None:
    for name, c, colour, ap in _curves_with(curves, ("precision", "recall"), "ap", average_precision_from_curve):
        ax.step(c["recall"], c["precision"], where="post", color=colour,
                linestyle=c.get("linestyle", "-"), label=f"{name} (AP {ap:.3f})")
        if c.get("prevalence") is not None:
            ax.axhline(c["prevalence"], color=colour, linestyle=":", linewidth=0.9, alpha=0.8)
    _unit_square(ax, xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="precision-recall",
                 legend="lower left", top=1.02)


@_styled
def roc_curves(curves: Mapping[str, Mapping[str, Any]], *, width: float = 3.2) -> Figure:
    """ROC curves, one per entry of ``curves``.

    Parameters
    ----------
    curves
        ``{name: {"fpr", "tpr", ["auc", "colour", "linestyle"]}}``; entries without ``fpr``
        are left out. The area in the legend is ``auc`` when given (e.g. the headline
        metric), else computed from the points; the colour defaults to the name's class
        colour.
    width
        Figure width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure
        One square panel with the curves and the chance diagonal.
    """
    fig = _figure(width, width)
    _roc_axis(fig.add_subplot(), curves)
    return fig


@_styled
def pr_curves(curves: Mapping[str, Mapping[str, Any]], *, width: float = 3.2) -> Figure:
    """Precision-recall curves, one per entry of ``curves``.

    Parameters
    ----------
    curves
        ``{name: {"precision", "recall", ["ap", "prevalence", "colour", "linestyle"]}}``;
        entries without ``precision`` are left out. A dotted horizontal line marks a curve's
        ``prevalence`` (the precision of chance); the legend shows ``ap`` when given, else
        the average precision computed from the points.
    width
        Figure width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure
        One square panel with the curves.
    """
    fig = _figure(width, width)
    _pr_axis(fig.add_subplot(), curves)
    return fig


@_styled
def roc_pr_curves(curves: Mapping[str, Mapping[str, Any]], *, width: float = MAX_WIDTH,
                  height: float = 3.1) -> Figure:
    """ROC (left) and precision-recall (right) side by side.

    Parameters
    ----------
    curves
        As for :func:`roc_curves` and :func:`pr_curves` (one entry may hold both curves).
    width, height
        Figure size in inches (the width at most :data:`MAX_WIDTH`).

    Returns
    -------
    matplotlib.figure.Figure
        Two square panels.
    """
    fig = _figure(width, height)
    left, right = fig.subplots(1, 2)
    _roc_axis(left, curves)
    _pr_axis(right, curves)
    return fig


def _rates(y_true: np.ndarray, score: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity of ``score >= t`` for each threshold ``t``."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    predicted = s[None, :] >= thresholds[:, None]  # (T, N)
    sensitivity = (predicted & y[None, :]).sum(1) / pos
    specificity = (~predicted & ~y[None, :]).sum(1) / neg
    return sensitivity, specificity


@_styled
def threshold_plot(y_true: np.ndarray, score: np.ndarray, threshold: float, *,
                   positive: str = "pneumonia", negative: str = "normal", rule: str | None = None,
                   width: float = MAX_WIDTH, height: float = 2.6) -> Figure:
    """How the decision threshold trades sensitivity for specificity (on validation).

    Left: the score distribution of each true class. Right: sensitivity, specificity and
    Youden's J = sensitivity + specificity - 1 against the threshold. The chosen threshold
    is marked on both.

    Parameters
    ----------
    y_true
        True labels, 1 (or True) for the positive class.
    score
        Predicted probability of the positive class.
    threshold
        The chosen threshold: ``score >= threshold`` predicts the positive class.
    positive, negative
        Class names (legend labels and colours).
    rule
        Optional name of the rule that chose the threshold, shown in the legend.
    width, height
        Figure size in inches (the width at most :data:`MAX_WIDTH`).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels; the right one's title gives the rates at the threshold.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    grid = np.linspace(0.0, 1.0, 401)
    sens, spec = _rates(y, s, grid)
    at_sens, at_spec = _rates(y, s, np.array([threshold]))
    fig = _figure(width, height)
    left, right = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 26)
    for mask, name in ((~y, negative), (y, positive)):
        left.hist(s[mask], bins=bins, color=class_colour(name), alpha=0.55, label=f"{name} (n={int(mask.sum())})")
    left.axvline(threshold, color=OKABE_ITO["black"], linestyle="--", linewidth=1.1, label="threshold")
    left.set_xlabel(f"predicted P({positive})")
    left.set_ylabel("images")
    left.set_title("validation scores by true class")
    left.legend(loc="best")
    right.plot(grid, sens, color=class_colour(positive), label="sensitivity")
    right.plot(grid, spec, color=class_colour(negative), label="specificity")
    right.plot(grid, sens + spec - 1, color=OKABE_ITO["grey"], linestyle="--", label="Youden's J")
    right.axvline(threshold, color=OKABE_ITO["black"], linestyle="--", linewidth=1.1,
                  label=f"threshold{f' ({rule})' if rule else ''}")
    right.set_xlim(0, 1)
    right.set_ylim(-0.02, 1.02)
    right.set_xlabel("threshold")
    right.set_title(f"t = {threshold:.3f}: sensitivity {at_sens[0]:.3f}, specificity {at_spec[0]:.3f}",
                    fontsize=8)
    right.legend(loc="center left", fontsize=7)
    return fig


@_styled
def misclassified_gallery(images: Sequence[np.ndarray], true: Sequence[str], predicted: Sequence[str],
                          probability: Sequence[float], *, ncols: int = 5, width: float = MAX_WIDTH,
                          probability_label: str = "p") -> Figure:
    """Misclassified images with their true class, the prediction and its probability.

    Parameters
    ----------
    images
        Grey images (H, W).
    true, predicted
        Class names per image; each is written in its class colour.
    probability
        The model's probability of the predicted class (or of the positive class; say which
        in ``probability_label`` and in the caption).
    ncols
        Images per row (at most the number of images).
    width
        Figure width in inches; the height follows from square cells.
    probability_label
        Name of the probability under each image.

    Returns
    -------
    matplotlib.figure.Figure
        A grid of images, or one line saying there are none.
    """
    n = len(images)
    if n == 0:
        fig = _figure(width, 0.6)
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.set_axis_off()
        return fig
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    cell = width / ncols
    fig = _figure(width, nrows * (cell + 0.5))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat[:n]):
        _imshow(ax, images[k])
        ax.set_title(f"true {true[k]}", color=class_colour(true[k]), fontsize=7, pad=2)
        ax.set_xlabel(f"pred {predicted[k]}\n{probability_label} = {probability[k]:.2f}",
                      color=class_colour(predicted[k]), fontsize=6.5, labelpad=2, linespacing=1.0)
    _hide_unused(axes, n)
    return fig
