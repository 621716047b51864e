"""Small image operations shared by several tasks (batched; torch on any device, or numpy)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_kernel", "gaussian_blur", "equalize_histogram", "stretch_contrast", "normalise_intensity",
           "INTENSITY_MODES"]

#: Per-image intensity normalisations of :func:`normalise_intensity`.
INTENSITY_MODES = ("none", "stretch", "equalize")


def gaussian_kernel(sigma: float, radius: Optional[int] = None) -> Tensor:
    """1-D normalised Gaussian kernel of ``2 * radius + 1`` taps (default radius ~ 3 sigma)."""
    radius = max(1, int(math.ceil(3 * sigma))) if radius is None else radius
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float, radius: Optional[int] = None) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding (same size out)."""
    k = gaussian_kernel(sigma, radius).to(x.device, x.dtype)
    r = (k.numel() - 1) // 2
    C = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def equalize_histogram(images: np.ndarray) -> np.ndarray:
    """Per-image histogram equalisation of uint8 (N, H, W) images (same shape and dtype).

    Each grey level ``v`` of an image maps to ``255 * (cdf(v) - cdf_min) / (n - cdf_min)``, its
    image's cumulative histogram: equal grey levels stay equal, order is kept, and the result
    no longer depends on the exposure (any increasing remapping of an image's grey levels gives
    the same output). Parameter-free and per image, so nothing is fitted on any split.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"equalize_histogram expects uint8 images, got {images.dtype}")
    flat = images.reshape(len(images), -1)  # (N, H*W)
    out = np.empty_like(flat)
    for i, pixels in enumerate(flat):
        cdf = np.bincount(pixels, minlength=256).cumsum()  # (256,)
        lowest = cdf[pixels.min()]
        span = max(int(cdf[-1] - lowest), 1)  # a constant image maps to 0
        lut = np.clip(np.round((cdf - lowest) * (255.0 / span)), 0, 255).astype(np.uint8)
        out[i] = lut[pixels]
    return out.reshape(images.shape)


def stretch_contrast(images: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Per-image linear contrast stretch of uint8 (N, H, W): the ``low`` / ``high`` percentiles
    of each image map to 0 / 255 (clipped beyond)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"stretch_contrast expects uint8 images, got {images.dtype}")
    x = images.astype(np.float32)
    lo = np.percentile(x, low, axis=(1, 2), keepdims=True)  # (N, 1, 1)
    hi = np.percentile(x, high, axis=(1, 2), keepdims=True)
    x = (x - lo) * (255.0 / np.maximum(hi - lo, 1.0))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def normalise_intensity(images: np.ndarray, mode: str) -> np.ndarray:
    """Apply one of :data:`INTENSITY_MODES` to uint8 (N, H, W) images."""
    if mode == "none":
        return images
    if mode == "stretch":
        return stretch_contrast(images)
    if mode == "equalize":
        return equalize_histogram(images)
    raise ValueError(f"unknown intensity normalisation {mode!r}; expected one of {INTENSITY_MODES}")
