"""Training a classifier: cross-entropy with class balance, validation figures, through :func:`fit`."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pneumo.device import INFERENCE_BATCH, autocast, memory_format
from pneumo.imaging import as_uint8_tensor
from pneumo.metrics import multiclass_metrics
from pneumo.training.augment import NO_JITTER
from pneumo.training.inference import _logits
from pneumo.training.loop import TrainResult, fit

log = logging.getLogger(__name__)


SELECT_METRICS = ("val_auc", "val_bal_acc", "val_acc", "val_loss")


BALANCE_MODES = ("weights", "sampling", "none")


def _augment_options(augment: bool, border_mask: float) -> dict | None:
    """Keyword arguments of :func:`augment_batch` for ``fit`` (None: its defaults).

    The border frame removes a shortcut rather than adding jitter, so it stays on when
    ``augment`` is off (then with every jitter at zero): the grid's augmentation axis then
    measures the jitter alone.
    """
    if not border_mask:
        return None
    return {"border_mask": border_mask} if augment else {**NO_JITTER, "border_mask": border_mask}


def _class_weights(counts: Tensor) -> Tensor:
    """Inverse-frequency class weights normalised so the average weight per sample is 1.

    ``w_c = N / (C * n_c)``; a class absent from the training set gets weight 0.
    """
    counts = counts.float()
    present = counts > 0
    w = torch.zeros_like(counts)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


def _evaluate(model: nn.Module, x_val: Tensor, y_val: Tensor, device: torch.device,
              batch_size: int = INFERENCE_BATCH) -> dict[str, float]:
    """Validation loss (plain cross-entropy) and metrics, in eval mode."""
    model.eval()
    logits = _logits(model, x_val, batch_size, device)  # (N_val, C)
    loss = F.cross_entropy(logits, y_val).item()
    proba = torch.softmax(logits, dim=1).cpu().numpy()
    m = multiclass_metrics(y_val.cpu().numpy(), proba)
    return {
        "val_loss": loss,
        "val_acc": m["accuracy"],
        "val_bal_acc": m["balanced_accuracy"],
        "val_auc": m["roc_auc"],  # = binary AUC for 2 classes, macro one-vs-rest otherwise
    }


def train_classifier(
    model: nn.Module,
    train_images: np.ndarray,
    train_targets: np.ndarray,
    val_images: np.ndarray,
    val_targets: np.ndarray,
    *,
    num_classes: int,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    warmup_epochs: float = 1.0,
    patience: int = 5,
    balance: str = "weights",
    augment: bool = True,
    border_mask: float = 0.0,
    label_smoothing: float = 0.0,
    mixup: float = 0.0,
    device: torch.device,
    seed: int = 0,
    select_metric: str = "val_auc",
    progress: bool = True,
) -> TrainResult:
    """Train a classifier with AdamW, warm-up + cosine schedule and early stopping.

    Parameters
    ----------
    model
        Network taking normalised (B, 1, H, W) input and returning (B, num_classes)
        logits; moved to ``device`` in place (channels_last on CPU and CUDA).
    train_images, val_images
        uint8 arrays (N, H, W) or (N, 1, H, W).
    train_targets, val_targets
        Integer class labels (N,) in ``[0, num_classes)``.
    num_classes
        Number of classes.
    epochs
        Maximum number of epochs.
    batch_size
        Images per step; the last incomplete batch of an epoch is dropped (the order is
        reshuffled every epoch, so no image is left out systematically).
    lr, weight_decay
        Peak learning rate and AdamW decay (applied to conv/linear weights only).
    warmup_epochs
        Length of the linear warm-up; the rate then follows a cosine to 0 at ``epochs``.
    patience
        Stop after this many epochs without improvement of ``select_metric``
        (0 disables early stopping).
    balance
        ``'weights'``: class-weighted cross-entropy (inverse frequency, normalised);
        ``'sampling'``: each epoch draws N indices with replacement, with probability
        inversely proportional to class frequency, and plain cross-entropy;
        ``'none'``: plain shuffling and plain cross-entropy.
    augment
        Apply :func:`augment_batch` to training batches.
    border_mask
        Black out a random border frame up to this fraction of the side on half the
        training images (0: off), with or without ``augment``.
    label_smoothing
        Cross-entropy label smoothing.
    mixup
        Mixup's α [zhang2018]: each batch is blended with a shuffled copy of itself, images
        and losses alike, by a weight drawn from Beta(α, α) (0: off).
    device
        Compute device; mixed precision (``pneumo.device.autocast``) on CUDA, with a
        GradScaler only if that means float16.
    seed
        Seeds Python/NumPy/torch (dropout) and a device generator for shuffling,
        sampling and augmentation; on CPU two runs with the same seed and the same
        initial model give the same history (timing columns aside).
    select_metric
        ``'val_auc'``, ``'val_bal_acc'``, ``'val_acc'`` or ``'val_loss'`` (lower is
        better); selects ``best_epoch`` (ties broken by the lower ``val_loss``) and
        drives early stopping.
    progress
        Show a tqdm bar per epoch.

    Returns
    -------
    TrainResult
        History, best epoch and its state dict (CPU).  The model itself is left with the
        weights of the last step; load ``best_state`` to get the selected model.

    Notes
    -----
    ``data_wait_fraction`` is the share of the training step time spent producing the
    batch (indexing, :func:`to_model_input`, augmentation), measured with CUDA
    synchronisation so asynchronous kernels are not misattributed.  ``images_per_s``
    counts training images over the training-phase time of the epoch; ``seconds`` is
    the whole epoch including validation.

    A KeyboardInterrupt (Ctrl-C, or the notebook's stop button) ends training cleanly:
    a warning is logged and the best state so far is returned with ``stopped_early``.
    """
    if balance not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {BALANCE_MODES}, got {balance!r}")
    if select_metric not in SELECT_METRICS:
        raise ValueError(f"select_metric must be one of {SELECT_METRICS}, got {select_metric!r}")
    # The whole data set lives on the device as uint8; batches are index slices of it.
    # (fit checks epochs and batch_size.)
    x_val = as_uint8_tensor(val_images, device, memory_format(device))  # (N_val, 1, H, W) uint8
    y_train = torch.as_tensor(np.array(train_targets, dtype=np.int64), device=device)  # (N,)
    y_val = torch.as_tensor(np.array(val_targets, dtype=np.int64), device=device)
    if y_train.shape != (len(train_images),) or y_val.shape != (x_val.shape[0],):
        raise ValueError("targets must be 1-D and match the number of images")
    for name, y in (("train", y_train), ("val", y_val)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"{name} targets must be in [0, {num_classes})")

    counts = torch.bincount(y_train, minlength=num_classes)  # (C,)
    if (counts == 0).any():
        log.warning("classes %s have no training images", torch.nonzero(counts == 0).flatten().tolist())
    class_weight = _class_weights(counts) if balance == "weights" else None  # (C,) or None
    # Per-image draw probability for balance='sampling': every class equally likely.
    draw_weight = (1.0 / counts.clamp(min=1).float())[y_train] if balance == "sampling" else None

    # Mixup's weights come from their own seeded stream, so runs with the same seed agree.
    mixing = np.random.default_rng(seed)

    def batch_loss(model: nn.Module, x: Tensor, idx: Tensor, generator: torch.Generator):
        y = y_train[idx]  # (B,)
        if mixup > 0:
            weight = float(mixing.beta(mixup, mixup))
            partner = torch.randperm(len(idx), generator=generator, device=generator.device)  # (B,)
            x = weight * x + (1 - weight) * x[partner]  # (B, 1, H, W), in the network's input units
        with autocast(device):
            logits = model(x)  # (B, C)

        def loss_of(targets: Tensor) -> Tensor:
            return F.cross_entropy(logits.float(), targets, weight=class_weight, label_smoothing=label_smoothing)

        loss = loss_of(y) if mixup <= 0 else weight * loss_of(y) + (1 - weight) * loss_of(y[partner])
        return loss, {"train_acc": (logits.detach().argmax(dim=1) == y).sum()}

    return fit(
        model, train_images, batch_loss, lambda m: _evaluate(m, x_val, y_val, device),
        select_metric=select_metric, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, patience=patience,
        augment=augment or border_mask > 0, augment_options=_augment_options(augment, border_mask),
        draw_weight=draw_weight, device=device, seed=seed, progress=progress,
        description=f"balance={balance}, class counts {counts.tolist()}",
    )
