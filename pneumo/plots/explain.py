"""Figures of Task 4 (explanations): overlays, sanity checks, lung template, neurons.

Every function returns a :class:`matplotlib.figure.Figure` at most :data:`MAX_WIDTH` wide and
9 inches tall, built without pyplot in the shared style of :mod:`pneumo.plots.style`.

Overlays share one colour scale: each map's positive part (evidence *for* the explained
class) is divided by the map's own 99th percentile of positive values and clipped to
[0, 1], so that 1 means "among the map's strongest 1 %" for every method and network, and
one colour bar serves all panels. Per-pixel methods (integrated gradients, SHAP) are shown
after a light Gaussian smoothing (``smooth`` pixels) so that single-pixel speckle does not
hide where the mass is; the numbers in the tables use the raw maps.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from scipy import ndimage

from pneumo.plots.style import (MAX_WIDTH, OKABE_ITO, _figure, _hide_image_axes, _hide_unused, _imshow, _styled,
                                class_colour)

__all__ = ["overlay_scale", "attribution_overlays", "gradcam_depth", "block_shares", "randomisation_curves",
           "randomisation_maps", "perturbation_curves", "lung_template", "first_layer_filters",
           "feature_visualisation", "top_patches", "class_channel_patches"]

MAX_HEIGHT = 9.0
CMAP = "inferno"
METHOD_COLOURS = {"gradcam": OKABE_ITO["vermillion"], "integrated_gradients": OKABE_ITO["blue"],
                  "shap": OKABE_ITO["green"], "random": OKABE_ITO["grey"]}
METHOD_LABELS = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated gradients", "shap": "SHAP",
                 "random": "random order"}
SHORT_LABELS = {"gradcam": "Grad-CAM", "integrated_gradients": "IG", "shap": "SHAP"}
NETWORK_LABELS = {"binary": "1a", "multiclass": "1b"}


def overlay_scale(attribution: np.ndarray, *, smooth: float = 0.0) -> np.ndarray:
    """A map's positive part on the shared [0, 1] scale (see the module notes).

    Parameters
    ----------
    attribution
        (H, W) attribution map.
    smooth
        Standard deviation, in pixels, of a Gaussian smoothing applied first (0: none).

    Returns
    -------
    numpy.ndarray
        (H, W) float64 in [0, 1]: the positive part divided by its 99th percentile.
    """
    a = np.asarray(attribution, np.float64)
    if smooth:
        a = ndimage.gaussian_filter(a, smooth)
    positive = np.clip(a, 0, None)
    top = np.percentile(positive[positive > 0], 99) if (positive > 0).any() else 1.0
    return np.clip(positive / max(top, 1e-12), 0, 1)


def _overlay(ax, image: np.ndarray, attribution: np.ndarray, *, smooth: float = 0.0, mask=None):
    _imshow(ax, image)
    scaled = overlay_scale(attribution, smooth=smooth)
    # Opacity grows with the value: weak attribution leaves the X-ray visible.
    ax.imshow(scaled, cmap=CMAP, vmin=0, vmax=1, alpha=np.clip(1.2 * scaled, 0, 0.85), interpolation="bilinear")
    if mask is not None:
        ax.contour(mask.astype(float), levels=[0.5], colors=[OKABE_ITO["sky"]], linewidths=0.5)


def _colourbar(fig: Figure, axes, label: str = "attribution (share of the map's 99th percentile)") -> None:
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=CMAP), ax=axes, location="bottom", shrink=0.6,
                       aspect=40, pad=0.02)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6.5)


def _smooth_for(method: str, smooth: float) -> float:
    return 0.0 if method.startswith("gradcam") else smooth


def _xray_rows(images: Sequence[np.ndarray], labels: Sequence[str], ncols: int, *, width: float,
               margin: float = 0.2, title_size: float = 6.5) -> tuple[Figure, np.ndarray]:
    """A grid of overlays: one row per X-ray, drawn and labelled in the first column.

    The cells are square, as wide as ``width`` allows (plus ``margin`` cells) and short
    enough for :data:`MAX_HEIGHT` with room for the colour bar; the caller fills columns 1+.
    """
    n = len(images)
    cell = min(width / (ncols + margin), (MAX_HEIGHT - 0.9) / max(n, 1))
    fig = _figure(width, cell * n + 0.9)
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        _imshow(axes[i, 0], images[i])
        axes[i, 0].set_ylabel(labels[i], fontsize=5.5)
    axes[0, 0].set_title("X-ray", fontsize=title_size)
    return fig, axes


@_styled
def attribution_overlays(images: np.ndarray, maps: Mapping[str, Mapping[str, np.ndarray]], *,
                         row_labels: Sequence[str], mask: np.ndarray | None = None, smooth: float = 1.0,
                         width: float = MAX_WIDTH) -> Figure:
    """Rows of images; the X-ray, then each network's maps on it, one column per method.

    Parameters
    ----------
    images
        (N, H, W) uint8.
    maps
        ``{network: {method: (N, H, W)}}`` (columns in this order).
    row_labels
        One short label per row (true class, predictions).
    mask
        Optional lung template drawn as a thin contour.
    smooth
        Gaussian smoothing, in pixels, of the per-pixel methods (Grad-CAM is not smoothed).
    width
        Figure width in inches; the height follows from square cells (at most :data:`MAX_HEIGHT`).

    Returns
    -------
    matplotlib.figure.Figure
        The grid and one colour bar for every overlay.
    """
    columns = [(net, method) for net, per in maps.items() for method in per]
    fig, axes = _xray_rows(images, row_labels, 1 + len(columns), width=width)
    for i in range(len(images)):
        for j, (net, method) in enumerate(columns, start=1):
            _overlay(axes[i, j], images[i], maps[net][method][i], smooth=_smooth_for(method, smooth), mask=mask)
            if i == 0:
                axes[i, j].set_title(f"network {NETWORK_LABELS.get(net, net)}\n{SHORT_LABELS.get(method, method)}",
                                     fontsize=6.5)
    _colourbar(fig, axes)
    return fig


@_styled
def gradcam_depth(images: np.ndarray, blocks: Mapping[str, Mapping[str, np.ndarray]], *,
                  row_labels: Sequence[str], width: float = MAX_WIDTH) -> Figure:
    """Grad-CAM at every block: rows ``(network, image)``, columns the X-ray then the blocks.

    Parameters
    ----------
    images
        (N, H, W) uint8, shown for every network.
    blocks
        ``{network: {block: (N, H, W)}}``.
    row_labels
        One short label per image.
    width
        Figure width in inches; the height follows from square cells (at most :data:`MAX_HEIGHT`).

    Returns
    -------
    matplotlib.figure.Figure
        The grid and one colour bar for every overlay.
    """
    rows = [(net, i) for net in blocks for i in range(len(images))]
    names = list(next(iter(blocks.values())))
    fig, axes = _xray_rows([images[i] for _, i in rows],
                           [f"network {NETWORK_LABELS.get(net, net)}\n{row_labels[i]}" for net, i in rows],
                           1 + len(names), width=width, margin=0.3, title_size=7)
    for r, (net, i) in enumerate(rows):
        for j, name in enumerate(names, start=1):
            _overlay(axes[r, j], images[i], blocks[net][name][i])
            if r == 0:
                axes[r, j].set_title(name, fontsize=7)
    _colourbar(fig, axes)
    return fig


@_styled
def block_shares(shares: pd.DataFrame, *, lung_area: float, border_area: float, width: float = MAX_WIDTH,
                 height: float = 2.4) -> Figure:
    """Share of Grad-CAM mass in the lungs and in the border frame, per block and network.

    Parameters
    ----------
    shares
        Columns ``network, block, lungs, border`` (means over the images).
    lung_area, border_area
        Area fractions of the regions: what a uniform map would give.
    width, height
        Figure size in inches (the width at most :data:`MAX_WIDTH`).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels (lungs, border), one line per network.
    """
    fig = _figure(width, height)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, region, area in zip(axes, ("lungs", "border"), (lung_area, border_area)):
        for k, (net, part) in enumerate(shares.groupby("network", sort=False)):
            ax.plot(part["block"], part[region], marker="o", label=f"network {NETWORK_LABELS.get(net, net)}",
                    color=(OKABE_ITO["purple"], OKABE_ITO["green"])[k % 2])
        ax.axhline(area, color=OKABE_ITO["grey"], linestyle="--", linewidth=1, label="uniform map (area share)")
        ax.set_title(f"Grad-CAM mass in the {'lung template' if region == 'lungs' else 'border frame'}")
        ax.set_xlabel("block (input side to output side)")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("share of positive attribution")
    axes[0].legend(loc="upper left")
    return fig


@_styled
def randomisation_curves(table: pd.DataFrame, *, width: float = MAX_WIDTH, height: float = 2.5) -> Figure:
    """Cascading randomisation: mean rank correlation with the trained maps per stage.

    Parameters
    ----------
    table
        The ``randomisation`` table (``network, method, stage, randomised, rho``).
    width, height
        Figure size in inches (the width at most :data:`MAX_WIDTH`).

    Returns
    -------
    matplotlib.figure.Figure
        One panel per network, one line per method with its min-max range shaded.
    """
    networks = list(dict.fromkeys(table["network"]))
    fig = _figure(width, height)
    axes = fig.subplots(1, len(networks), sharey=True, squeeze=False)[0]
    for ax, net in zip(axes, networks):
        part = table[table["network"] == net]
        stages = part.drop_duplicates("stage").sort_values("stage")
        for method, rows in part.groupby("method", sort=False):
            g = rows.groupby("stage")["rho"]
            mean, low, high = g.mean(), g.min(), g.max()
            ax.plot(mean.index, mean.values, marker="o", color=METHOD_COLOURS.get(method),
                    label=METHOD_LABELS.get(method, method))
            ax.fill_between(mean.index, low.values, high.values, color=METHOD_COLOURS.get(method), alpha=0.12)
        labels = ["head" if s == 1 else ("all" if r == "all layers" else "+" + r.split("+")[-1])
                  for s, r in zip(stages["stage"], stages["randomised"])]
        ax.set_xticks(stages["stage"], labels, fontsize=6.5)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"network {NETWORK_LABELS.get(net, net)}")
        ax.set_xlabel("layers re-initialised (cumulative, from the top)")
    axes[0].set_ylabel("Spearman rho, trained vs random")
    axes[0].set_ylim(-0.5, 1.05)
    axes[0].legend(loc="upper right")
    return fig


@_styled
def randomisation_maps(images: np.ndarray, trained: Mapping[str, np.ndarray], randomised: Mapping[str, np.ndarray],
                       *, row_labels: Sequence[str], smooth: float = 1.0, width: float = MAX_WIDTH) -> Figure:
    """Trained versus fully randomised maps, side by side per method (rows: images).

    Parameters
    ----------
    images
        (N, H, W) uint8.
    trained, randomised
        ``{method: (N, H, W)}`` of the trained and of the fully re-initialised network.
    row_labels
        One short label per row.
    smooth
        Gaussian smoothing, in pixels, of the per-pixel methods (Grad-CAM is not smoothed).
    width
        Figure width in inches; the height follows from square cells (at most :data:`MAX_HEIGHT`).

    Returns
    -------
    matplotlib.figure.Figure
        The grid and one colour bar for every overlay.
    """
    methods = list(trained)
    fig, axes = _xray_rows(images, row_labels, 1 + 2 * len(methods), width=width)
    for i in range(len(images)):
        for k, method in enumerate(methods):
            for j, (kind, maps) in enumerate((("trained", trained), ("random", randomised))):
                ax = axes[i, 1 + 2 * k + j]
                _overlay(ax, images[i], maps[method][i], smooth=_smooth_for(method, smooth))
                if i == 0:
                    ax.set_title(f"{SHORT_LABELS.get(method, method)}\n{kind}", fontsize=6.5)
    _colourbar(fig, axes)
    return fig


@_styled
def perturbation_curves(curves: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], *, width: float = MAX_WIDTH,
                        height: float = 4.2) -> Figure:
    """Mean deletion and insertion curves per method (rows: networks).

    Parameters
    ----------
    curves
        ``{network: {method: {"deletion": (N, S+1), "insertion": (N, S+1)}}}``.
    width, height
        Figure size in inches (the width at most :data:`MAX_WIDTH`).

    Returns
    -------
    matplotlib.figure.Figure
        Deletion (left) and insertion (right) panels per network.
    """
    fig = _figure(width, height)
    axes = fig.subplots(len(curves), 2, sharex=True, sharey=True, squeeze=False)
    for r, (net, per) in enumerate(curves.items()):
        for c, kind in enumerate(("deletion", "insertion")):
            ax = axes[r, c]
            for method, cs in per.items():
                values = np.asarray(cs[kind])
                x = np.linspace(0, 1, values.shape[1])
                ax.plot(x, values.mean(0), color=METHOD_COLOURS.get(method),
                        linestyle="--" if method == "random" else "-", label=METHOD_LABELS.get(method, method))
            ax.set_title(f"network {NETWORK_LABELS.get(net, net)}: {kind}")
            if r == len(curves) - 1:
                ax.set_xlabel(f"share of pixels {'removed' if kind == 'deletion' else 'inserted'}")
        axes[r, 0].set_ylabel("p(explained class)")
    axes[0, 0].set_ylim(0, 1)
    axes[0, 1].legend(loc="lower right")
    return fig


@_styled
def lung_template(mean_image: np.ndarray, lung_mask: np.ndarray, border_mask: np.ndarray,
                  examples: Sequence[np.ndarray] = (), *, width: float = MAX_WIDTH) -> Figure:
    """The lung template and border frame on the mean training image and on examples.

    Parameters
    ----------
    mean_image
        (H, W) mean training image, on the 0-255 scale.
    lung_mask, border_mask
        (H, W) boolean masks, drawn as contours.
    examples
        Further (H, W) images, one panel each.
    width
        Figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure
        One row of panels.
    """
    panels = [mean_image, *examples]
    cell = min(width / (len(panels) + 0.1), 2.6)
    fig = _figure(width, cell + 0.35)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for k, (ax, image) in enumerate(zip(axes, panels)):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        _hide_image_axes(ax)
        ax.contour(lung_mask.astype(float), levels=[0.5], colors=[OKABE_ITO["sky"]], linewidths=1.0)
        ax.contour(border_mask.astype(float), levels=[0.5], colors=[OKABE_ITO["yellow"]], linewidths=0.8)
        ax.set_title("mean training image" if k == 0 else f"test image {k}", fontsize=7)
    return fig


@_styled
def first_layer_filters(filters: np.ndarray, *, width: float = MAX_WIDTH) -> Figure:
    """The first convolution's 3x3 kernels, one grey square each (symmetric scale around 0).

    Parameters
    ----------
    filters
        (C, 3, 3) kernels, 16 a row.
    width
        Figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure
        The kernels, each titled with its channel.
    """
    n = len(filters)
    ncols = min(n, 16)
    nrows = int(np.ceil(n / ncols))
    cell = width / (ncols + 0.5)
    fig = _figure(width, cell * nrows + 0.35)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    top = float(np.abs(filters).max()) or 1.0
    for k, ax in enumerate(axes.flat[:n]):
        _hide_image_axes(ax)
        ax.imshow(filters[k], cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
        ax.set_title(str(k), fontsize=6)
    _hide_unused(axes, n)
    return fig


@_styled
def feature_visualisation(images: Mapping[str, np.ndarray], channels: Mapping[str, Sequence[int]], *,
                          width: float = MAX_WIDTH) -> Figure:
    """Activation-maximisation images (contrast-stretched): rows are blocks, columns the channels.

    Parameters
    ----------
    images
        ``{block: [(H, W) image per channel]}``.
    channels
        ``{block: [channel index per image]}``, for the titles.
    width
        Largest figure width in inches (cells are at most 1.6 in).

    Returns
    -------
    matplotlib.figure.Figure
        The grid of images.
    """
    blocks = list(images)
    ncols = max(len(images[b]) for b in blocks)
    cell = min(width / (ncols + 0.3), (MAX_HEIGHT - 0.3) / len(blocks), 1.6)
    fig = _figure(cell * (ncols + 0.3), cell * len(blocks) + 0.2)
    axes = fig.subplots(len(blocks), ncols, squeeze=False)
    for r, block in enumerate(blocks):
        for c, image in enumerate(images[block]):
            ax = axes[r, c]
            # Contrast stretched per image (1st-99th percentile): the pattern, not its level.
            image = np.asarray(image, np.float64)
            low, high = np.percentile(image, [1, 99])
            ax.imshow(np.clip((image - low) / max(high - low, 1e-9), 0, 1), cmap="gray", vmin=0, vmax=1)
            _hide_image_axes(ax)
            ax.set_title(f"{block} ch {channels[block][c]}", fontsize=6.5)
        _hide_unused(axes[r], len(images[block]))
    return fig


@_styled
def top_patches(patches: Mapping[str, np.ndarray], channels: Mapping[str, Sequence[int]], *,
                width: float = MAX_WIDTH) -> Figure:
    """The most exciting training patches: rows are blocks, groups of columns the channels.

    Parameters
    ----------
    patches
        ``{block: (C, k, P, P) uint8}``: the top ``k`` patches of each of ``C`` channels.
    channels
        ``{block: [channel index]}``, for the titles.
    width
        Figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure
        The patches, each group titled with its block and channel.
    """
    blocks = list(patches)
    n_channels = max(p.shape[0] for p in patches.values())
    k = max(p.shape[1] for p in patches.values())
    ncols = n_channels * k
    cell = min(width / (ncols + 0.5), (MAX_HEIGHT - 0.3) / len(blocks))
    fig = _figure(width, cell * len(blocks) + 0.45)
    grid = fig.add_gridspec(len(blocks), n_channels, wspace=0.08)
    for r, block in enumerate(blocks):
        for c in range(patches[block].shape[0]):
            sub = grid[r, c].subgridspec(1, k, wspace=0.03)
            for j in range(patches[block].shape[1]):
                ax = fig.add_subplot(sub[0, j])
                _imshow(ax, patches[block][c, j])
                if j == 0:
                    ax.set_title(f"{block} ch {channels[block][c]}", fontsize=6, loc="left")
    return fig


@_styled
def class_channel_patches(patches: np.ndarray, table: pd.DataFrame, *, width: float = MAX_WIDTH) -> Figure:
    """For each class, its most separating last-block channels and their top training patches.

    Parameters
    ----------
    patches
        (R, k, P, P) uint8, one row per row of ``table``.
    table
        The ``class_channels`` table (``class, channel, d``).
    width
        Largest figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure
        One row of patches per channel, labelled in its class colour.
    """
    rows, k = patches.shape[:2]
    cell = min(width / (k + 1.6), (MAX_HEIGHT - 0.2) / max(rows, 1))
    fig = _figure(cell * (k + 0.9), cell * rows + 0.2)
    axes = fig.subplots(rows, k, squeeze=False)
    for r in range(rows):
        cls, ch, d = table["class"].iloc[r], int(table["channel"].iloc[r]), float(table["d"].iloc[r])
        for j in range(k):
            _imshow(axes[r, j], patches[r, j])
        axes[r, 0].set_ylabel(f"{cls}\nch {ch}, d={d:.1f}", fontsize=6.5, color=class_colour(cls))
    return fig
