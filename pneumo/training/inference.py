"""A trained network over many images: class probabilities and embeddings, batch by batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pneumo.device import INFERENCE_BATCH, autocast, memory_format
from pneumo.imaging import as_uint8_tensor, to_model_input
from pneumo.training.augment import jittered_copies


@torch.no_grad()
def _logits(model: nn.Module, x_uint8: Tensor, batch_size: int, device: torch.device,
            fn=None) -> Tensor:
    """Outputs of ``fn`` (default ``model``) over device-resident uint8 images, float32 (N, K)."""
    fn = model if fn is None else fn
    layout = memory_format(device)
    out = []
    for i in range(0, x_uint8.shape[0], batch_size):
        x = to_model_input(x_uint8[i:i + batch_size]).contiguous(memory_format=layout)
        with autocast(device):
            out.append(fn(x).float())
    return torch.cat(out)


def _batched_outputs(model: nn.Module, images, batch_size: int, device: torch.device, use_features: bool) -> np.ndarray:
    """Run ``model`` (or ``model.features``) over uint8 images in eval mode, then restore the mode."""
    was_training = model.training
    model.to(device, memory_format=memory_format(device))  # the batches' layout: a mismatch halves the speed
    model.eval()
    try:
        fn = model.features if use_features else model
        out = []
        for i in range(0, len(images), batch_size):
            x = as_uint8_tensor(images[i:i + batch_size], device)  # only one batch on the device
            out.append(_logits(model, x, batch_size, device, fn=fn))
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), dtype=np.float32)
    finally:
        model.train(was_training)


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, *, batch_size: int = INFERENCE_BATCH, device: torch.device,
                  tta: int = 0, seed: int = 0) -> np.ndarray:
    """Softmax class probabilities, optionally averaged over test-time augmentation.

    Parameters
    ----------
    model
        Classifier returning logits; moved to ``device`` in place and run in eval mode.
        Its previous train/eval mode is restored afterwards.
    images
        uint8 (N, H, W) or (N, 1, H, W) array (or tensor).
    batch_size
        Images per forward pass.
    device
        Where to compute.
    tta
        Test-time augmentation: also score this many jittered copies of every image
        (:func:`~pneumo.training.augment.jittered_copies`, the training jitter) and average the
        probabilities of the ``1 + tta`` views (0: the images as they are).
    seed
        Seed of the jitter.

    Returns
    -------
    numpy.ndarray
        (N, C) float32 probabilities; rows sum to 1.
    """
    if tta:
        plain = np.asarray(images).reshape(len(images), *np.shape(images)[-2:])  # (N, H, W)
        views = np.concatenate([plain, jittered_copies(plain, tta, seed=seed)])  # ((1 + tta) * N, H, W)
        proba = predict_proba(model, views, batch_size=batch_size, device=device)
        return proba.reshape(1 + tta, len(plain), -1).mean(axis=0)
    logits = _batched_outputs(model, images, batch_size, device, use_features=False)
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


@torch.no_grad()
def extract_features(
    model: nn.Module, images: np.ndarray, *, batch_size: int = INFERENCE_BATCH, device: torch.device
) -> np.ndarray:
    """Embeddings from ``model.features`` (e.g. for t-SNE or a linear probe).

    As :func:`predict_proba`, but ``model`` needs a ``features(x) -> (B, D)`` method, and the
    result is its (N, D) float32 output.
    """
    return _batched_outputs(model, images, batch_size, device, use_features=True)
