"""The one training loop of every network (:func:`fit`) and what it returns.

Data path (why it is fast): the whole training set is moved to the device once as a
uint8 tensor (N, 1, H, W) -- 4,000 images of 128 x 128 are 65 MB.  A batch is an index
slice of it, converted to float by :func:`~pneumo.imaging.to_model_input` and augmented as
one batch by :func:`~pneumo.training.augment.augment_batch` on the same device.  There is no
DataLoader, no worker process and no per-image decode, so the time outside the model
(``data_wait_fraction`` in the history) stays at a few percent.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm  # plain text bars: readable in executed notebooks and logs

from pneumo.device import memory_format, seed_everything
from pneumo.imaging import as_uint8_tensor, to_model_input
from pneumo.training.augment import augment_batch

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings are honest on asynchronous devices."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _uses_fp16(device: torch.device) -> bool:
    """Whether pneumo.device.autocast runs float16 here (then a GradScaler is needed)."""
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


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
    augment_options: Mapping[str, Any] | None = None,
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
    augment_options
        Keyword arguments of :func:`augment_batch` (e.g. ``{"border_mask": 0.12}``); None:
        its defaults.
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
    layout = memory_format(device)
    model.to(device, memory_format=layout)
    x_train = as_uint8_tensor(train_images, device, layout)  # (N, 1, H, W) uint8
    n_train = x_train.shape[0]

    steps_per_epoch = max(1, n_train // batch_size)
    schedule = _schedule(lr, warmup_epochs, steps_per_epoch, epochs)
    optimizer = _make_optimizer(model, lr, weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=_uses_fp16(device))
    log.info("training %s on %s: %d train images, %d steps/epoch x %d epochs, batch %d, augment=%s, "
             "channels_last=%s%s", type(model).__name__, device, n_train, steps_per_epoch, epochs,
             batch_size, f"{augment} {dict(augment_options)}" if augment and augment_options else augment,
             layout == torch.channels_last, f", {description}" if description else "")

    history: list[dict[str, float]] = []
    best_row: dict[str, float] | None = None
    best_epoch, best_state = 0, None
    stopped_early = interrupted = False
    step = 0
    was_training = model.training
    try:
        for epoch in range(1, epochs + 1):
            row, val, step = _run_epoch(model, x_train, batch_loss, evaluate, optimizer, scaler, gen, history,
                                        epoch=epoch, epochs=epochs, step=step, steps=steps_per_epoch,
                                        schedule=schedule, batch_size=batch_size,
                                        augment=dict(augment_options or {}) if augment else None, layout=layout, progress=progress, draw_weight=draw_weight,
                                        device=device)
            _log_epoch(row, val, epochs, history)
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
    return _result(model, history, best_epoch, best_state, t_start=t_start, stopped_early=stopped_early,
                   interrupted=interrupted)


def _schedule(lr: float, warmup_epochs: float, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """The learning rate of each global step: :func:`_lr_at` with the warm-up counted in steps."""
    total_steps = epochs * steps_per_epoch
    warmup_steps = max(1, round(warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 0
    return functools.partial(_lr_at, base_lr=lr, warmup_steps=warmup_steps, total_steps=total_steps)


def _epoch_order(n_train: int, draw_weight: Tensor | None, gen: torch.Generator,
                 device: torch.device) -> Tensor:
    """The epoch's (N,) training image indices: drawn with ``draw_weight``, else a permutation."""
    if draw_weight is not None:
        return torch.multinomial(draw_weight, n_train, replacement=True, generator=gen)
    return torch.randperm(n_train, generator=gen, device=device)


def _run_epoch(model: nn.Module, x_train: Tensor, batch_loss: Callable, evaluate: Callable, optimizer, scaler,
               gen: torch.Generator, history: list[dict[str, float]], *, epoch: int, epochs: int, step: int,
               steps: int, schedule: Callable[[int], float], batch_size: int,
               augment: dict[str, Any] | None, layout: torch.memory_format, progress: bool, draw_weight: Tensor | None,
               device: torch.device) -> tuple[dict[str, float], dict[str, float], int]:
    """Train one epoch, validate, append the history row; return it, the val figures and the step."""
    t_epoch = time.perf_counter()
    model.train()
    order = _epoch_order(x_train.shape[0], draw_weight, gen, device)
    # Manual updates: iterating a tqdm closes it at the end, before the val metrics.
    # disable is passed only to turn the bar off: an explicit keyword would override tqdm's
    # TQDM_DISABLE, which pneumo.pool sets in worker processes (several bars would interleave).
    with tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", dynamic_ncols=True,
              **({} if progress else {"disable": True})) as bar:
        train, step = _train_epoch(model, x_train, order, batch_loss, optimizer, scaler, gen, bar,
                                   schedule=schedule, step=step, steps=steps, batch_size=batch_size,
                                   augment=augment, layout=layout, progress=progress)
        model.eval()
        with torch.no_grad():
            val = evaluate(model)
        model.train()
        speed = {k: train.pop(k) for k in ("images_per_s", "data_wait_fraction")}
        row = {"epoch": epoch, **train, **val, "seconds": time.perf_counter() - t_epoch, **speed}
        history.append(row)
        bar.set_postfix({k: f"{v:.4f}" for k, v in val.items()})
    return row, val, step


def _result(model: nn.Module, history: list[dict[str, float]], best_epoch: int, best_state: dict | None, *,
            t_start: float, stopped_early: bool, interrupted: bool) -> TrainResult:
    """What :func:`fit` returns; the model's current weights when no epoch completed."""
    if best_state is None:  # interrupted before the first epoch finished
        best_state = _cpu_state(model)
    columns = list(history[0]) if history else ["epoch", "lr", "train_loss", "val_loss", "seconds"]
    return TrainResult(history=pd.DataFrame(history, columns=columns), best_epoch=best_epoch, best_state=best_state,
                       seconds=time.perf_counter() - t_start, stopped_early=stopped_early,
                       interrupted=interrupted)


def _train_epoch(model: nn.Module, x_train: Tensor, order: Tensor, batch_loss: Callable, optimizer, scaler,
                 gen: torch.Generator, bar, *, schedule: Callable[[int], float], step: int, steps: int,
                 batch_size: int, augment: dict[str, Any] | None, layout: torch.memory_format,
                 progress: bool) -> tuple[dict[str, float], int]:
    """One pass over ``order`` (the epoch's image indices), one AdamW step per batch.

    Returns the epoch's training figures (``lr`` of the last step, ``train_loss``, the
    objective's per-image sums, ``images_per_s``, ``data_wait_fraction``) and the global step
    count after it.
    """
    device = x_train.device
    loss_sum = torch.zeros((), device=device)  # accumulated on device: no sync per step
    sums: dict[str, Tensor] = {}
    n_seen, data_s, train_s = 0, 0.0, 0.0
    for i in range(steps):
        # -- produce the batch (timed as data wait) --
        t0 = time.perf_counter()
        idx = order[i * batch_size:(i + 1) * batch_size]  # (B,)
        x = to_model_input(x_train[idx])  # (B, 1, H, W) float32
        if augment is not None:  # augment_batch's options
            x = augment_batch(x, gen, **augment)
        x = x.contiguous(memory_format=layout)
        _sync(device)
        t1 = time.perf_counter()

        # -- optimisation step --
        lr_now = schedule(step)
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
        if progress and (i % 10 == 0 or i == steps - 1):
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_now:.2e}", refresh=False)
        bar.update(1)
    figures = {"lr": lr_now, "train_loss": loss_sum.item() / n_seen,
               **{name: value.item() / n_seen for name, value in sums.items()},
               "images_per_s": n_seen / train_s, "data_wait_fraction": data_s / train_s}
    return figures, step


def _log_epoch(row: dict[str, float], val: dict[str, float], epochs: int, history: list[dict[str, float]]) -> None:
    """One line per epoch: the training and validation figures, speed and time left."""
    train = " ".join(f"{k.removeprefix('train_').replace('_', ' ')} {v:.4f}" for k, v in row.items()
                     if k.startswith("train_"))
    valid = " ".join(f"{k.removeprefix('val_').replace('_', ' ')} {v:.4f}" for k, v in val.items())
    log.info("epoch %d/%d  lr %.2e  train %s | val %s | %.1fs, %.0f img/s, data wait %.1f%%, at most %s left",
             row["epoch"], epochs, row["lr"], train, valid, row["seconds"], row["images_per_s"],
             100 * row["data_wait_fraction"], time_left(history, epochs))


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
