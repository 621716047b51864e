"""Tests of pneumo.models: VGG shapes and names, architecture table, torchxrayvision loading."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pneumo.models import (
    VGGNet,
    XRVWeightsUnavailable,
    architecture_table,
    build_model,
    count_parameters,
    load_xrv_densenet,
    xrv_weights_path,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_vgg() -> VGGNet:
    torch.manual_seed(0)
    return VGGNet(num_classes=3, width=8, depth=3, convs_per_block=2, dropout=0.3)


def test_vgg_shapes(small_vgg):
    x = torch.randn(5, 1, 32, 32)
    assert small_vgg.embedding_dim == 8 * 2**2
    assert small_vgg.features(x).shape == (5, 32)
    assert small_vgg(x).shape == (5, 3)
    # Non-square inputs work too (global pooling).
    assert small_vgg(torch.randn(2, 1, 40, 24)).shape == (2, 3)


def test_vgg_named_layers(small_vgg):
    convs = small_vgg.conv_layers()
    assert list(convs) == [f"block{b}.conv{i}" for b in (1, 2, 3) for i in (1, 2)]
    assert all(isinstance(c, nn.Conv2d) and c.bias is None and c.kernel_size == (3, 3) for c in convs.values())
    assert [c.out_channels for c in convs.values()] == [8, 8, 16, 16, 32, 32]
    last = small_vgg.last_conv_per_block()
    assert list(last) == ["block1", "block2", "block3"]
    assert last["block2"] is small_vgg.blocks.block2.conv2
    names = dict(small_vgg.named_modules())
    for name in ("blocks.block1.conv1", "blocks.block1.bn1", "blocks.block1.relu1", "blocks.block3.pool", "head"):
        assert name in names
    assert isinstance(small_vgg.head[-1], nn.Linear) and isinstance(small_vgg.head[0], nn.Dropout)


def test_vgg_convs_per_block_and_validation():
    m = VGGNet(2, width=4, depth=2, convs_per_block=3)
    assert list(m.conv_layers())[:3] == ["block1.conv1", "block1.conv2", "block1.conv3"]
    assert m.last_conv_per_block()["block1"] is m.blocks.block1.conv3
    with pytest.raises(ValueError):
        VGGNet(2, depth=0)
    with pytest.raises(ValueError):
        VGGNet(2, dropout=1.0)


def test_architecture_table_sums_to_parameter_count(small_vgg):
    small_vgg.train()
    table = architecture_table(small_vgg, input_shape=(1, 1, 32, 32))
    assert list(table.columns) == ["layer", "type", "output_shape", "parameters"]
    total = count_parameters(small_vgg)
    assert table.iloc[-1]["layer"] == "total" and table.iloc[-1]["parameters"] == total
    assert table.iloc[:-1]["parameters"].sum() == total
    assert "(unused)" not in set(table["layer"])
    rows = table.set_index("layer")
    assert rows.loc["blocks.block1.conv1", "output_shape"] == (8, 32, 32)
    assert rows.loc["blocks.block3.pool", "output_shape"] == (32, 4, 4)
    assert rows.loc["head.fc", "output_shape"] == (3,)
    assert rows.loc["blocks.block1.conv1", "parameters"] == 8 * 1 * 9
    # Hooks removed and mode restored.
    assert all(not m._forward_hooks for m in small_vgg.modules())
    assert small_vgg.training


def test_count_parameters_trainable_only(small_vgg):
    for p in small_vgg.blocks.parameters():
        p.requires_grad_(False)
    head = sum(p.numel() for p in small_vgg.head.parameters())
    assert count_parameters(small_vgg, trainable_only=True) == head
    assert count_parameters(small_vgg) > head


def test_build_model_from_dict_and_config_object():
    cfg = {"num_classes": 3, "width": 4, "depth": 2, "convs_per_block": 1, "dropout": 0.1, "lr": 1e-3}
    m = build_model(cfg)
    assert isinstance(m, VGGNet) and m.num_classes == 3 and m.embedding_dim == 8
    assert list(m.conv_layers()) == ["block1.conv1", "block2.conv1"]
    obj = SimpleNamespace(to_dict=lambda: {**cfg, "arch": "vgg"})
    assert count_parameters(build_model(obj)) == count_parameters(m)
    with pytest.raises(ValueError, match="unknown arch"):
        build_model({**cfg, "arch": "resnet"})


# -- torchxrayvision ------------------------------------------------------------------------
@pytest.fixture
def xrv_cache(tmp_path, monkeypatch):
    """An empty torchxrayvision cache folder, with downloads made to fail loudly."""
    import torchxrayvision as xrv

    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path) + "/")

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(xrv.utils, "download", no_download)
    return tmp_path


def test_xrv_missing_weights_raise_without_download(xrv_cache):
    path = xrv_weights_path("densenet121-res224-all")
    assert path.parent == xrv_cache and path.suffix == ".pt"
    t0 = time.perf_counter()
    with pytest.raises(XRVWeightsUnavailable) as err:
        load_xrv_densenet(2)
    assert time.perf_counter() - t0 < 5
    message = str(err.value)
    assert path.name in message and str(xrv_cache) in message and "offline" in message
    with pytest.raises(XRVWeightsUnavailable):
        build_model({"num_classes": 2, "arch": "xrv-densenet121"})
    with pytest.raises(ValueError, match="unknown torchxrayvision weights"):
        xrv_weights_path("no-such-weights")


class _Payload:
    """Unpickling this creates ``path``: stands for any code a tampered pickle could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_xrv_weights_copied_in_by_hand_cannot_run_code(xrv_cache, tmp_path):
    """A DenseNet file that is not the published one is refused before it is unpickled."""
    path = xrv_weights_path("densenet121-res224-all")
    marker = tmp_path / "code-ran"
    torch.save({"model": _Payload(marker)}, path)
    with pytest.raises(XRVWeightsUnavailable, match=rf"{path} is not the published torchxrayvision "
                                                    r"file .*SHA-256.*fresh download of https://"):
        load_xrv_densenet(2)
    assert not marker.exists()


def test_xrv_autoencoder_weights_cannot_run_code(xrv_cache, tmp_path):
    from pneumo.anomaly import XRVAutoencoderUnavailable, load_xrv_autoencoder, xrv_autoencoder_path

    marker = tmp_path / "code-ran"
    torch.save({"encoder.weight": _Payload(marker)}, xrv_autoencoder_path())
    with pytest.raises(XRVAutoencoderUnavailable, match=r"is not plain weights.*weights_only=True"):
        load_xrv_autoencoder()
    assert not marker.exists()


def test_xrv_autoencoder_missing_weights_raise_the_densenets_error(xrv_cache):
    """Both comparators say "weights can't be had" with one error class, naming file and fix."""
    from pneumo.anomaly import XRVAutoencoderUnavailable, load_xrv_autoencoder, xrv_autoencoder_path

    assert XRVAutoencoderUnavailable is XRVWeightsUnavailable
    path = xrv_autoencoder_path()
    with pytest.raises(XRVWeightsUnavailable) as err:
        load_xrv_autoencoder()
    message = str(err.value)
    assert path.name in message and str(xrv_cache) in message and "offline" in message and "wget" in message


def test_xrv_loads_self_written_weights(xrv_cache, monkeypatch):
    import hashlib

    import torchxrayvision as xrv

    import pneumo.models.xrv as xrv_module

    # torchxrayvision stores whole pickled modules; write a randomly initialised one, and pin
    # its hash as if it were the published file.
    torch.manual_seed(0)
    source = xrv.models.DenseNet()
    path = xrv_weights_path("densenet121-res224-all")
    torch.save(source, path)
    monkeypatch.setitem(xrv_module.PINNED_SHA256, "densenet121-res224-all",
                        hashlib.sha256(path.read_bytes()).hexdigest())

    model = load_xrv_densenet(num_classes=3)
    loaded = model.net.features.conv0.weight
    assert torch.equal(loaded, source.features.conv0.weight)
    assert model.net.op_threshs is None and isinstance(model.head, nn.Linear)
    assert model.head.out_features == 3 and model.embedding_dim == 1024

    model.eval()
    x = torch.randn(2, 1, 64, 64)  # our normalisation, any size: resized to 224 inside
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert feats.shape == (2, 1024)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, model.head(feats))
    # The backbone sees torchxrayvision's [-1024, 1024] range: 512 * our input at 224 px.
    source.eval()
    with torch.no_grad():
        expected = source.features2(512 * torch.nn.functional.interpolate(
            x, size=(224, 224), mode="bilinear", antialias=True))
    torch.testing.assert_close(feats, expected)


def test_intensity_stretch_removes_exposure():
    """With ``intensity="stretch"`` the network's output does not depend on a film's exposure
    (brightness and contrast: any increasing affine map of the grey levels), gradients still
    reach the input, and a saved config without the field builds the plain network."""
    from pneumo.models import IntensityStretch, build_model

    torch.manual_seed(0)
    model = build_model({"num_classes": 3, "width": 4, "depth": 2, "intensity": "stretch"}).eval()
    x = torch.randn(3, 1, 32, 32).clamp(-2, 2)
    darker = 0.6 * x - 0.5
    assert torch.allclose(model(x), model(darker), atol=1e-4)
    assert torch.allclose(model.features(x), model.features(darker), atol=1e-4)
    x.requires_grad_(True)
    model(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    plain = build_model({"num_classes": 3, "width": 4, "depth": 2})
    assert plain.stretch is None and not torch.allclose(plain.eval()(x), plain(darker), atol=1e-4)
    out = IntensityStretch()(torch.full((1, 1, 8, 8), 0.3))  # a flat image: no division by zero
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="intensity"):
        build_model({"num_classes": 2, "intensity": "equalize"})
