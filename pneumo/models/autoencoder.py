"""Task 3's network: a convolutional autoencoder with a dense bottleneck, and its rebuilding.

:class:`ConvAutoencoder` is the network (its docstring lists the layers),
:func:`build_autoencoder` rebuilds one from a saved config (the memory layout it runs in
on a device is :func:`pneumo.device.memory_format`, shared with every network).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class ConvAutoencoder(nn.Module):
    """A convolutional autoencoder with a dense bottleneck; ``forward`` returns ``{"z", "out"}``.

    Encoder: ``depth`` blocks of [3x3 conv, BN, LeakyReLU, 4x4 stride-2 conv, BN, LeakyReLU],
    channels ``width * 2**i``, then a linear map of the (C, s, s) feature map to ``latent``
    numbers. The decoder mirrors it with blocks of [4x4 stride-2 transposed conv, BN, ReLU,
    3x3 conv, BN, ReLU] (the last block without the 3x3 conv, which would be the costliest
    layer at full resolution) and ends with a linear 3x3 convolution, so the output lives in the same normalised units as the input
    (:func:`pneumo.imaging.to_model_input`, pixel 0..255 -> -2..2).

    Parameters
    ----------
    resolution
        Input side; must be divisible by ``2**depth``.
    width, depth, latent
        Channels of the first block, number of blocks, bottleneck size.
    """

    def __init__(self, resolution: int = 64, width: int = 16, depth: int = 4, latent: int = 64):
        super().__init__()
        if resolution % 2**depth:
            raise ValueError(f"resolution {resolution} must be divisible by 2**depth = {2**depth}")
        self.resolution, self.width, self.depth, self.latent = resolution, width, depth, latent
        channels = [width * 2**i for i in range(depth)]
        self.side = resolution // 2**depth
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
                       nn.Conv2d(c, c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                       nn.LeakyReLU(0.2)]
            c_in = c
        self.encoder = nn.Sequential(*layers)
        flat = channels[-1] * self.side**2
        self.to_z = nn.Linear(flat, latent)
        self.from_z = nn.Linear(latent, flat)
        layers = []
        for i in reversed(range(depth)):
            c, c_out = channels[i], channels[max(i - 1, 0)]
            layers += [nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU()]
            if i > 0:  # no extra 3x3 conv at full resolution: the costliest layer, little gain
                layers += [nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.Conv2d(channels[0], 1, 3, padding=1)]
        self.decoder = nn.Sequential(*layers)

    def encode(self, x: Tensor) -> Tensor:
        """(B, 1, H, W) normalised input -> (B, latent) code."""
        return self.to_z(self.encoder(x).flatten(1))

    def encoder_features(self, x: Tensor) -> Tensor:
        """Per-channel mean and standard deviation of every encoder block's output.

        (B, 1, H, W) -> (B, 2 * sum of the block channels): a texture summary at every scale,
        for the feature-space Mahalanobis score (no reconstruction involved).
        """
        pooled, h = [], x
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if i % 6 == 5:  # the end of a block: [conv, BN, act, conv, BN, act]
                pooled += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        return torch.cat(pooled, dim=1)

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent) code -> (B, 1, H, W) reconstruction in normalised units."""
        h = self.from_z(z).view(z.shape[0], -1, self.side, self.side)  # (B, C, s, s)
        return self.decoder(h)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.encode(x)
        return {"z": z, "out": self.decode(z)}


def build_autoencoder(config: dict[str, Any]) -> ConvAutoencoder:
    """The autoencoder described by a saved config.

    Parameters
    ----------
    config
        A mapping with ``resolution``, ``width``, ``depth`` and ``latent`` (other keys are
        ignored), such as the config saved with Task 3's chosen model.

    Returns
    -------
    ConvAutoencoder
        A freshly initialised network of that shape.
    """
    return ConvAutoencoder(int(config["resolution"]), int(config["width"]), int(config["depth"]),
                           int(config["latent"]))

