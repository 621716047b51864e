"""Training loop, prediction and batched on-device augmentation.

Data path (why it is fast): the whole training set is moved to the device once as a
uint8 tensor (N, 1, H, W) -- 4,000 images of 128 x 128 are 65 MB.  A batch is an index
slice of it, converted to float by :func:`to_model_input` and augmented as one batch
by :func:`augment_batch` on the same device.  There is no DataLoader, no worker process
and no per-image decode, so the time outside the model (``data_wait_fraction`` in the
history) stays at a few percent.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # plain text bars: readable in executed notebooks and logs

from pneumo.device import autocast, seed_everything
from pneumo.imaging import BLACK, PIXEL_MEAN, PIXEL_STD, as_uint8_tensor, to_model_input
from pneumo.metrics import multiclass_metrics

log = logging.getLogger(__name__)

SELECT_METRICS = ("val_auc", "val_bal_acc", "val_acc", "val_loss")
BALANCE_MODES = ("weights", "sampling", "none")


def _use_channels_last(device: torch.device) -> bool:
    """channels_last pays off on CUDA and on CPU (oneDNN: ~75 vs ~55 img/s for the VGG at
    128 px on 2 cores); MPS support is patchy, so not there."""
    return device.type in ("cuda", "cpu")


def _sync(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings are honest on asynchronous devices."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _uses_fp16(device: torch.device) -> bool:
    """Whether pneumo.device.autocast runs float16 here (then a GradScaler is needed)."""
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


# -- augmentation --------------------------------------------------------------------------
def augment_batch(
    x: Tensor,
    generator: torch.Generator,
    *,
    max_rotation_deg: float = 10.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    max_translate: float = 0.06,
    max_brightness: float = 0.08,
    max_contrast: float = 0.15,
    max_gamma: float = 1.25,
) -> Tensor:
    """Random geometric and intensity jitter of a whole batch, on ``x``'s device.

    Per image: rotation, isotropic zoom and translation in one affine warp
    (``affine_grid`` + bilinear ``grid_sample``, pixels entering from outside are black),
    then gamma, contrast (around the image mean) and brightness jitter in [0, 1] pixel
    space, clipped to the valid range.

    There is deliberately no horizontal flip: the heart lies on the patient's left, so a
    mirrored chest X-ray is anatomically implausible (and laterality markers would flip).

    Parameters
    ----------
    x
        (B, 1, H, W) float input normalised by :func:`to_model_input`.
    generator
        Random generator on the same device as ``x``
        (``torch.Generator(device=x.device).manual_seed(seed)``); the result is
        deterministic given its state.
    max_rotation_deg, scale_range, max_translate
        Rotation in +-degrees, zoom factor range, translation as +- fraction of the side.
    max_brightness, max_contrast, max_gamma
        Brightness shift +- (fraction of full range), contrast factor 1 +- value, gamma
        in [1 / max_gamma, max_gamma] (log-uniform).

    Returns
    -------
    Tensor
        Same shape, dtype and device as ``x``.
    """
    B, _, H, W = x.shape
    u = torch.rand(B, 7, generator=generator, device=x.device, dtype=torch.float32)  # (B, 7) in [0, 1)
    sym = (2 * u - 1).unsqueeze(-1).unsqueeze(-1)  # (B, 7, 1, 1) in [-1, 1), broadcasts over (H, W)

    # Affine warp.  The sampling grid maps each output pixel to an input location in
    # grid_sample's normalised [-1, 1] frame; sampling at R(angle) p / s zooms by s.
    # Rotation is done in pixel units (D^-1 A D with D = diag(W/2, H/2)) so non-square
    # images are not sheared.  The grid is built by broadcasting, which on CPU is ~10x
    # faster than F.affine_grid's batched matmul (same result).
    angle = sym[:, 0] * math.radians(max_rotation_deg)  # (B, 1, 1)
    scale = scale_range[0] + (scale_range[1] - scale_range[0]) * u[:, 1].view(B, 1, 1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    tx, ty = 2 * max_translate * sym[:, 2], 2 * max_translate * sym[:, 3]  # side = 2 units
    xs = torch.linspace(-1 + 1 / W, 1 - 1 / W, W, device=x.device).view(1, 1, W)  # pixel centres
    ys = torch.linspace(-1 + 1 / H, 1 - 1 / H, H, device=x.device).view(1, H, 1)
    grid = torch.empty(B, H, W, 2, device=x.device)  # (B, H, W, 2) sampling locations (x, y)
    # Written straight into the interleaved layout: ~5x faster on CPU than torch.stack.
    torch.addcmul(tx - sin * (H / W) * ys, cos, xs, out=grid[..., 0])
    torch.addcmul(ty + cos * ys, sin * (W / H), xs, out=grid[..., 1])
    # grid_sample pads with 0; sampling x - BLACK (= p / PIXEL_STD) makes the padding
    # black, and multiplying by PIXEL_STD gives the pixel value p in [0, 1].
    p = F.grid_sample(x.float() - BLACK, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    p = p.mul_(PIXEL_STD).clamp_(0, 1)  # (B, 1, H, W) pixels in [0, 1]

    # Intensity jitter: gamma, then contrast around the image mean, then brightness.
    gamma = torch.exp(sym[:, 4:5] * math.log(max_gamma))  # (B, 1, 1, 1), log-uniform
    p = p.pow_(gamma)
    contrast = 1 + max_contrast * sym[:, 5:6]  # (B, 1, 1, 1)
    brightness = max_brightness * sym[:, 6:7]
    mean = p.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    # q = (p - mean) * contrast + mean + brightness, returned normalised as
    # (clip(q, 0, 1) - PIXEL_MEAN) / PIXEL_STD; folded into one multiply-add and one clamp.
    offset = (mean * (1 - contrast) + brightness - PIXEL_MEAN) / PIXEL_STD
    out = torch.addcmul(offset, p, contrast / PIXEL_STD).clamp_(BLACK, (1 - PIXEL_MEAN) / PIXEL_STD)
    return out.to(x.dtype)


# -- training ------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`fit` (and so :func:`train_classifier` and the autoencoders' training) returns.

    Attributes
    ----------
    history
        One row per completed epoch: ``epoch, lr, train_loss``, the training figures the
        objective adds (``train_acc`` for a classifier), the validation figures
        (``val_loss``, and ``val_acc, val_bal_acc, val_auc`` for a classifier), then
        ``seconds, images_per_s, data_wait_fraction``.
    best_epoch
        Epoch (1-based) with the best selection metric; 0 if no epoch completed.
    best_state
        ``state_dict`` of that epoch as CPU tensors (load it with ``load_state_dict``).
    seconds
        Wall-clock time of the whole call.
    stopped_early
        True when early stopping or a KeyboardInterrupt ended training before ``epochs``.
    interrupted
        True when a KeyboardInterrupt ended training: callers must not cache the result as
        if training had finished.
    """

    history: pd.DataFrame
    best_epoch: int
    best_state: dict
    seconds: float
    stopped_early: bool
    interrupted: bool = False


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of the state dict in the default memory format."""
    return {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }


def _lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from base_lr / warmup_steps to base_lr, then cosine decay to 0
    (``warmup_steps=0``: the cosine from the first step)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on conv/linear weights only (not on BatchNorm or biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _class_weights(counts: Tensor) -> Tensor:
    """Inverse-frequency class weights normalised so the average weight per sample is 1.

    ``w_c = N / (C * n_c)``; a class absent from the training set gets weight 0.
    """
    counts = counts.float()
    present = counts > 0
    w = torch.zeros_like(counts)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


@torch.no_grad()
def _logits(model: nn.Module, x_uint8: Tensor, batch_size: int, device: torch.device,
            fn=None) -> Tensor:
    """Outputs of ``fn`` (default ``model``) over device-resident uint8 images, float32 (N, K)."""
    fn = model if fn is None else fn
    channels_last = _use_channels_last(device)
    out = []
    for i in range(0, x_uint8.shape[0], batch_size):
        x = to_model_input(x_uint8[i:i + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out.append(fn(x).float())
    return torch.cat(out)


def _evaluate(model: nn.Module, x_val: Tensor, y_val: Tensor, device: torch.device,
              batch_size: int = 256) -> dict[str, float]:
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


def _is_better(row: dict[str, float], best: dict[str, float] | None, metric: str) -> bool:
    """Whether epoch ``row`` beats ``best`` on ``metric``; ties go to the lower val_loss.

    The tie-break matters on easy data, where the AUC saturates at 1.0 after an epoch or
    two while the model keeps improving.
    """
    if best is None:
        return True
    value, ref = row[metric], best[metric]
    if math.isnan(value):
        return False
    if math.isnan(ref):
        return True
    sign = -1.0 if metric.endswith("loss") else 1.0  # compare "higher is better"
    if sign * value != sign * ref:
        return sign * value > sign * ref
    return row["val_loss"] < best["val_loss"]


def time_left(history: list[dict[str, float]], epochs: int) -> str:
    """The remaining epochs at the mean pace so far, as ``"1 min 20 s"`` (for progress lines)."""
    if not history:
        return "?"
    seconds = round(sum(row["seconds"] for row in history) / len(history) * (epochs - len(history)))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


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
    label_smoothing: float = 0.0,
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
    label_smoothing
        Cross-entropy label smoothing.
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
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs=}, {batch_size=}")
    channels_last = _use_channels_last(device)
    # The whole data set lives on the device as uint8; batches are index slices of it.
    x_val = as_uint8_tensor(val_images, device, channels_last)  # (N_val, 1, H, W) uint8
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

    def batch_loss(model: nn.Module, x: Tensor, idx: Tensor, generator: torch.Generator):
        y = y_train[idx]  # (B,)
        with autocast(device):
            logits = model(x)  # (B, C)
        loss = F.cross_entropy(logits.float(), y, weight=class_weight, label_smoothing=label_smoothing)
        return loss, {"train_acc": (logits.detach().argmax(dim=1) == y).sum()}

    return fit(
        model, train_images, batch_loss, lambda m: _evaluate(m, x_val, y_val, device),
        select_metric=select_metric, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, patience=patience, augment=augment,
        draw_weight=draw_weight, device=device, seed=seed, progress=progress,
        description=f"balance={balance}, class counts {counts.tolist()}",
    )


def fit(
    model: nn.Module,
    train_images: np.ndarray,
    batch_loss: Callable[[nn.Module, Tensor, Tensor, torch.Generator], tuple[Tensor, dict[str, Tensor]]],
    evaluate: Callable[[nn.Module], dict[str, float]],
    *,
    select_metric: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_epochs: float,
    patience: int,
    augment: bool,
    device: torch.device,
    seed: int = 0,
    draw_weight: Tensor | None = None,
    progress: bool = True,
    description: str = "",
) -> TrainResult:
    """The training loop of every network: AdamW, warm-up + cosine schedule, early stopping.

    Each step draws a batch of training images (shuffled, or drawn with ``draw_weight``),
    converts it with :func:`~pneumo.imaging.to_model_input`, augments it
    (:func:`augment_batch`) and takes one AdamW step on ``batch_loss``. After each epoch
    ``evaluate`` gives the validation figures; the epoch with the best ``select_metric`` is
    kept, and training stops after ``patience`` epochs without a better one.

    Parameters
    ----------
    model
        The network; moved to ``device`` in place (channels_last on CPU and CUDA).
    train_images
        uint8 (N, H, W) or (N, 1, H, W); moved to the device once.
    batch_loss
        ``batch_loss(model, x, idx, generator) -> (loss, sums)``: the loss of the (B, 1, H, W)
        normalised, augmented batch ``x`` made of training images ``idx`` (B,), and named
        per-batch sums (e.g. correct predictions) that the history reports per image. Runs
        in train mode; it owns its autocast (mixed precision on CUDA) and may draw random
        numbers from ``generator`` (e.g. to corrupt the input).
    evaluate
        ``evaluate(model) -> {"val_loss": ..., ...}`` on the validation images, called in
        eval mode without gradients.
    select_metric
        The figure of ``evaluate`` that chooses the best epoch and drives early stopping:
        higher is better, except for names ending in ``loss``; ties go to the lower
        ``val_loss``.
    epochs, batch_size
        Maximum epochs; images per step (an epoch's last incomplete batch is dropped: the
        order changes every epoch, so no image is left out systematically).
    lr, weight_decay, warmup_epochs
        Peak learning rate, AdamW decay (conv and linear weights only), and the linear
        warm-up's length (0: none) before the cosine decay to 0 at ``epochs``.
    patience
        Epochs without improvement before stopping (0: never stop early).
    augment
        Apply :func:`augment_batch` to training batches.
    device
        Compute device; a GradScaler runs where autocast means float16.
    seed
        Seeds Python, NumPy and torch, and a device generator for the order, the draws and
        augmentation: on CPU two runs from the same initial model give the same history.
    draw_weight
        (N,) per-image draw probabilities (drawn with replacement each epoch); None shuffles.
    progress
        Show a tqdm bar per epoch.
    description
        Added to the first log line (e.g. the class balance).

    Returns
    -------
    TrainResult
        History, best epoch and its state dict (CPU). The model keeps the last step's
        weights; load ``best_state`` for the chosen ones.

    Notes
    -----
    ``data_wait_fraction`` is the share of the step time spent producing the batch
    (indexing, :func:`~pneumo.imaging.to_model_input`, augmentation), measured with device
    synchronisation so asynchronous kernels are not misattributed. ``images_per_s`` counts
    training images over the training-phase time; ``seconds`` is the whole epoch with
    validation.

    A KeyboardInterrupt (Ctrl-C, or the notebook's stop button) ends training cleanly: a
    warning is logged and the best state so far is returned with ``interrupted=True``.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs=}, {batch_size=}")
    t_start = time.perf_counter()
    seed_everything(seed)
    gen = torch.Generator(device=device).manual_seed(seed)  # order, draws, augmentation, corruption
    channels_last = _use_channels_last(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x_train = as_uint8_tensor(train_images, device, channels_last)  # (N, 1, H, W) uint8
    n_train = x_train.shape[0]

    steps_per_epoch = max(1, n_train // batch_size)
    total_steps = epochs * steps_per_epoch
    warmup_steps = max(1, round(warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 0
    optimizer = _make_optimizer(model, lr, weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=_uses_fp16(device))
    log.info("training %s on %s: %d train images, %d steps/epoch x %d epochs, batch %d, augment=%s, "
             "channels_last=%s%s", type(model).__name__, device, n_train, steps_per_epoch, epochs,
             batch_size, augment, channels_last, f", {description}" if description else "")

    history: list[dict[str, float]] = []
    best_row: dict[str, float] | None = None
    best_epoch, best_state = 0, None
    stopped_early = interrupted = False
    step = 0
    was_training = model.training
    try:
        for epoch in range(1, epochs + 1):
            t_epoch = time.perf_counter()
            model.train()
            if draw_weight is not None:
                order = torch.multinomial(draw_weight, n_train, replacement=True, generator=gen)
            else:
                order = torch.randperm(n_train, generator=gen, device=device)
            loss_sum = torch.zeros((), device=device)  # accumulated on device: no sync per step
            sums: dict[str, Tensor] = {}
            n_seen, data_s, train_s = 0, 0.0, 0.0
            # Manual updates: iterating a tqdm closes it at the end, before the val metrics.
            with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", disable=not progress,
                      dynamic_ncols=True) as bar:
                for i in range(steps_per_epoch):
                    # -- produce the batch (timed as data wait) --
                    t0 = time.perf_counter()
                    idx = order[i * batch_size:(i + 1) * batch_size]  # (B,)
                    x = to_model_input(x_train[idx])  # (B, 1, H, W) float32
                    if augment:
                        x = augment_batch(x, gen)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    _sync(device)
                    t1 = time.perf_counter()

                    # -- optimisation step --
                    lr_now = _lr_at(step, base_lr=lr, warmup_steps=warmup_steps, total_steps=total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr_now
                    loss, batch_sums = batch_loss(model, x, idx, gen)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    loss_sum += loss.detach() * idx.shape[0]
                    for name, value in batch_sums.items():
                        sums[name] = sums[name] + value if name in sums else value
                    _sync(device)
                    t2 = time.perf_counter()

                    data_s += t1 - t0
                    train_s += t2 - t0
                    n_seen += idx.shape[0]
                    step += 1
                    if progress and (i % 10 == 0 or i == steps_per_epoch - 1):
                        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_now:.2e}", refresh=False)
                    bar.update(1)

                model.eval()
                with torch.no_grad():
                    val = evaluate(model)
                model.train()
                row = {"epoch": epoch, "lr": lr_now, "train_loss": loss_sum.item() / n_seen,
                       **{name: value.item() / n_seen for name, value in sums.items()}, **val,
                       "seconds": time.perf_counter() - t_epoch, "images_per_s": n_seen / train_s,
                       "data_wait_fraction": data_s / train_s}
                history.append(row)
                bar.set_postfix({k: f"{v:.4f}" for k, v in val.items()})

            figures = " ".join(f"{k.removeprefix('train_').replace('_', ' ')} {v:.4f}" for k, v in row.items()
                               if k.startswith("train_"))
            val_figures = " ".join(f"{k.removeprefix('val_').replace('_', ' ')} {v:.4f}" for k, v in val.items())
            log.info("epoch %d/%d  lr %.2e  train %s | val %s | %.1fs, %.0f img/s, data wait %.1f%%, "
                     "at most %s left", epoch, epochs, lr_now, figures, val_figures, row["seconds"],
                     row["images_per_s"], 100 * row["data_wait_fraction"], time_left(history, epochs))
            if _is_better(row, best_row, select_metric):
                best_row, best_epoch, best_state = row, epoch, _cpu_state(model)
            elif patience > 0 and epoch - best_epoch >= patience:
                log.info("early stopping: no %s improvement for %d epochs (best %.4f at epoch %d)",
                         select_metric, patience, best_row[select_metric], best_epoch)
                stopped_early = True
                break
    except KeyboardInterrupt:
        stopped_early = interrupted = True
        log.warning("training interrupted after %d completed epoch(s); returning the best state so far "
                    "(epoch %d)", len(history), best_epoch)
    finally:
        model.train(was_training)

    if best_state is None:  # interrupted before the first epoch finished
        best_state = _cpu_state(model)
    columns = list(history[0]) if history else ["epoch", "lr", "train_loss", "val_loss", "seconds"]
    return TrainResult(history=pd.DataFrame(history, columns=columns), best_epoch=best_epoch, best_state=best_state,
                       seconds=time.perf_counter() - t_start, stopped_early=stopped_early,
                       interrupted=interrupted)


def stop_if_interrupted(result: TrainResult, cache_root: Path, name: str, config: dict[str, Any]) -> None:
    """After Ctrl-C ended :func:`fit`: keep the best weights so far, then stop the task.

    The weights, the config and the history go to ``<cache_root>/interrupted/<name>.pt``; no
    cache entry is written (the next run trains again), and KeyboardInterrupt is raised again
    for the caller's clean-up. Does nothing when training was not interrupted.
    """
    if not result.interrupted:
        return
    path = Path(cache_root) / "interrupted" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": result.best_state, "config": config,
                "history": result.history.to_dict("list")}, path)
    log.warning("interrupted after %d epoch(s): best weights so far saved to %s; no cache entry "
                "was written, so the next run trains this network again", len(result.history), path)
    raise KeyboardInterrupt


# -- inference -----------------------------------------------------------------------------
def _batched_outputs(model: nn.Module, images, batch_size: int, device: torch.device, use_features: bool) -> np.ndarray:
    """Run ``model`` (or ``model.features``) over uint8 images in eval mode, then restore the mode."""
    was_training = model.training
    model.to(device)
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
def predict_proba(model: nn.Module, images: np.ndarray, *, batch_size: int = 256, device: torch.device) -> np.ndarray:
    """Softmax class probabilities.

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

    Returns
    -------
    numpy.ndarray
        (N, C) float32 probabilities; rows sum to 1.
    """
    logits = _batched_outputs(model, images, batch_size, device, use_features=False)
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


@torch.no_grad()
def extract_features(
    model: nn.Module, images: np.ndarray, *, batch_size: int = 256, device: torch.device
) -> np.ndarray:
    """Embeddings from ``model.features`` (e.g. for t-SNE or a linear probe).

    As :func:`predict_proba`, but ``model`` needs a ``features(x) -> (B, D)`` method, and the
    result is its (N, D) float32 output.
    """
    return _batched_outputs(model, images, batch_size, device, use_features=True)
