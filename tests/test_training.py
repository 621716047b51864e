"""Tests of pneumo.training on a tiny synthetic task: a bright disc (class 1) or none (class 0)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pneumo.training import augment, classifier, loop
from pneumo.models import VGGNet
from pneumo.imaging import from_model_input, to_model_input
from pneumo.training import TrainResult, augment_batch, extract_features, predict_proba, train_classifier

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


SIZE = 32
TIMING = ["seconds", "images_per_s", "data_wait_fraction"]
HISTORY_COLUMNS = [
    "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc", "val_auc",
    "seconds", "images_per_s", "data_wait_fraction",
]


def make_discs(n: int, seed: int, size: int = SIZE, positive_rate: float = 0.3):
    """(n, size, size) uint8 noisy backgrounds; positives get a bright disc somewhere central."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_rate).astype(np.int64)
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(80, 20, (n, size, size))
    for i in np.flatnonzero(y):
        cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
        images[i][(yy - cy) ** 2 + (xx - cx) ** 2 < (0.12 * size) ** 2] += 100
    return images.clip(0, 255).astype(np.uint8), y


@pytest.fixture(scope="module")
def data():
    xt, yt = make_discs(200, seed=0)
    xv, yv = make_discs(100, seed=1)
    return xt, yt, xv, yv


def tiny_vgg(seed: int = 0) -> VGGNet:
    torch.manual_seed(seed)
    return VGGNet(num_classes=2, width=8, depth=3, dropout=0.1)


def fit(model, data, **kwargs) -> TrainResult:
    xt, yt, xv, yv = data
    args = dict(num_classes=2, epochs=6, batch_size=32, lr=3e-3, device=CPU, seed=0, progress=False)
    return train_classifier(model, xt, yt, xv, yv, **{**args, **kwargs})


# -- normalisation ---------------------------------------------------------------------------
def test_to_model_input_and_inverse():
    u8 = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)  # (1, 1, 3)
    x = to_model_input(u8)
    assert x.shape == (1, 1, 1, 3) and x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(), torch.tensor([-2.0, 128 / 255 / 0.25 - 2.0, 2.0]))
    assert to_model_input(u8.unsqueeze(1)).shape == (1, 1, 1, 3)
    full = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(from_model_input(to_model_input(full)), full)
    with pytest.raises(TypeError):
        to_model_input(full.float())


# -- augmentation ----------------------------------------------------------------------------
def test_augment_batch_shape_device_dtype_and_determinism():
    x = to_model_input(torch.from_numpy(make_discs(8, seed=2, positive_rate=1.0)[0]))  # (8, 1, 32, 32)
    a = augment_batch(x, torch.Generator(device=x.device).manual_seed(0))
    b = augment_batch(x, torch.Generator(device=x.device).manual_seed(0))
    c = augment_batch(x, torch.Generator(device=x.device).manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a - x).abs().mean() > 0.05  # the image really changes
    assert a.min() >= -2 and a.max() <= 2  # stays in the valid pixel range
    x_cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(augment_batch(x_cl, torch.Generator().manual_seed(0)), a)


def test_border_mask_blacks_out_a_frame_on_about_half_the_images_and_nothing_else():
    identity = dict(max_rotation_deg=0.0, scale_range=(1.0, 1.0), max_translate=0.0, max_brightness=0.0,
                    max_contrast=0.0, max_gamma=1.0)
    white = torch.full((64, 1, 32, 32), 2.0)
    plain = augment_batch(white, torch.Generator().manual_seed(0), **identity)
    # border_mask=0 draws nothing more: the same generator gives the same batch.
    torch.testing.assert_close(augment_batch(white, torch.Generator().manual_seed(0), border_mask=0.0, **identity),
                               plain)
    masked = augment_batch(white, torch.Generator().manual_seed(0), border_mask=0.25, **identity)
    framed = masked[:, 0, 0, 0] == -2.0  # (B,) corner blacked out
    assert 16 <= int(framed.sum()) <= 48
    assert (masked[:, :, 8:24, 8:24] == 2.0).all()  # 25% of 32 px is at most 8: the centre is kept
    widths = (masked[framed, 0, 16, :16] == -2.0).sum(dim=1)  # (n_framed,) frame width on the left, px
    assert widths.min() >= 1 and widths.max() <= 8 and len(set(widths.tolist())) > 2


def test_augment_batch_identity_settings_and_black_padding():
    x = to_model_input(torch.from_numpy(make_discs(4, seed=3)[0]))
    identity = augment_batch(x, torch.Generator().manual_seed(0), max_rotation_deg=0.0, scale_range=(1.0, 1.0),
                             max_translate=0.0, max_brightness=0.0, max_contrast=0.0, max_gamma=1.0)
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)
    # Zooming out of a white image brings in black (not mid-grey) from outside the frame.
    white = torch.full((2, 1, 32, 32), 2.0)
    out = augment_batch(white, torch.Generator().manual_seed(0), scale_range=(0.7, 0.7), max_translate=0.0,
                        max_brightness=0.0, max_contrast=0.0, max_gamma=1.0)
    assert out[:, :, 0, 0].max() == -2.0 and out[:, :, 16, 16].min() == 2.0


def test_augment_geometry_matches_affine_grid(monkeypatch):
    """Our broadcast-built sampling grid equals F.affine_grid for the same transform."""
    B, H, W = 3, 24, 40
    grids = []
    real = F.grid_sample
    monkeypatch.setattr(augment.F, "grid_sample", lambda inp, grid, **kw: grids.append(grid) or real(inp, grid, **kw))
    augment_batch(torch.zeros(B, 1, H, W), torch.Generator().manual_seed(5))
    u = torch.rand(B, 7, generator=torch.Generator().manual_seed(5))
    sym = 2 * u - 1
    angle = sym[:, 0] * math.radians(10)
    scale = 0.9 + 0.2 * u[:, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos, -sin * H / W, 0.12 * sym[:, 2]], 1),
        torch.stack([sin * W / H, cos, 0.12 * sym[:, 3]], 1),
    ], 1)
    torch.testing.assert_close(grids[0], F.affine_grid(theta, [B, 1, H, W], align_corners=False))


# -- training --------------------------------------------------------------------------------
@pytest.mark.parametrize("balance", ["weights", "sampling", "none"])
def test_training_learns(data, balance):
    result = fit(tiny_vgg(), data, balance=balance, patience=0)
    h = result.history
    assert list(h.columns) == HISTORY_COLUMNS and len(h) == 6 and not result.stopped_early
    assert h["val_auc"].max() > 0.9
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    assert ((h["data_wait_fraction"] >= 0) & (h["data_wait_fraction"] < 1)).all()
    assert (h["images_per_s"] > 0).all()
    assert 1 <= result.best_epoch <= 6
    assert h.loc[h["epoch"] == result.best_epoch, "val_auc"].item() == h["val_auc"].max()
    # best_state is a CPU copy that loads into a fresh model.
    assert all(v.device.type == "cpu" for v in result.best_state.values())
    fresh = tiny_vgg(seed=1)
    fresh.load_state_dict(result.best_state)


def test_training_is_deterministic_on_cpu(data):
    a = fit(tiny_vgg(), data, epochs=3, seed=7)
    b = fit(tiny_vgg(), data, epochs=3, seed=7)
    c = fit(tiny_vgg(), data, epochs=3, seed=8)
    pd.testing.assert_frame_equal(a.history.drop(columns=TIMING), b.history.drop(columns=TIMING))
    assert not a.history.drop(columns=TIMING).equals(c.history.drop(columns=TIMING))
    for k in a.best_state:
        assert torch.equal(a.best_state[k], b.best_state[k]), k


def test_keyboard_interrupt_returns_best_state_so_far(data, monkeypatch, caplog):
    real = classifier._evaluate
    calls = []

    def interrupt_on_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(classifier, "_evaluate", interrupt_on_second_epoch)
    model = tiny_vgg()
    with caplog.at_level("WARNING", logger="pneumo.training"):
        result = fit(model, data, epochs=5)
    assert result.stopped_early and result.best_epoch == 1 and len(result.history) == 1
    assert set(result.best_state) == set(model.state_dict())
    assert any("interrupted" in r.message for r in caplog.records)


def test_early_stopping_when_nothing_improves(data):
    # A BatchNorm-free linear model with lr=0 produces the same validation metrics every epoch.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 2))
    result = fit(model, data, epochs=10, lr=0.0, patience=2, augment=False)
    assert result.stopped_early and result.best_epoch == 1 and len(result.history) == 3


def test_lr_schedule_and_class_weights():
    lrs = [loop._lr_at(s, base_lr=1.0, warmup_steps=4, total_steps=20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # monotone cosine decay
    assert lrs[-1] < 0.05
    counts = torch.tensor([30, 10, 0])
    w = classifier._class_weights(counts)
    assert w[2] == 0 and math.isclose(float((w * counts).sum()), 40.0, rel_tol=1e-6)
    assert math.isclose(float(w[1] / w[0]), 3.0, rel_tol=1e-6)


def test_bad_arguments_rejected(data):
    with pytest.raises(ValueError, match="balance"):
        fit(tiny_vgg(), data, balance="oversample")
    with pytest.raises(ValueError, match="select_metric"):
        fit(tiny_vgg(), data, select_metric="auc")
    xt, yt, xv, yv = data
    with pytest.raises(TypeError, match="uint8"):
        train_classifier(tiny_vgg(), xt.astype(np.float32), yt, xv, yv, num_classes=2, epochs=1, device=CPU)


# -- inference -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_predict_proba_and_features(data, mode):
    model = tiny_vgg()
    model.train(mode == "train")
    xv = data[2][:37]
    proba = predict_proba(model, xv, batch_size=16, device=CPU)
    assert proba.shape == (37, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert model.training == (mode == "train")
    # Same as running the model by hand in eval mode.
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(to_model_input(torch.from_numpy(xv))), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    feats = extract_features(model, xv[:, None], batch_size=10, device=CPU)  # (N, 1, H, W) accepted
    assert feats.shape == (37, model.embedding_dim)


def test_border_frame_stays_on_without_augmentation_and_then_alone():
    from pneumo.training.augment import NO_JITTER
    from pneumo.training.classifier import _augment_options

    assert _augment_options(True, 0.0) is None and _augment_options(False, 0.0) is None
    assert _augment_options(True, 0.12) == {"border_mask": 0.12}
    alone = _augment_options(False, 0.12)
    assert alone == {**NO_JITTER, "border_mask": 0.12}
    x = to_model_input(torch.from_numpy(make_discs(4, seed=3)[0]))
    kept = augment_batch(x, torch.Generator().manual_seed(0), **{**alone, "border_mask": 0.0})
    torch.testing.assert_close(kept, x, atol=1e-5, rtol=0)  # no jitter at all


def test_mixup_learns_reproducibly_and_changes_the_training(data):
    a = fit(tiny_vgg(), data, epochs=4, mixup=0.4, patience=0)
    b = fit(tiny_vgg(), data, epochs=4, mixup=0.4, patience=0)
    plain = fit(tiny_vgg(), data, epochs=4, patience=0)
    pd.testing.assert_frame_equal(a.history.drop(columns=TIMING), b.history.drop(columns=TIMING))
    assert not a.history["train_loss"].equals(plain.history["train_loss"])
    assert a.history["val_auc"].max() > 0.9  # the discs are still learnt from blended images


def test_test_time_augmentation_averages_jittered_views(data):
    from pneumo.training.augment import jittered_copies

    model = tiny_vgg().eval()
    xv = data[2][:20]
    once = predict_proba(model, xv, device=CPU, tta=2, seed=3)
    np.testing.assert_allclose(once, predict_proba(model, xv, device=CPU, tta=2, seed=3))
    views = np.concatenate([xv, jittered_copies(xv, 2, seed=3)])
    expected = predict_proba(model, views, device=CPU).reshape(3, 20, 2).mean(axis=0)
    np.testing.assert_allclose(once, expected, atol=1e-6)
    assert not np.allclose(once, predict_proba(model, xv, device=CPU))
