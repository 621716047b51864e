"""Training one autoencoder: the reconstruction loss, through the shared loop :func:`pneumo.training.fit`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pneumo.anomaly.data import corrupt
from pneumo.device import INFERENCE_BATCH, autocast, memory_format
from pneumo.imaging import to_model_input
from pneumo.models import ConvAutoencoder
from pneumo.training import TrainResult, fit


def train_autoencoder(
    model: ConvAutoencoder,
    train_images: np.ndarray,
    val_images: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-5,
    patience: int = 6,
    corruption: str = "none",
    noise_std: float = 0.5,
    mask_fraction: float = 0.25,
    augment: bool = True,
    device: torch.device,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train an autoencoder to reconstruct ``train_images``; keep the epoch with the lowest
    validation reconstruction loss.

    Loss: mean squared error between the output and the clean (augmented) input; the input
    fed to the network is corrupted first for the denoising and masked variants. The loop is
    :func:`pneumo.training.fit` (AdamW, cosine decay without warm-up, early stopping after
    ``patience`` epochs without a lower validation loss, Ctrl-C returns the best state so far
    with ``interrupted=True``).

    Parameters
    ----------
    model
        The autoencoder, trained in place.
    train_images, val_images
        uint8 (N, H, W) at the model's resolution; callers pass normal images only
        (:func:`pneumo.anomaly.data.normal_images`).
    epochs, batch_size, lr, weight_decay, patience, augment, seed, progress
        As for :func:`pneumo.training.fit`.
    corruption, noise_std, mask_fraction
        The input corruption (:func:`pneumo.anomaly.data.corrupt`).
    device
        Where to train.

    Returns
    -------
    pneumo.training.TrainResult
        History (with ``val_loss``), best epoch and its state, time taken.
    """
    x_val = torch.as_tensor(val_images, device=device).unsqueeze(1)  # (N_val, 1, H, W) uint8

    def batch_loss(model: nn.Module, x: Tensor, idx: Tensor, generator: torch.Generator):
        corrupted = corrupt(x, corruption, generator, noise_std=noise_std, mask_fraction=mask_fraction)
        with autocast(device):
            out = model(corrupted)["out"]  # (B, 1, H, W)
        return F.mse_loss(out.float(), x), {}

    return fit(model, train_images, batch_loss,
               lambda m: {"val_loss": float(_reconstruction_loss(m, x_val, device))},
               select_metric="val_loss", epochs=epochs, batch_size=batch_size, lr=lr,
               weight_decay=weight_decay, warmup_epochs=0, patience=patience, augment=augment,
               device=device, seed=seed, progress=progress, description=f"corruption={corruption}")


@torch.no_grad()
def _reconstruction_loss(model: nn.Module, x_uint8: Tensor, device: torch.device,
                         batch_size: int = INFERENCE_BATCH) -> float:
    """Mean squared reconstruction error over (N, 1, H, W) uint8 images, in eval mode."""
    model.eval()
    total = 0.0
    for i in range(0, x_uint8.shape[0], batch_size):
        x = to_model_input(x_uint8[i:i + batch_size].to(device)).contiguous(memory_format=memory_format(device))
        total += F.mse_loss(model(x)["out"], x, reduction="sum").item()
    return total / max(1, x_uint8[0].numel() * x_uint8.shape[0])
