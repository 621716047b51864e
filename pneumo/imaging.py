"""Small image operations shared by several tasks (torch, batched, on any device)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_kernel", "gaussian_blur"]


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
