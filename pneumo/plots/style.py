"""The report's figure style, shared by every figure module of :mod:`pneumo.plots`.

Okabe-Ito colours (safe for the common colour-vision deficiencies), one fixed colour per
class in every figure, small fonts for a 6.3-inch text width, and sizes that fit an A4 page
(no figure is wider than :data:`MAX_WIDTH` inches). Figures are built as
:class:`matplotlib.figure.Figure` directly, never through ``pyplot``: nothing is shown twice
in a notebook, nothing leaks between cells and no display is needed.

The helpers with a leading underscore serve the sibling figure modules only.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

__all__ = ["OKABE_ITO", "CLASS_COLOURS", "SPLIT_COLOURS", "MAX_WIDTH", "STYLE", "class_colour", "use_style"]

#: Okabe-Ito palette (Okabe & Ito 2008), distinguishable with the common colour-vision
#: deficiencies and in grey print.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#999999",
}

#: One colour per class, the same in every figure of the report.
CLASS_COLOURS: dict[str, str] = {
    "normal": OKABE_ITO["blue"],
    "bacterial": OKABE_ITO["vermillion"],
    "viral": OKABE_ITO["green"],
    "pneumonia": OKABE_ITO["purple"],  # the binary task's positive class
    "bacterial vs viral": OKABE_ITO["orange"],
    "normal vs pneumonia": OKABE_ITO["purple"],
}

#: Colours of the data splits (learning curves, split comparisons).
SPLIT_COLOURS: dict[str, str] = {
    "train": OKABE_ITO["orange"],
    "val": OKABE_ITO["blue"],
    "test": OKABE_ITO["black"],
}

#: Widest figure, in inches: A4 with 2 cm side margins leaves 6.7 in of text width.
MAX_WIDTH = 6.3

_FALLBACK = [OKABE_ITO[k] for k in ("orange", "sky", "yellow", "black", "grey")]

#: The matplotlib rc settings every figure is built in.
STYLE: dict[str, Any] = {
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.5,
    "image.cmap": "gray",
    "axes.prop_cycle": mpl.cycler(color=[OKABE_ITO[k] for k in
                                         ("blue", "vermillion", "green", "orange", "purple", "sky", "black")]),
}


def class_colour(name: str, index: int = 0) -> str:
    """The fixed colour of a class (or curve) name.

    Parameters
    ----------
    name
        Class or curve name, matched case-insensitively against :data:`CLASS_COLOURS`.
    index
        Position of the name among its figure's curves: picks a palette colour for a name
        without a fixed colour.

    Returns
    -------
    str
        Hex colour.
    """
    return CLASS_COLOURS.get(str(name).lower(), _FALLBACK[index % len(_FALLBACK)])


@contextlib.contextmanager
def use_style() -> Iterator[None]:
    """The report's matplotlib style as a context manager, for ad-hoc figures.

    Yields
    ------
    None
        Figures built inside the ``with`` block use :data:`STYLE`.
    """
    with mpl.rc_context(STYLE):
        yield


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure inside the shared style (text sizes are fixed when artists are made)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> Figure:
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float, **kwargs) -> Figure:
    """A constrained-layout figure no wider than :data:`MAX_WIDTH`."""
    width = min(float(width), MAX_WIDTH)
    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def _hide_image_axes(ax) -> None:
    """No ticks, grid or frame: the axes shows an image only."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _hide_unused(axes, used: int) -> None:
    """Hide the cells of a grid after the first ``used`` (row by row): they have nothing to show."""
    for ax in np.ravel(axes)[used:]:
        ax.set_visible(False)


def _as_grey(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1) image -> (H, W) for imshow."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise ValueError(f"expected a grey image (H, W), got shape {image.shape}")
    return image


def _imshow(ax, image: np.ndarray) -> None:
    """A grey image on a bare axes; uint8 on the full 0-255 scale, floats stretched."""
    image = _as_grey(image)
    if image.dtype == np.uint8:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
    else:
        ax.imshow(image, cmap="gray", interpolation="antialiased")
    _hide_image_axes(ax)
