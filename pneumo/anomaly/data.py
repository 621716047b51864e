"""The autoencoders' images: shrinking, the normal-only training set, and input corruption.

:func:`normal_images` is the only way images reach training in Task 3 (it refuses anything
that is not normal); :func:`corrupt` makes the input of the denoising and masked variants.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor


def shrink(images: np.ndarray, side: int) -> np.ndarray:
    """Shrink square images to ``side`` pixels.

    Parameters
    ----------
    images
        uint8 (N, H, W), H == W.
    side
        Output side in pixels.

    Returns
    -------
    numpy.ndarray
        uint8 (N, side, side): area averaging when ``side`` divides H, antialiased bilinear
        otherwise; ``images`` itself when it is already that size.
    """
    if images.shape[-1] == side:
        return images
    out = []
    for i in range(0, len(images), 512):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + 512])).float().unsqueeze(1)  # (b, 1, H, W)
        if images.shape[-1] % side == 0:
            y = F.interpolate(x, size=(side, side), mode="area")
        else:
            y = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8)[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, side, side), np.uint8)


def normal_images(images: np.ndarray, rows: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The normal images of a split: the only images an autoencoder is trained or stopped on.

    Parameters
    ----------
    images
        (N, H, W) images of the split.
    rows
        Their N rows of the data set's table (``label``, ``binary``, ...).

    Returns
    -------
    images : numpy.ndarray
        The normal images, in order.
    rows : pandas.DataFrame
        Their rows, with a fresh index.

    Raises
    ------
    ValueError
        When the result would hold a non-normal image (it cannot, by construction; the check
        makes the guarantee explicit).
    """
    mask = (rows["label"] == "normal").to_numpy()
    kept, kept_rows = images[mask], rows[mask].reset_index(drop=True)
    if (kept_rows["label"] != "normal").any() or (kept_rows["binary"] != 0).any():
        raise ValueError("a pneumonia image would reach the autoencoder's training data")
    return kept, kept_rows


def corrupt(x: Tensor, kind: str, generator: torch.Generator, *, noise_std: float = 0.5,
            mask_fraction: float = 0.25, cells: int = 8) -> Tensor:
    """The corrupted input of a denoising or masked autoencoder (the target stays ``x``).

    Parameters
    ----------
    x
        (B, 1, H, W) normalised input.
    kind
        ``"none"``, ``"noise"`` (additive Gaussian noise of std ``noise_std``) or ``"mask"``
        (each cell of a ``cells`` x ``cells`` grid set to 0, mid-grey, with probability
        ``mask_fraction``: the network must in-paint normal anatomy from its context).
    generator
        The random generator of the noise or mask (on ``x``'s device).
    noise_std, mask_fraction, cells
        As described under ``kind``.

    Returns
    -------
    Tensor
        (B, 1, H, W): ``x`` itself for ``"none"``, else a corrupted copy.

    Raises
    ------
    ValueError
        For an unknown ``kind``.
    """
    if kind == "none":
        return x
    if kind == "noise":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + noise_std * noise
    if kind == "mask":
        B, _, H, W = x.shape
        hit = torch.rand(B, 1, cells, cells, generator=generator, device=x.device) < mask_fraction
        hit = F.interpolate(hit.float(), size=(H, W), mode="nearest")  # (B, 1, H, W) in {0, 1}
        return x * (1 - hit)
    raise ValueError(f"unknown corruption {kind!r}")
