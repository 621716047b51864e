"""A small VGG-style CNN for grey chest X-rays, and helpers to describe and build models.

The network is deliberately plain so that every layer can be named in the report and
probed by Grad-CAM::

    input (B, 1, H, W)
    stretch: each image's 1st..99th percentile -> full range (optional) (B, 1, H, W)
    block1: [conv3x3 -> BN -> ReLU] x convs_per_block -> maxpool2   (B, w,    H/2,  W/2)
    block2: [conv3x3 -> BN -> ReLU] x convs_per_block -> maxpool2   (B, 2w,   H/4,  W/4)
    ...
    blockD:                                                         (B, w*2^(D-1), H/2^D, W/2^D)
    global average pooling                                          (B, w*2^(D-1))   <- features()
    head: Dropout -> Linear                                         (B, num_classes) <- forward()
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import pandas as pd
import torch
from torch import Tensor, nn

from pneumo.imaging import BLACK, WHITE

#: Per-image input normalisations a :class:`VGGNet` can start with.
INTENSITY_MODES = ("none", "stretch")


class IntensityStretch(nn.Module):
    """Per-image linear contrast stretch, the first layer of a network: no parameters.

    Each image's ``low`` and ``high`` quantiles are mapped to the normalised values of pixel
    0 and 255 (:data:`pneumo.imaging.BLACK`, ``WHITE``) and values beyond are clipped, so
    that a film's exposure and contrast no longer matter, only the order and relative spacing
    of its grey levels. The quantiles are treated as constants for gradients: an attribution
    of the network's output to its input sees a per-image linear map.

    Shapes: (B, 1, H, W) -> (B, 1, H, W).
    """

    def __init__(self, low: float = 0.01, high: float = 0.99):
        super().__init__()
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"need 0 <= low < high <= 1, got {low=}, {high=}")
        self.low, self.high = low, high

    def forward(self, x: Tensor) -> Tensor:
        flat = x.detach().flatten(1)  # (B, H*W)
        n = flat.shape[1]
        # kthvalue, not torch.quantile: the latter refuses inputs over 16M elements (big batches).
        lo = flat.kthvalue(max(1, round(self.low * (n - 1)) + 1), dim=1).values  # (B,)
        hi = flat.kthvalue(max(1, round(self.high * (n - 1)) + 1), dim=1).values
        scale = (WHITE - BLACK) / (hi - lo).clamp_min(1e-3)  # a flat image maps to BLACK
        y = (x - lo.view(-1, 1, 1, 1)) * scale.view(-1, 1, 1, 1) + BLACK
        return y.clamp(BLACK, WHITE)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


class VGGNet(nn.Module):
    """VGG-style classifier: blocks of 3x3 conv -> BatchNorm -> ReLU, then max-pooling.

    Parameters
    ----------
    num_classes
        Number of output logits.
    width
        Channels of the first block; block ``b`` (0-based) has ``width * 2**b`` channels.
    depth
        Number of blocks; each halves the spatial size, so the input side must be
        divisible by ``2**depth`` for exact pooling (other sizes are floored).
    convs_per_block
        Conv -> BN -> ReLU repeats per block.
    dropout
        Dropout probability before the final linear layer.
    in_channels
        Input channels (1 for grey X-rays).
    intensity
        ``"stretch"`` starts the network with :class:`IntensityStretch` (per-image contrast
        normalisation, no parameters); ``"none"`` feeds the input as it is.

    Notes
    -----
    Convolutions have no bias because the BatchNorm that follows has its own shift.
    ReLUs are not in-place so that forward/backward hooks (Grad-CAM) can be attached to
    any layer without autograd complaining about tensors modified in place.
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 16,
        depth: int = 4,
        convs_per_block: int = 2,
        dropout: float = 0.3,
        in_channels: int = 1,
        intensity: str = "none",
    ):
        super().__init__()
        if num_classes < 1 or width < 1 or depth < 1 or convs_per_block < 1:
            raise ValueError(
                "num_classes, width, depth and convs_per_block must all be >= 1, got "
                f"{num_classes=}, {width=}, {depth=}, {convs_per_block=}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")
        self.num_classes = num_classes
        self.width, self.depth, self.convs_per_block = width, depth, convs_per_block
        self.intensity = intensity
        # No module at all for "none", so that the architecture table lists only what runs.
        self.stretch = IntensityStretch() if intensity == "stretch" else None

        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for b in range(depth):
            c_out = width * 2**b
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for i in range(1, convs_per_block + 1):
                layers[f"conv{i}"] = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
                layers[f"bn{i}"] = nn.BatchNorm2d(c_out)
                layers[f"relu{i}"] = nn.ReLU()
                c_in = c_out
            layers["pool"] = nn.MaxPool2d(2)
            blocks[f"block{b + 1}"] = nn.Sequential(layers)
        self.blocks = nn.Sequential(blocks)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            OrderedDict(dropout=nn.Dropout(dropout), fc=nn.Linear(c_in, num_classes))
        )
        self._embedding_dim = c_in
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for convs (ReLU net), unit BN, small head."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    @property
    def embedding_dim(self) -> int:
        """Length of the :meth:`features` vector (channels of the last block)."""
        return self._embedding_dim

    def features(self, x: Tensor) -> Tensor:
        """Embedding after global average pooling.

        Parameters
        ----------
        x
            (B, 1, H, W) float input normalised by :func:`pneumo.imaging.to_model_input`.

        Returns
        -------
        Tensor
            (B, embedding_dim), before dropout and the linear head.
        """
        if self.stretch is not None:
            x = self.stretch(x)  # (B, 1, H, W), per-image contrast-normalised
        x = self.blocks(x)  # (B, C_last, H / 2**depth, W / 2**depth)
        return torch.flatten(self.gap(x), 1)  # (B, C_last)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes) for normalised input (B, 1, H, W)."""
        return self.head(self.features(x))

    def conv_layers(self) -> dict[str, nn.Conv2d]:
        """All convolutions in forward order, keyed ``'block1.conv1'``, ``'block1.conv2'``, ..."""
        return {
            f"{bname}.{lname}": layer
            for bname, block in self.blocks.named_children()
            for lname, layer in block.named_children()
            if isinstance(layer, nn.Conv2d)
        }

    def last_conv_per_block(self) -> dict[str, nn.Conv2d]:
        """The last convolution of every block, keyed ``'block1'``, ... (Grad-CAM targets)."""
        out: dict[str, nn.Conv2d] = {}
        for name, conv in self.conv_layers().items():
            out[name.split(".")[0]] = conv  # later convs of a block overwrite earlier ones
        return out


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once).

    Parameters
    ----------
    model
        Any module.
    trainable_only
        Count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def architecture_table(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 128, 128)) -> pd.DataFrame:
    """One row per executed leaf layer: name, type, output shape and parameter count.

    The shapes come from a real forward pass of a zero tensor with forward hooks, so the
    table cannot drift from the code.  The hooks are removed and the model's train/eval
    mode restored afterwards.

    Parameters
    ----------
    model
        The network; its first parameter's device is used for the dummy input.
    input_shape
        Shape of the dummy input including the batch dimension.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer``, ``type``, ``output_shape`` (tuple without the batch
        dimension) and ``parameters``; a last row ``total`` whose ``parameters`` equals
        :func:`count_parameters`.  Parameters of modules that never ran (if any) are
        listed in an extra ``(unused)`` row so the column still sums to the total.
    """
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inputs, output) -> None:
        if id(module) in seen:  # a module called twice is listed once
            return
        seen.add(id(module))
        shape = tuple(output.shape[1:]) if isinstance(output, Tensor) else None
        rows.append(
            {
                "layer": names[id(module)],
                "type": type(module).__name__,
                "output_shape": shape,
                "parameters": sum(p.numel() for p in module.parameters(recurse=False)),
            }
        )

    # Hook every module that owns parameters or has no children (ReLU, pooling, ...).
    hooked = [
        m for m in model.modules()
        if m is not model and (not list(m.children()) or list(m.parameters(recurse=False)))
    ]
    handles = [m.register_forward_hook(hook) for m in hooked]
    was_training = model.training
    try:
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    total = count_parameters(model)
    listed = sum(r["parameters"] for r in rows)
    if listed != total:
        rows.append({"layer": "(unused)", "type": "", "output_shape": None, "parameters": total - listed})
    rows.append({"layer": "total", "type": "", "output_shape": None, "parameters": total})
    return pd.DataFrame(rows, columns=["layer", "type", "output_shape", "parameters"])


def build_model(config_like: Mapping[str, Any] | Any) -> nn.Module:
    """Build the network a task config asks for.

    Parameters
    ----------
    config_like
        A mapping, or an object with ``to_dict()`` (a :class:`pneumo.config.TaskConfig`)
        or attributes, providing ``num_classes`` and optionally ``arch`` (``'vgg'``,
        default, or ``'xrv-densenet121'``), ``width``, ``depth``, ``convs_per_block``,
        ``dropout``, ``intensity`` (VGG; a config without it means ``"none"``, as models
        saved before it existed were trained) and ``xrv_weights`` (DenseNet).  Other keys are
        ignored.

    Returns
    -------
    torch.nn.Module
        A freshly initialised :class:`VGGNet`, or the pre-trained DenseNet wrapper.

    Raises
    ------
    pneumo.models.xrv.XRVWeightsUnavailable
        For ``'xrv-densenet121'`` when the weights file is not in the cache.
    """
    if isinstance(config_like, Mapping):
        cfg = dict(config_like)
    elif hasattr(config_like, "to_dict"):
        cfg = config_like.to_dict()
    else:
        cfg = dict(vars(config_like))
    if "num_classes" not in cfg:
        raise KeyError("build_model needs 'num_classes' in the config")
    arch = cfg.get("arch", "vgg")
    if arch == "vgg":
        kwargs = {k: cfg[k] for k in ("width", "depth", "convs_per_block", "dropout", "intensity")
                  if cfg.get(k) is not None}
        return VGGNet(num_classes=int(cfg["num_classes"]), **kwargs)
    if arch == "xrv-densenet121":
        from pneumo.models.xrv import DEFAULT_WEIGHTS, load_xrv_densenet

        return load_xrv_densenet(int(cfg["num_classes"]), weights=cfg.get("xrv_weights") or DEFAULT_WEIGHTS)
    raise ValueError(f"unknown arch {arch!r}; expected 'vgg' or 'xrv-densenet121'")
