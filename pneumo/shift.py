"""Controlled, realistic shifts of X-ray images, and how a model's figures hold up under them.

Validation images come from the training pool, so a model that fits the pool's look (its
exposure, its framing, its border) scores near-perfectly there and still fails on films from
elsewhere. This module measures that on validation itself, without any outside data: each
:data:`SHIFTS` entry changes one aspect of acquisition (exposure and contrast, sharpness and
noise, framing and rotation, the border frame) by a fixed, moderate amount, and
:func:`score_under_shifts` scores a model on every shifted copy of the images.

Shifts act on the stored uint8 pixels (N, H, W) before the network's own input
normalisation, as a film from another machine would arrive. They are deterministic (noise
uses a fixed seed), so the same images always give the same table.

:func:`compare_threshold_rules` asks which rule for a binary decision threshold transfers to
shifted images, judging each rule on shifts it did not see (leave one shift out).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pneumo.data import CLASSES
from pneumo.imaging import gaussian_blur
from pneumo.metrics import binary_metrics, choose_threshold, multiclass_metrics, viral_given_pneumonia

__all__ = ["Shift", "SHIFTS", "SELECTION_CRITERIA", "apply_shift", "score_under_shifts", "robustness_summary",
           "THRESHOLD_RULES_UNDER_SHIFT", "compare_threshold_rules", "summarise_threshold_rules",
           "choose_threshold_rule", "threshold_under_shift", "multiclass_shift_metrics"]


@dataclasses.dataclass(frozen=True)
class Shift:
    """One acquisition change: a name, the aspect it changes, and its fixed strength.

    ``kind`` is one of ``none``, ``gamma``, ``contrast``, ``window``, ``blur``, ``noise``,
    ``zoom``, ``translate``, ``rotate``, ``border``; ``amount`` is its parameter (see
    :func:`apply_shift`).
    """

    name: str
    group: str
    kind: str
    amount: float = 0.0


#: The shifts of the benchmark, grouped by the aspect of acquisition they change. Strengths
#: are moderate: each stays within what a radiologist would still read as a normal film.
SHIFTS: tuple[Shift, ...] = (
    Shift("none", "none", "none"),
    Shift("darker (gamma 1.5)", "exposure", "gamma", 1.5),
    Shift("brighter (gamma 0.67)", "exposure", "gamma", 1 / 1.5),
    Shift("lower contrast (x0.7)", "exposure", "contrast", 0.7),
    Shift("higher contrast (x1.3)", "exposure", "contrast", 1.3),
    Shift("narrow window (5-95%)", "exposure", "window", 5.0),
    Shift("blur (sigma 1% of side)", "sharpness", "blur", 0.01),
    Shift("noise (sigma 4%)", "sharpness", "noise", 0.04),
    Shift("zoom in (x1.15)", "framing", "zoom", 1.15),
    Shift("zoom out (x0.87)", "framing", "zoom", 1 / 1.15),
    Shift("off-centre (6% of side)", "framing", "translate", 0.06),
    Shift("rotated (8 degrees)", "framing", "rotate", 8.0),
    Shift("border masked (8% frame)", "border", "border", 0.08),
)


#: How a task chooses among its alternatives on validation (the ``selection`` field of Task 1's
#: and Task 3's configs): name -> the column it ranks by. ``shift``: the mean ROC AUC over the
#: shifted copies of the validation films (:data:`SHIFTS` without "none"); ``plain``: the ROC
#: AUC on validation as it is, which the training pool's easy films saturate.
SELECTION_CRITERIA = {"shift": "val_shift_roc_auc_mean", "plain": "val_roc_auc"}


def _warp(p: torch.Tensor, *, angle_deg: float = 0.0, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """Rotate by ``angle_deg``, zoom by ``scale`` and move right and down by ``shift`` (a
    fraction of the side) (N, 1, H, W) pixels in [0, 1]; what enters from outside is black."""
    n = p.shape[0]
    a = math.radians(angle_deg)
    # affine_grid maps output to input locations in [-1, 1] units (side = 2): the inverse warp.
    theta = torch.tensor([[math.cos(a) / scale, -math.sin(a) / scale, -2 * shift],
                          [math.sin(a) / scale, math.cos(a) / scale, -2 * shift]], dtype=p.dtype)
    grid = F.affine_grid(theta.expand(n, 2, 3), list(p.shape), align_corners=False)
    return F.grid_sample(p, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_shift(images: np.ndarray, shift: Shift, *, seed: int = 0) -> np.ndarray:
    """A shifted copy of uint8 (N, H, W) images (same shape and dtype).

    ``gamma``: pixel ** amount (above 1 darkens); ``contrast``: scaled by ``amount`` around
    each image's mean; ``window``: each image's ``amount``-th to (100 - ``amount``)-th
    percentile stretched to the full range; ``blur``: Gaussian, sigma ``amount`` of the side;
    ``noise``: Gaussian, sigma ``amount`` of the full range (seeded); ``zoom``: by ``amount``
    about the centre; ``translate``: right and down by ``amount`` of the side; ``rotate``:
    by ``amount`` degrees; ``border``: a frame ``amount`` of the side wide set to black.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"apply_shift expects uint8 (N, H, W) images, got {images.dtype} {images.shape}")
    p = torch.from_numpy(images).float().div_(255).unsqueeze(1)  # (N, 1, H, W) in [0, 1]
    side = images.shape[-1]
    kind, amount = shift.kind, shift.amount
    if kind == "none":
        return images.copy()
    if kind == "gamma":
        p = p.pow(amount)
    elif kind == "contrast":
        mean = p.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
        p = (p - mean) * amount + mean
    elif kind == "window":
        flat = p.flatten(1)  # (N, H*W)
        low = torch.quantile(flat, amount / 100, dim=1).view(-1, 1, 1, 1)
        high = torch.quantile(flat, 1 - amount / 100, dim=1).view(-1, 1, 1, 1)
        p = (p - low) / (high - low).clamp(min=1 / 255)
    elif kind == "blur":
        p = gaussian_blur(p, sigma=amount * side)
    elif kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        p = p + amount * torch.randn(p.shape, generator=generator)
    elif kind == "zoom":
        p = _warp(p, scale=amount)
    elif kind == "translate":
        p = _warp(p, shift=amount)
    elif kind == "rotate":
        p = _warp(p, angle_deg=amount)
    elif kind == "border":
        frame = max(1, round(amount * side))
        p = p.clone()
        p[..., :frame, :] = 0
        p[..., -frame:, :] = 0
        p[..., :, :frame] = 0
        p[..., :, -frame:] = 0
    else:
        raise ValueError(f"unknown shift kind {kind!r} (shift {shift.name!r})")
    return p.clamp_(0, 1).mul_(255).round_().squeeze(1).to(torch.uint8).numpy()


def score_under_shifts(
    score: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    y_true: np.ndarray,
    metrics: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    shifts: tuple[Shift, ...] = SHIFTS,
    *,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Score a model on every shifted copy of ``images``.

    Parameters
    ----------
    score
        uint8 (N, H, W) images -> the model's scores ((N,) or (N, C)).
    images, y_true
        The images (uint8 (N, H, W)) and their labels.
    metrics
        ``(y_true, scores) -> {metric: value}``, e.g. ``partial(binary_metrics, threshold=t)``.
    shifts
        The shifts to apply (default :data:`SHIFTS`, "none" first).
    seed
        Seed of the noise shift.

    Returns
    -------
    table : pandas.DataFrame
        One row per shift: ``shift``, ``group`` and one column per metric.
    scores : dict
        ``{shift name: scores}``, for threshold rules and plots.
    """
    rows, scores = [], {}
    for shift in shifts:
        s = score(apply_shift(images, shift, seed=seed))
        scores[shift.name] = s
        rows.append({"shift": shift.name, "group": shift.group, **metrics(y_true, s)})
    return pd.DataFrame(rows), scores


def robustness_summary(table: pd.DataFrame, metric: str) -> dict[str, float]:
    """``{"clean", "mean", "worst", "worst_shift"}`` of ``metric`` over the shifted rows of a
    :func:`score_under_shifts` table (``clean`` is the unshifted row)."""
    shifted = table[table["shift"] != "none"]
    worst = shifted.loc[shifted[metric].idxmin()]
    return {"clean": float(table.loc[table["shift"] == "none", metric].iloc[0]),
            "mean": float(shifted[metric].mean()), "worst": float(worst[metric]),
            "worst_shift": str(worst["shift"])}


#: Rules for the binary decision threshold compared under shift (see
#: :func:`compare_threshold_rules`), with the name the report and the logs give each. ``half``
#: is the class-balanced training objective's own cut.
THRESHOLD_RULES_UNDER_SHIFT = {
    "youden": "Youden's J on validation",
    "half": "a fixed 0.5",
    "pooled_youden": "Youden's J on validation pooled over the shifts",
    "worst_case": "the best balanced accuracy on the worst shift",
}


def _threshold(rule: str, y: np.ndarray, scores: Mapping[str, np.ndarray]) -> float:
    """The threshold ``rule`` picks from validation labels ``y`` and ``{shift: (N,) scores}``."""
    if rule == "youden":
        return choose_threshold(y, scores["none"])
    if rule == "half":
        return 0.5
    if rule == "pooled_youden":
        return choose_threshold(np.tile(y, len(scores)), np.concatenate(list(scores.values())))
    if rule == "worst_case":
        candidates = np.unique(np.concatenate(list(scores.values())))
        candidates = np.quantile(candidates, np.linspace(0, 1, min(len(candidates), 512)))
        worst = np.min([_balanced_accuracy(y, s, candidates) for s in scores.values()], axis=0)
        return float(candidates[int(np.argmax(worst))])
    raise ValueError(f"rule must be one of {list(THRESHOLD_RULES_UNDER_SHIFT)}, got {rule!r}")


def _balanced_accuracy(y: np.ndarray, score: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(T,) balanced accuracy of ``score >= t`` for each threshold ``t``."""
    called = score[None, :] >= thresholds[:, None]  # (T, N)
    sensitivity = called[:, y == 1].mean(axis=1)
    specificity = 1 - called[:, y == 0].mean(axis=1)
    return (sensitivity + specificity) / 2


def compare_threshold_rules(y_val: np.ndarray, scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """How each threshold rule's cut fares on shifts it was not chosen on.

    For each shift, every rule picks its threshold from the unshifted validation scores and
    the *other* shifts (leave one shift out; the Youden and 0.5 rules ignore the shifts), and
    is scored on the left-out shift. The unshifted row is scored with the threshold chosen on
    all shifts.

    Parameters
    ----------
    y_val
        (N,) validation labels in {0, 1}.
    scores
        ``{shift name: (N,) positive-class scores}`` from :func:`score_under_shifts`; must
        contain ``"none"``.

    Returns
    -------
    pandas.DataFrame
        Rows ``(rule, shift)``: ``threshold``, ``accuracy``, ``balanced_accuracy``,
        ``sensitivity``, ``specificity``.
    """
    y = np.asarray(y_val).astype(int)
    rows = []
    for rule in THRESHOLD_RULES_UNDER_SHIFT:
        for shift, s in scores.items():
            seen = {k: v for k, v in scores.items() if k != shift or shift == "none"}
            t = _threshold(rule, y, seen)
            m = binary_metrics(y, s, threshold=t)
            rows.append({"rule": rule, "shift": shift, "threshold": t,
                         **{k: float(m[k]) for k in ("accuracy", "balanced_accuracy", "sensitivity",
                                                      "specificity")}})
    return pd.DataFrame(rows)


def summarise_threshold_rules(comparison: pd.DataFrame) -> pd.DataFrame:
    """One row per rule of a :func:`compare_threshold_rules` table, in rule order.

    Columns: ``threshold`` (chosen on all shifts), ``clean_balanced_accuracy`` (unshifted
    validation), then over the shifted rows (each judged at a cut that did not see it):
    ``mean_balanced_accuracy``, ``worst_balanced_accuracy``, ``mean_specificity``,
    ``worst_specificity``, ``mean_sensitivity``, ``worst_sensitivity``.
    """
    clean = comparison[comparison["shift"] == "none"].set_index("rule")
    shifted = comparison[comparison["shift"] != "none"].groupby("rule", sort=False)
    summary = pd.DataFrame({
        "threshold": clean["threshold"], "clean_balanced_accuracy": clean["balanced_accuracy"],
        "mean_balanced_accuracy": shifted["balanced_accuracy"].mean(),
        "worst_balanced_accuracy": shifted["balanced_accuracy"].min(),
        "mean_specificity": shifted["specificity"].mean(), "worst_specificity": shifted["specificity"].min(),
        "mean_sensitivity": shifted["sensitivity"].mean(), "worst_sensitivity": shifted["sensitivity"].min(),
    })
    return summary.reindex([r for r in THRESHOLD_RULES_UNDER_SHIFT if r in summary.index]).rename_axis("rule")


def choose_threshold_rule(comparison: pd.DataFrame) -> str:
    """The rule whose cuts hold best on shifts they did not see.

    Highest mean balanced accuracy over the shifted rows of a :func:`compare_threshold_rules`
    table; ties go to the better worst shift, then to the earlier rule of
    :data:`THRESHOLD_RULES_UNDER_SHIFT`. Validation only: no test image is involved.
    """
    summary = summarise_threshold_rules(comparison).round(12)  # ties despite float noise
    ranked = summary.sort_values(["mean_balanced_accuracy", "worst_balanced_accuracy"], ascending=False,
                                 kind="stable")
    return str(ranked.index[0])


def threshold_under_shift(
    score: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    y_true: np.ndarray,
    *,
    rule: str = "shift",
    seed: int = 0,
) -> tuple[float, str, pd.DataFrame, pd.DataFrame]:
    """A binary decision threshold by the rule that holds best on shifted validation films.

    A threshold that only suits the training pool's own films (Youden's J on an easy
    validation split can sit near 0.1) loses its specificity on films from elsewhere; each
    rule is judged on shifts it did not see (:func:`compare_threshold_rules`).

    Parameters
    ----------
    score
        uint8 (N, H, W) images -> (N,) positive-class probabilities.
    images, y_true
        Validation images (uint8 (N, H, W)) and labels in {0, 1}; never test images.
    rule
        ``"shift"``: :func:`choose_threshold_rule`; else a key of
        :data:`THRESHOLD_RULES_UNDER_SHIFT`, used as it is.
    seed
        Seed of the noise shift.

    Returns
    -------
    threshold : float
    rule : str
        The rule that set it.
    shifts : pandas.DataFrame
        Per shift: ``roc_auc``, then ``accuracy``, ``balanced_accuracy``, ``sensitivity`` and
        ``specificity`` at ``threshold``.
    comparison : pandas.DataFrame
        The :func:`compare_threshold_rules` table.
    """
    if rule != "shift" and rule not in THRESHOLD_RULES_UNDER_SHIFT:
        raise ValueError(f"rule must be 'shift' or one of {list(THRESHOLD_RULES_UNDER_SHIFT)}, got {rule!r}")

    def roc_auc(y, s):
        return {"roc_auc": float(binary_metrics(y, s)["roc_auc"])}

    shifts, scores = score_under_shifts(score, images, y_true, roc_auc, seed=seed)
    comparison = compare_threshold_rules(y_true, scores)
    rule = choose_threshold_rule(comparison) if rule == "shift" else rule
    chosen = comparison[(comparison["rule"] == rule) & (comparison["shift"] == "none")]
    threshold = float(chosen["threshold"].iloc[0])
    at_threshold = [binary_metrics(y_true, scores[name], threshold=threshold) for name in shifts["shift"]]
    for metric in ("accuracy", "balanced_accuracy", "sensitivity", "specificity"):
        shifts[metric] = [float(m[metric]) for m in at_threshold]
    return threshold, rule, shifts, comparison


def multiclass_shift_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """What the shift benchmark reports of a normal / bacterial / viral model: ``roc_auc``
    (macro one-vs-rest), ``accuracy``, ``balanced_accuracy`` and ``bacterial_vs_viral_roc_auc``
    among pneumonia films (for :func:`score_under_shifts`)."""
    m = multiclass_metrics(y_true, proba, class_names=CLASSES)
    sick = y_true > 0
    bv = binary_metrics((y_true[sick] == 2).astype(int), viral_given_pneumonia(proba[sick]))
    return {"roc_auc": float(m["roc_auc"]), "accuracy": float(m["accuracy"]),
            "balanced_accuracy": float(m["balanced_accuracy"]), "bacterial_vs_viral_roc_auc": float(bv["roc_auc"])}
