"""Pixel conventions and small image operations shared by every task.

The one place that says how a uint8 X-ray becomes a network's input (:func:`to_model_input`)
and back; models, training, anomaly detection and explanations import it from here. The
other operations (blur, per-image intensity normalisation) work on batches, with torch on
any device or with numpy.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PIXEL_MEAN", "PIXEL_STD", "BLACK", "WHITE", "to_model_input", "from_model_input", "as_uint8_tensor",
           "gaussian_kernel", "gaussian_blur", "equalize_histogram", "stretch_contrast", "normalise_intensity",
           "INTENSITY_MODES"]

# Fixed input normalisation, x = (p / 255 - PIXEL_MEAN) / PIXEL_STD, mapping [0, 255] to
# [-2, 2].  It is a constant rather than a statistic of the training set, so it cannot leak
# anything between splits and is identical for every model; X-rays have mean intensity
# around 0.5 and spread around 0.25, so the input is roughly zero-mean and unit-scale.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25
BLACK = (0.0 - PIXEL_MEAN) / PIXEL_STD  # normalised value of pixel 0 (-2.0)
WHITE = (1.0 - PIXEL_MEAN) / PIXEL_STD  # normalised value of pixel 255 (+2.0)


def to_model_input(images_uint8: Tensor) -> Tensor:
    """Convert uint8 images to the network's normalised float input.

    Parameters
    ----------
    images_uint8
        (B, H, W) or (B, 1, H, W) uint8 tensor on any device.

    Returns
    -------
    Tensor
        (B, 1, H, W) float32 on the same device, ``(p / 255 - 0.5) / 0.25`` in [-2, 2]
        (see ``PIXEL_MEAN``/``PIXEL_STD``); the memory format (channels_last) is kept.
    """
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"to_model_input expects uint8 images, got {images_uint8.dtype}")
    if images_uint8.ndim == 3:
        images_uint8 = images_uint8.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
    if images_uint8.ndim != 4 or images_uint8.shape[1] != 1:
        raise ValueError(f"expected (B, H, W) or (B, 1, H, W) images, got {tuple(images_uint8.shape)}")
    # One fused multiply-add: p * (1 / (255 * std)) - mean / std.
    return images_uint8.float().mul_(1.0 / (255.0 * PIXEL_STD)).sub_(PIXEL_MEAN / PIXEL_STD)


def from_model_input(x: Tensor) -> Tensor:
    """Inverse of :func:`to_model_input`, for display: (B, 1, H, W) float -> uint8 in [0, 255].

    Values outside the uint8 range (possible after augmentation) are clipped.
    """
    p = (x.detach().float() * PIXEL_STD + PIXEL_MEAN) * 255.0
    return p.round_().clamp_(0, 255).to(torch.uint8)


def as_uint8_tensor(images, device: torch.device,
                    memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """numpy/tensor uint8 (N, H, W) or (N, 1, H, W) -> uint8 tensor (N, 1, H, W) on ``device``,
    in ``memory_format`` (see :func:`pneumo.device.memory_format`)."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (raw pixels), got {t.dtype}")
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"images must be (N, H, W) or (N, 1, H, W), got {tuple(t.shape)}")
    t = t.to(device)
    return t.contiguous(memory_format=memory_format)


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
