"""Layers and neurons: what single channels of the VGG network respond to.

* :func:`channel_statistics`: one pass over training images with hooks on every block's
  rectified output, keeping per image and channel the mean activation, the maximum and
  where it occurs (not the maps themselves: 256 images x 16 channels x 128^2 would be
  hundreds of MB);
* :func:`top_patches`: the input patches (one receptive field) around those maxima, for the
  images that excite a channel most;
* :func:`activation_maximisation`: an input optimised to excite a channel (Olah et al. 2017),
  regularised by random jitter, periodic Gaussian blur and an L2 decay, from a seeded start;
* :func:`first_layer_filters`: the 3x3 kernels of the first convolution;
* :func:`class_separating_channels`: last-block channels whose mean activation differs most
  between one class and the others (standardised mean difference, Cohen's d).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from pneumo.explain.attribution import _Capture, block_layers, eval_mode
from pneumo.imaging import gaussian_blur
from pneumo.imaging import BLACK, PIXEL_MEAN, PIXEL_STD, from_model_input, to_model_input

__all__ = ["receptive_fields", "channel_statistics", "top_patches", "activation_maximisation",
           "first_layer_filters", "class_separating_channels"]


def receptive_fields(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{block: (size, stride)}`` of each block's rectified output (before its pooling).

    The theoretical receptive field: a 3x3 convolution widens it by 2 input steps, a 2x2
    max-pooling by 1 step and doubles the step.
    """
    size, jump, out = 1, 1, {}
    for name, block in model.blocks.named_children():
        for layer in block.children():
            if isinstance(layer, nn.Conv2d):
                size += (layer.kernel_size[0] - 1) * jump
        out[name] = (size, jump)
        size += jump  # the block's 2x2 max-pooling
        jump *= 2
    return out


@torch.no_grad()
def channel_statistics(model: nn.Module, images: np.ndarray, *, device: torch.device,
                       batch_size: int = 64, progress: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Per block: ``mean``, ``max`` (N, C) and ``argmax`` (N, C) flat position on the block grid.

    Parameters
    ----------
    images
        uint8 (N, H, W) images.
    """
    layers = block_layers(model)
    parts: dict[str, dict[str, list]] = {name: {"mean": [], "max": [], "argmax": []} for name in layers}
    starts = range(0, len(images), batch_size)
    with eval_mode(model), _Capture(layers) as capture:
        for i in tqdm(starts, desc="channel statistics", disable=not progress):
            x = to_model_input(torch.as_tensor(images[i:i + batch_size]).to(device))
            model(x)
            for name in layers:
                a = capture.outputs[name].float().flatten(2)  # (b, C, h * w)
                best, where = a.max(2)
                parts[name]["mean"].append(a.mean(2).cpu())
                parts[name]["max"].append(best.cpu())
                parts[name]["argmax"].append(where.cpu())
            capture.outputs.clear()
    out = {}
    for name, p in parts.items():
        out[name] = {k: torch.cat(v).numpy() for k, v in p.items()}
    return out


def top_patches(images: np.ndarray, stats: dict[str, np.ndarray], channel: int, *, grid: int,
                field: int, stride: int, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` input patches that excite ``channel`` most (one per image).

    Parameters
    ----------
    images
        uint8 (N, H, W): the images the statistics were computed on.
    stats
        One block's :func:`channel_statistics` entry.
    grid
        Side of that block's activation grid.
    field, stride
        Its receptive field and step in input pixels (:func:`receptive_fields`).

    Returns
    -------
    patches : numpy.ndarray
        uint8 (k, P, P), ``P = min(field, H)``, zero-padded at the image edges.
    indices : numpy.ndarray
        (k,) the images they come from.
    """
    H, W = images.shape[1:]
    P = min(field, H)
    best = np.argsort(-stats["max"][:, channel], kind="stable")[:k]
    padded = np.pad(images[best], ((0, 0), (P, P), (P, P)))
    out = np.zeros((len(best), P, P), dtype=np.uint8)
    for j, n in enumerate(best):
        r, c = divmod(int(stats["argmax"][n, channel]), grid)
        # Centre of the grid cell in input pixels, then the patch around it.
        cy, cx = int((r + 0.5) * stride), int((c + 0.5) * stride)
        top, left = cy - P // 2 + P, cx - P // 2 + P
        out[j] = padded[j, top:top + P, left:left + P]
    return out, best


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of the image being optimised (radius 2.5 sigma: a light regulariser)."""
    return gaussian_blur(x, sigma, radius=max(1, int(math.ceil(2.5 * sigma))))


def activation_maximisation(model: nn.Module, block: str, channels: Sequence[int], *, size: int,
                            steps: int = 64, lr: float = 0.05, jitter: int = 4, blur_every: int = 4,
                            blur_sigma: float = 0.8, decay: float = 1e-3, random_state: int = 0,
                            device: torch.device | str = "cpu") -> np.ndarray:
    """Inputs that excite the given channels of a block, one image per channel.

    Parameters
    ----------
    model
        The VGG network; not modified (gradients go to the image only).
    block
        ``"block1"`` ...
    channels
        Channel indices of that block's rectified output.
    size
        Side of the optimised image (the model's resolution).
    steps, lr
        Adam steps and learning rate on the image (model units).
    jitter
        Each step shifts the image by up to this many pixels (random roll), so the result
        must excite the channel at several positions and high-frequency tricks are
        discouraged.
    blur_every, blur_sigma
        Every ``blur_every`` steps the image is smoothed by a Gaussian (pixels).
    decay
        L2 penalty on the image (keeps it near mid-grey).
    random_state
        Seed of the start image and of the jitter.

    Returns
    -------
    numpy.ndarray
        uint8 (len(channels), size, size) images.
    """
    layers = block_layers(model)
    layer = {block: layers[block]}
    generator = torch.Generator().manual_seed(random_state)
    n = len(channels)
    x = (0.1 * torch.randn(n, 1, size, size, generator=generator)).to(device).requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=lr)
    index = torch.as_tensor(list(channels), device=device)
    shifts = torch.randint(-jitter, jitter + 1, (steps, 2), generator=generator).tolist()
    # Only the blocks up to the target one run (the rest of the network cannot matter).
    upto = nn.Sequential(*list(model.blocks.children())[:list(layers).index(block) + 1])
    low, high = BLACK, (1.0 - PIXEL_MEAN) / PIXEL_STD
    with eval_mode(model), _Capture(layer) as capture, torch.enable_grad():
        for step, (dy, dx) in enumerate(shifts):
            upto(torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
            a = capture.outputs[block]  # (n, C, h, w)
            act = a[torch.arange(n, device=a.device), index].mean(dim=(1, 2))  # (n,)
            loss = -act.sum() + decay * x.pow(2).sum() / (size * size)
            (grad,) = torch.autograd.grad(loss, [x])  # the network's parameters get no .grad
            optimiser.zero_grad()
            x.grad = grad
            optimiser.step()
            with torch.no_grad():
                if blur_every and (step + 1) % blur_every == 0:
                    x.copy_(_blur(x, blur_sigma))
                x.clamp_(low, high)
            capture.outputs.clear()
    return from_model_input(x.detach()).cpu().numpy()[:, 0]


def first_layer_filters(model: nn.Module) -> np.ndarray:
    """The first convolution's kernels as (C_out, kh, kw) floats (grey input: one per channel)."""
    conv = next(iter(model.conv_layers().values()))
    return conv.weight.detach().cpu().numpy()[:, 0]


def class_separating_channels(features: np.ndarray, labels: np.ndarray, classes: Sequence[str], *,
                              k: int = 3) -> pd.DataFrame:
    """The last-block channels that separate each class from the others most.

    Parameters
    ----------
    features
        (N, C) mean activation of each channel per image (the network's pooled embedding).
    labels
        (N,) class indices into ``classes``.
    k
        Channels kept per class.

    Returns
    -------
    pandas.DataFrame
        One row per (class, channel): ``class, rank, channel, mean_in, mean_out, d`` where
        ``d = (mean_in - mean_out) / pooled sd`` (Cohen's d, positive: the channel fires more
        for that class), ranked by ``d``.
    """
    rows = []
    for c, name in enumerate(classes):
        inside, outside = features[labels == c], features[labels != c]
        if len(inside) < 2 or len(outside) < 2:
            continue
        pooled = np.sqrt(((len(inside) - 1) * inside.var(0, ddof=1) + (len(outside) - 1) * outside.var(0, ddof=1))
                         / (len(inside) + len(outside) - 2))
        d = (inside.mean(0) - outside.mean(0)) / np.maximum(pooled, 1e-8)
        for rank, ch in enumerate(np.argsort(-d, kind="stable")[:k], start=1):
            rows.append({"class": name, "rank": rank, "channel": int(ch), "mean_in": float(inside[:, ch].mean()),
                         "mean_out": float(outside[:, ch].mean()), "d": float(d[ch])})
    return pd.DataFrame(rows)
