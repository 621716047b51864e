"""Checks that explanations are worth reading.

* **Model-parameter randomisation** (Adebayo et al. 2018, "Sanity checks for saliency
  maps"): re-initialise the network's layers from the top (classifier head, then the last
  block, ... down to the first) and recompute the maps. A method whose maps stay the same
  when the weights that produced the decision are random explains the image, not the
  model. Similarity is the Spearman rank correlation of the absolute maps, per image.
* **Deletion / insertion** (Petsiuk et al. 2018, RISE): remove the most attributed pixels
  first and follow the explained class's probability (deletion: should fall fast, low
  area under the curve is good); or start from an uninformative image and insert the most
  attributed pixels first (insertion: should rise fast, high area is good). A random pixel
  order gives the baseline every method must beat. "Removed" pixels take the value of a
  reference image, the mean training image, so the edited images stay chest-like instead
  of having black holes the network never saw.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn

from pneumo.explain.attribution import eval_mode, require_vgg

__all__ = ["randomisation_stages", "randomised_copy", "rank_correlation", "perturbation_curves", "curve_auc"]


def randomisation_stages(model: nn.Module) -> list[str]:
    """Layer groups in cascading order: ``["head", "blockD", ..., "block1"]``."""
    require_vgg(model)
    return ["head", *reversed([name for name, _ in model.blocks.named_children()])]


def _reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Fresh random weights drawn like the network's own initialisation (He for convs, unit
    BatchNorm with reset statistics, small normal head)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # weight 1, bias 0, running mean 0, running var 1
        elif isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.01)
                m.bias.zero_()


def randomised_copy(model: nn.Module, stages: int, *, random_state: int = 0) -> nn.Module:
    """A deep copy of the network with its top ``stages`` layer groups re-initialised.

    ``stages`` counts :func:`randomisation_stages` from the top: 1 randomises the head, 2 the
    head and the last block, ...; the original network is untouched.
    """
    names = randomisation_stages(model)
    if not 0 <= stages <= len(names):
        raise ValueError(f"stages must be in [0, {len(names)}], got {stages}")
    twin = copy.deepcopy(model)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(random_state)
    for name in names[:stages]:
        _reinitialise(twin.head if name == "head" else getattr(twin.blocks, name), generator)
    return twin.to(device).eval()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of ``|a_i|`` and ``|b_i|`` per map (N, H, W) pair.

    A constant map (e.g. an all-zero Grad-CAM of a random network) shares no ranking with
    anything: its correlation is reported as 0.
    """
    a, b = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    out = np.zeros(len(a))
    for i in range(len(a)):
        x, y = a[i].ravel(), b[i].ravel()
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        out[i] = spearmanr(x, y).statistic
    return out


def _order(attribution: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel indices, most attributed first; ties (flat Grad-CAM areas) broken at random."""
    flat = np.asarray(attribution, np.float64).ravel()
    return np.lexsort((rng.random(flat.size), -flat))


@torch.no_grad()
def perturbation_curves(model: nn.Module, x: Tensor, target: int, attribution: np.ndarray | None,
                        reference: Tensor, *, steps: int = 16, random_state: int = 0) -> dict[str, np.ndarray]:
    """Deletion and insertion curves of one image.

    Parameters
    ----------
    model
        The network (eval mode for the call, flags restored).
    x
        (1, 1, H, W) normalised input; not modified.
    target
        The explained class.
    attribution
        (H, W) map; pixels are taken in decreasing order of its (signed) value. None: a
        random order (the baseline).
    reference
        (1, 1, H, W) normalised image that removed pixels take (the mean training image).
    steps
        Fractions ``0, 1/steps, ..., 1`` of the pixels removed / inserted.
    random_state
        Seed of the tie-break (or of the random order).

    Returns
    -------
    dict
        ``deletion`` and ``insertion``: (steps + 1,) probabilities of ``target``.
    """
    H, W = x.shape[-2:]
    rng = np.random.default_rng(random_state)
    order = rng.permutation(H * W) if attribution is None else _order(attribution, rng)
    rank = np.empty(H * W, dtype=np.int64)
    rank[order] = np.arange(H * W)
    counts = np.round(np.linspace(0, H * W, steps + 1)).astype(int)
    # (S+1, 1, H, W) masks: True where the pixel is among the first `count` of the order.
    first = torch.as_tensor(rank.reshape(1, 1, H, W) < counts.reshape(-1, 1, 1, 1), device=x.device)
    x, reference = x.float(), reference.float().to(x.device)
    deleted = torch.where(first, reference, x)  # most attributed pixels replaced first
    inserted = torch.where(first, x, reference)  # most attributed pixels restored first
    with eval_mode(model):
        p_del = torch.softmax(model(deleted), 1)[:, target]
        p_ins = torch.softmax(model(inserted), 1)[:, target]
    return {"deletion": p_del.cpu().numpy(), "insertion": p_ins.cpu().numpy()}


def curve_auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves sampled at equally spaced fractions of [0, 1] (trapezoids), per row."""
    curve = np.atleast_2d(np.asarray(curve, np.float64))
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2 * (curve.shape[1] - 1))
