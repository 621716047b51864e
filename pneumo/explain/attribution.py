"""Attribution maps: Grad-CAM (any block), integrated gradients and SHAP's gradient explainer.

Every method takes the network's normalised input ``x`` (B, 1, H, W) (made by
:func:`pneumo.imaging.to_model_input`) and one target class per image, and returns maps of
shape (B, H, W), one value per input pixel:

* :class:`GradCAM` (Selvaraju et al. 2017): the rectified, gradient-weighted sum of a block's
  channels, bilinearly upsampled to the input; non-negative, coarse (one value per cell of
  the block's grid).
* :func:`integrated_gradients` (Sundararajan et al. 2017): ``(x - x0) * mean_k grad f(x0 +
  a_k (x - x0))`` along the straight path from a black image ``x0``; signed, per pixel, sums
  to ``f(x) - f(x0)`` up to the Riemann error.
* :class:`ShapGradient` (Lundberg and Lee 2017): expected gradients, i.e. SHAP's
  ``GradientExplainer`` with a background of training images; signed, per pixel.

The score explained is the target class's logit. No method changes the network or its
input: hooks are registered inside context managers and removed on exit, the network's
train/eval flags are restored, gradients are taken with :func:`torch.autograd.grad` (so no
parameter ``.grad`` is written) and inputs are cloned.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pneumo.imaging import BLACK

__all__ = ["eval_mode", "block_layers", "require_vgg", "GradCAM", "integrated_gradients", "ShapGradient",
           "TargetLogit"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then restore each one's own flag."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def require_vgg(model: nn.Module) -> None:
    """Raise a clear error for networks without VGG blocks (the xrv DenseNet comparator)."""
    if not (hasattr(model, "blocks") and hasattr(model, "conv_layers")):
        raise TypeError(
            f"explanations need the project's VGG network (named blocks, per-block Grad-CAM, "
            f"neurons); got {type(model).__name__}. Task 1 chose a comparator here, which this "
            "task does not explain.")


def block_layers(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """The rectified output of each block's last convolution: ``{"block1": relu, ...}``.

    This is the layer Grad-CAM weights (non-negative activations, before the block's
    max-pooling), in forward order.
    """
    require_vgg(model)
    out: OrderedDict[str, nn.Module] = OrderedDict()
    for name, block in model.blocks.named_children():
        relus = [m for m in block.children() if isinstance(m, nn.ReLU)]
        if not relus:
            raise TypeError(f"{name} has no ReLU")
        out[name] = relus[-1]
    return out


def _targets(target, batch: int, device) -> Tensor:
    if isinstance(target, Tensor):
        t = target.detach().to(device=device, dtype=torch.long).reshape(-1)
    else:  # int, list or a (possibly read-only) NumPy array
        t = torch.as_tensor(np.array(target), dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"need one target per image ({batch}), got {t.numel()}")
    return t


class _Capture:
    """Forward hooks that keep the outputs of some layers; removed on exit."""

    def __init__(self, layers: Mapping[str, nn.Module]):
        self.layers = dict(layers)
        self.outputs: dict[str, Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "_Capture":
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_hook(self._keep(name)))
        return self

    def _keep(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = output
        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()


class GradCAM:
    """Grad-CAM at one or several layers, as a context manager whose hooks go on exit.

    Parameters
    ----------
    model
        The VGG network (any mode; it runs in eval mode and its flags are restored).
    layers
        ``{name: module}`` to explain at; default :func:`block_layers` (every block).

    Examples
    --------
    >>> with GradCAM(model) as cam:                     # doctest: +SKIP
    ...     maps = cam(x, target)                       # {"block1": (B, H, W), ...}
    """

    def __init__(self, model: nn.Module, layers: Mapping[str, nn.Module] | None = None):
        self.model = model
        self.layers = OrderedDict(layers if layers is not None else block_layers(model))
        self._capture: _Capture | None = None

    def __enter__(self) -> "GradCAM":
        self._capture = _Capture(self.layers).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._capture is not None:
            self._capture.__exit__(*exc)
            self._capture = None

    def __call__(self, x: Tensor, target, *, batch_size: int = 64) -> dict[str, Tensor]:
        """Maps (B, H, W) per layer, non-negative, at the input's size, on ``x``'s device."""
        if self._capture is None:
            raise RuntimeError("use GradCAM as a context manager: `with GradCAM(model) as cam: ...`")
        targets = _targets(target, x.shape[0], x.device)
        out: dict[str, list[Tensor]] = {name: [] for name in self.layers}
        with eval_mode(self.model), torch.enable_grad():
            for i in range(0, x.shape[0], batch_size):
                # A clone that requires grad keeps the graph even for frozen parameters.
                xb = x[i:i + batch_size].detach().clone().float().requires_grad_(True)
                logits = self.model(xb)  # (b, K)
                score = logits.gather(1, targets[i:i + batch_size, None]).sum()
                acts = [self._capture.outputs[name] for name in self.layers]  # (b, C_l, h_l, w_l)
                grads = torch.autograd.grad(score, acts)
                for name, a, g in zip(self.layers, acts, grads):
                    weights = g.mean(dim=(2, 3), keepdim=True)  # (b, C, 1, 1): channel importance
                    cam = F.relu((weights * a).sum(1, keepdim=True))  # (b, 1, h, w)
                    cam = F.interpolate(cam, size=xb.shape[-2:], mode="bilinear", align_corners=False)
                    out[name].append(cam[:, 0].detach())
                self._capture.outputs.clear()
        return {name: torch.cat(parts) for name, parts in out.items()}


def integrated_gradients(model: nn.Module, x: Tensor, target, *, steps: int = 32,
                         baseline: float | Tensor = BLACK, batch_size: int = 64) -> Tensor:
    """Integrated gradients of the target logits along the path from ``baseline`` to ``x``.

    Parameters
    ----------
    model
        The network; it runs in eval mode (flags restored).
    x
        (B, 1, H, W) normalised input; not modified.
    target
        One class index, or one per image.
    steps
        Points of the midpoint Riemann sum (``a_k = (k + 0.5) / steps``).
    baseline
        The reference input: a value in model units (default: black, pixel 0) or a tensor
        broadcastable to ``x``.
    batch_size
        Path points per forward/backward pass.

    Returns
    -------
    Tensor
        (B, H, W) signed attributions; their sum approximates ``f(x) - f(baseline)``.
    """
    targets = _targets(target, x.shape[0], x.device)
    alphas = (torch.arange(steps, device=x.device, dtype=torch.float32) + 0.5) / steps  # (S,)
    out = []
    with eval_mode(model), torch.enable_grad():
        for j in range(x.shape[0]):
            xj = x[j:j + 1].detach().float()  # (1, 1, H, W)
            x0 = torch.as_tensor(baseline, dtype=xj.dtype, device=xj.device).expand_as(xj)
            total = torch.zeros_like(xj)
            for i in range(0, steps, batch_size):
                a = alphas[i:i + batch_size].view(-1, 1, 1, 1)
                path = (x0 + a * (xj - x0)).requires_grad_(True)  # (s, 1, H, W)
                score = model(path)[:, targets[j]].sum()
                total += torch.autograd.grad(score, path)[0].sum(0, keepdim=True)
            out.append(((xj - x0) * total / steps)[:, 0])
    return torch.cat(out).detach()


class TargetLogit(nn.Module):
    """``model(x)[:, [target]]``: one output, for explainers that explain every output."""

    def __init__(self, model: nn.Module, target: int):
        super().__init__()
        self.model, self.target = model, int(target)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[:, self.target:self.target + 1]


class ShapGradient:
    """SHAP values by expected gradients (``shap.GradientExplainer``), per target class.

    Parameters
    ----------
    nsamples
        Gradient samples per image (background image and interpolation point drawn at random).
    batch_size
        Samples per forward/backward pass.
    random_state
        Seed of shap's sampling (shap seeds NumPy's global generator; its state is restored).

    Notes
    -----
    ``fit`` keeps the background (training images, normalised input); ``attribute`` builds
    one explainer per target class around :class:`TargetLogit`, so only the explained logit
    is differentiated. shap calls ``.eval()`` and ``zero_grad()`` on the module it gets; the
    flags are restored afterwards and the weights are untouched.
    """

    def __init__(self, nsamples: int = 32, batch_size: int = 32, random_state: int = 0):
        self.nsamples, self.batch_size, self.random_state = nsamples, batch_size, random_state

    def fit(self, model: nn.Module, background: Tensor) -> "ShapGradient":
        self.model_ = model
        self.background_ = background.detach().float()
        return self

    def attribute(self, x: Tensor, target) -> Tensor:
        """(B, H, W) signed SHAP values of the target logits for normalised ``x`` (B, 1, H, W)."""
        import shap

        targets = _targets(target, x.shape[0], x.device).cpu().numpy()
        out = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.float32)
        state = np.random.get_state()
        try:
            with eval_mode(self.model_):
                for t in np.unique(targets):
                    idx = np.flatnonzero(targets == t)
                    explainer = shap.GradientExplainer(TargetLogit(self.model_, int(t)), self.background_,
                                                       batch_size=self.batch_size)
                    values = explainer.shap_values(x[idx].detach().float().clone(), nsamples=self.nsamples,
                                                   rseed=self.random_state)
                    values = np.asarray(values[0] if isinstance(values, list) else values)
                    values = values.reshape(len(idx), -1, *x.shape[-2:]).sum(1)  # (n, H, W)
                    out[idx] = torch.as_tensor(values, dtype=torch.float32)
        finally:
            np.random.set_state(state)
        return out.to(x.device)


def attribute_all(model: nn.Module, x: Tensor, target, *, ig_steps: int, shap: ShapGradient | None,
                  methods: Sequence[str] = ("gradcam", "integrated_gradients", "shap")) -> dict[str, Tensor]:
    """The maps of several methods on the same images: ``{method: (B, H, W)}``.

    ``gradcam`` is Grad-CAM at the last block; ``gradcam_blocks`` adds every block as
    ``gradcam_<block>``.
    """
    out: dict[str, Tensor] = {}
    if "gradcam" in methods or "gradcam_blocks" in methods:
        layers = block_layers(model)
        with GradCAM(model, layers) as cam:
            maps = cam(x, target)
        out["gradcam"] = maps[next(reversed(layers))]
        if "gradcam_blocks" in methods:
            out.update({f"gradcam_{name}": m for name, m in maps.items()})
    if "integrated_gradients" in methods:
        out["integrated_gradients"] = integrated_gradients(model, x, target, steps=ig_steps)
    if "shap" in methods:
        if shap is None:
            raise ValueError("the shap method needs a fitted ShapGradient")
        out["shap"] = shap.attribute(x, target)
    return out
