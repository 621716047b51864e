"""Classification metrics with patient-level bootstrap confidence intervals.

Every metric here is computed from *weighted* counts.  With integer weights that is the
same as repeating samples, which is what a bootstrap resample does: drawing patients with
replacement and taking all their images gives each image a weight equal to the number of
times its patient was drawn.  So :func:`binary_metrics` and :func:`multiclass_metrics`
accept ``sample_weight`` of shape (n,) or (n_boot, n) and evaluate all resamples at once
with a few matrix products and one sort, instead of 1000 Python-level calls.

Conventions
-----------
* Binary scores are the probability of the positive class; an image is called positive
  when ``p_pos >= threshold``.
* A metric that is undefined on the data at hand (sensitivity without positives,
  precision without positive calls, AUC with a single class) is ``nan``, not 0 as
  scikit-learn's ``zero_division`` default would give; the bootstrap skips such resamples
  for that metric.
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MetricFn = Callable[..., Mapping[str, float]]


# -- helpers -------------------------------------------------------------------------------
def _weights(sample_weight, n: int) -> tuple[np.ndarray, bool]:
    """Weights as a (B, n) float array and whether the caller passed a batch of them."""
    if sample_weight is None:
        return np.ones((1, n)), False
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 1:
        w, batched = w[None, :], False
    elif w.ndim == 2:
        batched = True
    else:
        raise ValueError(f"sample_weight must be (n,) or (n_boot, n), got shape {w.shape}")
    if w.shape[1] != n:
        raise ValueError(f"sample_weight has {w.shape[1]} columns for {n} samples")
    return w, batched


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with nan where den == 0 (an undefined rate)."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _finish(out: dict[str, np.ndarray], batched: bool, integer_keys: Sequence[str] = ()) -> dict:
    """(B,) arrays for a batch of weights, else plain Python numbers."""
    if batched:
        return out
    return {k: (int(round(v[0])) if k in integer_keys else float(v[0])) for k, v in out.items()}


def _rank_metrics(positive: np.ndarray, score: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ROC AUC and average precision for every row of weights.

    Parameters
    ----------
    positive
        (n,) bool labels.
    score
        (n,) scores, higher = more positive.
    w
        (B, n) non-negative weights.

    Returns
    -------
    auc, ap
        (B,) each; ``nan`` for rows whose weighted data holds a single class.
        Tied scores are handled like scikit-learn (one ROC point per distinct score, so a
        tied positive/negative pair counts 1/2 in the AUC).
    """
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    pos = positive[order]
    wo = w[:, order]  # (B, n), sorted by decreasing score
    tp = np.cumsum(wo * pos, axis=1)  # (B, n) weighted positives scoring >= s_i
    fp = np.cumsum(wo * ~pos, axis=1)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    tp, fp = tp[:, last], fp[:, last]  # (B, K) one ROC point per distinct threshold
    n_pos, n_neg = tp[:, -1:], fp[:, -1:]  # (B, 1)

    tpr = np.concatenate([np.zeros_like(n_pos), _div(tp, n_pos)], axis=1)  # (B, K+1) from (0, 0)
    fpr = np.concatenate([np.zeros_like(n_neg), _div(fp, n_neg)], axis=1)
    auc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)

    # AP = sum_k (R_k - R_{k-1}) P_k as in sklearn's average_precision_score.
    precision = np.zeros_like(tp)
    np.divide(tp, tp + fp, out=precision, where=(tp + fp) > 0)
    d_recall = np.diff(tpr, axis=1)  # (B, K)
    ap = np.sum(d_recall * precision, axis=1)

    single_class = (n_pos[:, 0] == 0) | (n_neg[:, 0] == 0)
    auc[single_class] = np.nan
    ap[n_pos[:, 0] == 0] = np.nan
    return auc, ap


# -- point metrics -------------------------------------------------------------------------
def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Confusion matrix with true classes in rows and predicted classes in columns.

    Parameters
    ----------
    y_true, y_pred
        (n,) integer labels in ``[0, n_classes)``.
    n_classes
        Matrix size, so classes absent from both arrays still get a row and column.

    Returns
    -------
    numpy.ndarray
        (n_classes, n_classes) int64 counts.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(n_classes, n_classes)


def binary_metrics(y_true, p_pos, threshold: float = 0.5, *, sample_weight=None) -> dict:
    """Threshold and ranking metrics of a binary classifier.

    Parameters
    ----------
    y_true
        (n,) labels in {0, 1}; 1 is the positive class (pneumonia).
    p_pos
        (n,) probability (or any score) of the positive class.
    threshold
        Images with ``p_pos >= threshold`` are called positive.
    sample_weight
        Optional (n,) weights, or (n_boot, n) for many weightings at once (bootstrap).

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``sensitivity`` (recall), ``specificity``,
        ``precision`` (PPV), ``f1``, ``roc_auc``, ``pr_auc`` (average precision) and the
        confusion counts ``tn``, ``fp``, ``fn``, ``tp``.  Floats (ints for the counts
        when unweighted), or (n_boot,) arrays for 2-D ``sample_weight``.
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(p_pos, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but p_pos has {p.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"binary y_true must hold 0/1, got values {np.unique(y)[:10]}")
    w, batched = _weights(sample_weight, y.size)
    positive = y == 1
    called = p >= threshold
    tp = w @ (positive & called)  # (B,)
    fp = w @ (~positive & called)
    fn = w @ (positive & ~called)
    tn = w @ (~positive & ~called)
    sensitivity = _div(tp, tp + fn)
    specificity = _div(tn, tn + fp)
    auc, ap = _rank_metrics(positive, p, w)
    out = {
        "accuracy": _div(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": _div(tp, tp + fp),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "roc_auc": auc,
        "pr_auc": ap,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }
    counts = ("tn", "fp", "fn", "tp") if sample_weight is None else ()
    return _finish(out, batched, counts)


def multiclass_metrics(y_true, proba, *, class_names: Sequence[str] | None = None, sample_weight=None) -> dict:
    """Metrics of a multi-class classifier whose prediction is the arg-max class.

    Parameters
    ----------
    y_true
        (n,) integer labels in ``[0, C)``.
    proba
        (n, C) class probabilities (rows summing to 1 for the AUCs to be meaningful).
    class_names
        Names used in the per-class keys; default ``'0'``, ``'1'``, ...
    sample_weight
        Optional (n,) weights, or (n_boot, n) for many weightings at once (bootstrap).

    Returns
    -------
    dict
        ``accuracy``; ``balanced_accuracy`` (mean recall over the classes present, as in
        scikit-learn); ``precision_macro``, ``sensitivity_macro`` (macro recall),
        ``f1_macro`` (unweighted means over all classes, ``nan`` if a class is undefined);
        ``roc_auc`` (macro one-vs-rest) and ``pr_auc`` (macro one-vs-rest average
        precision); ``sensitivity_<name>`` and ``precision_<name>`` per class.
        Use :func:`confusion` for the confusion matrix.
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != y.size:
        raise ValueError(f"proba must be (n, C) with n={y.size}, got shape {proba.shape}")
    n_classes = proba.shape[1]
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"y_true values must be in [0, {n_classes}), got {np.unique(y)[:10]}")
    names = [str(c) for c in range(n_classes)] if class_names is None else list(class_names)
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class_names for {n_classes} classes")
    w, batched = _weights(sample_weight, y.size)

    classes = np.arange(n_classes)
    truth = y[:, None] == classes  # (n, C) one-hot labels
    called = proba.argmax(axis=1)[:, None] == classes  # (n, C) one-hot predictions
    tp = w @ (truth & called)  # (B, C)
    support = w @ truth  # (B, C)
    n_called = w @ called  # (B, C)
    recall = _div(tp, support)
    precision = _div(tp, n_called)
    f1 = _div(2 * tp, support + n_called)

    present = support > 0
    with np.errstate(invalid="ignore"):
        balanced = np.where(present, recall, 0).sum(axis=1) / present.sum(axis=1)
    rank = [_rank_metrics(truth[:, c], proba[:, c], w) for c in classes]
    out = {
        "accuracy": _div(tp.sum(axis=1), w.sum(axis=1)),
        "balanced_accuracy": balanced,
        "precision_macro": precision.mean(axis=1),
        "sensitivity_macro": recall.mean(axis=1),
        "f1_macro": f1.mean(axis=1),
        "roc_auc": np.mean([auc for auc, _ in rank], axis=0),
        "pr_auc": np.mean([ap for _, ap in rank], axis=0),
    }
    for c, name in enumerate(names):
        out[f"sensitivity_{name}"] = recall[:, c]
    for c, name in enumerate(names):
        out[f"precision_{name}"] = precision[:, c]
    return _finish(out, batched)


# -- bootstrap -----------------------------------------------------------------------------
def _accepts_sample_weight(fn: Callable) -> bool:
    try:
        return "sample_weight" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _bootstrap_values(metric_fn: MetricFn, y, scores, counts: np.ndarray, codes: np.ndarray,
                      chunk: int = 250) -> dict[str, np.ndarray]:
    """Metric values for every resample: {key: (n_boot,) array, nan where undefined}.

    ``counts`` (n_boot, G) holds how often each patient was drawn; an image's weight is
    its patient's count (``counts[:, codes]``, shape (n_boot, n)).
    """
    n_boot = counts.shape[0]
    if _accepts_sample_weight(metric_fn):
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, n_boot, chunk):  # chunks bound memory at chunk x n floats
            w = counts[start:start + chunk, codes].astype(np.float64)  # (chunk, n)
            for k, v in metric_fn(y, scores, sample_weight=w).items():
                parts.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
        return {k: np.concatenate(v) for k, v in parts.items()}

    # Generic metric: materialise each resample's image indices (slower, any metric_fn).
    rows: list[Mapping[str, float] | None] = []
    for b in range(n_boot):
        idx = np.repeat(np.arange(codes.size), counts[b, codes])  # image i repeated count(patient(i)) times
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn's undefined-metric warnings
                rows.append(metric_fn(y[idx], scores[idx]))
        except ValueError:  # e.g. sklearn's AUC on a single-class resample
            rows.append(None)
    keys = next((list(r) for r in rows if r is not None), [])
    return {
        k: np.array([np.nan if r is None else float(r.get(k, np.nan)) for r in rows]) for k in keys
    }


def bootstrap_ci(metric_fn: MetricFn, y_true, scores, groups, *, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile confidence intervals from resampling patients with replacement.

    Images of the same patient are correlated, so resampling images would understate the
    uncertainty; each resample draws as many patients as there are, with replacement, and
    takes all images of every drawn patient.

    Parameters
    ----------
    metric_fn
        ``metric_fn(y_true, scores) -> dict`` such as :func:`binary_metrics` (use
        ``functools.partial`` to fix a threshold or class names).  If it accepts
        ``sample_weight`` all resamples are evaluated in a vectorised call with
        (n_boot, n) patient-count weights; otherwise it is called once per resample on
        the resampled arrays.
    y_true
        (n,) labels.
    scores
        (n,) or (n, C) scores / probabilities, row-aligned with ``y_true``.
    groups
        (n,) patient identifiers; ``None`` treats every image as its own patient.
    n_boot
        Number of resamples.
    seed
        Seed of the resampling RNG (``numpy.random.default_rng``).
    alpha
        1 - confidence level; 0.05 gives 95 % intervals.

    Returns
    -------
    dict
        ``{metric: (low, high)}`` for every key ``metric_fn`` returns.  Resamples where a
        metric is undefined (``nan``, or ``metric_fn`` raised ``ValueError``) are skipped
        for that metric; ``(nan, nan)`` if none is defined.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores)
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"scores have {s.shape[0]} rows for {y.shape[0]} labels")
    if groups is None:
        codes = np.arange(y.shape[0])
    else:
        groups = np.asarray(groups)
        if groups.shape[0] != y.shape[0]:
            raise ValueError(f"groups has {groups.shape[0]} entries for {y.shape[0]} labels")
        _, codes = np.unique(groups, return_inverse=True)  # (n,) patient index 0..G-1
        codes = codes.ravel()
    n_groups = int(codes.max()) + 1 if codes.size else 0
    rng = np.random.default_rng(seed)
    # (n_boot, G): times each patient is drawn in G draws with replacement.
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)

    values = _bootstrap_values(metric_fn, y, s, counts, codes)
    out: dict[str, tuple[float, float]] = {}
    for key, v in values.items():
        ok = v[np.isfinite(v)]
        if ok.size < n_boot:
            level = logging.WARNING if ok.size < 0.95 * n_boot else logging.DEBUG
            log.log(level, "bootstrap: %s undefined in %d of %d resamples (skipped)", key, n_boot - ok.size, n_boot)
        if ok.size == 0:
            out[key] = (math.nan, math.nan)
        else:
            low, high = np.percentile(ok, [100 * alpha / 2, 100 * (1 - alpha / 2)])
            out[key] = (float(low), float(high))
    return out


def metrics_table(metric_fn: MetricFn, y_true, scores, groups, *, n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05) -> pd.DataFrame:
    """Point estimates with patient-level bootstrap confidence intervals.

    Parameters
    ----------
    metric_fn, y_true, scores, groups, n_boot, seed, alpha
        As for :func:`bootstrap_ci`.

    Returns
    -------
    pandas.DataFrame
        Index = metric name (in ``metric_fn``'s order), columns ``value``, ``ci_low``,
        ``ci_high``.
    """
    point = metric_fn(np.asarray(y_true), np.asarray(scores))
    ci = bootstrap_ci(metric_fn, y_true, scores, groups, n_boot=n_boot, seed=seed, alpha=alpha)
    rows = {k: (float(v), *ci.get(k, (math.nan, math.nan))) for k, v in point.items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["value", "ci_low", "ci_high"])
    table.index.name = "metric"
    return table


def mean_value(y_true, values, *, sample_weight=None) -> dict:
    """``{"mean": ...}`` of ``values`` (``y_true`` is ignored): a metric for :func:`bootstrap_ci`.

    With (n_boot, n) ``sample_weight`` it returns every resample's weighted mean at once.
    """
    values = np.asarray(values, dtype=np.float64)
    w, batched = _weights(sample_weight, values.shape[0])
    return _finish({"mean": _div(w @ values, w.sum(axis=1))}, batched)


def mean_ci(values, groups, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean of ``values`` with a patient-bootstrap percentile interval: ``(mean, low, high)``.

    The same resampling as every other interval here (:func:`bootstrap_ci`): patients
    (``groups``) are drawn with replacement, so several images of one patient move together.
    NaN values are ignored; all NaN gives ``(nan, nan, nan)``.
    """
    values = np.asarray(values, np.float64)
    groups = np.asarray(groups)
    keep = np.isfinite(values)
    values, groups = values[keep], groups[keep]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    if n_boot < 1:
        return float(values.mean()), math.nan, math.nan
    low, high = bootstrap_ci(mean_value, values, values, groups, n_boot=n_boot, seed=seed, alpha=alpha)["mean"]
    return float(values.mean()), low, high


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil's (1982) standard error of an AUC estimated on ``n_pos`` + ``n_neg`` cases.

    A rough guide to how much a validation AUC would move on another sample of the same
    size (it ignores patient clustering, so it is if anything optimistic). 0 for an AUC of
    exactly 0 or 1, NaN where undefined.
    """
    a = float(auc)
    if not 0 < a < 1 or n_pos < 1 or n_neg < 1:
        return 0.0 if a in (0.0, 1.0) else math.nan
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


# -- operating point -----------------------------------------------------------------------
THRESHOLD_RULES = ("youden", "balanced_accuracy", "f1")


def choose_threshold(y_true, p_pos, rule: str = "youden") -> float:
    """Pick a decision threshold on ``p_pos``; call it on VALIDATION data only.

    Choosing the threshold on the test set would leak test labels into the reported test
    metrics; fix it on validation predictions and then apply it unchanged to the test set.

    Parameters
    ----------
    y_true
        (n,) labels in {0, 1}, both classes present.
    p_pos
        (n,) positive-class probabilities.
    rule
        ``'youden'`` maximises sensitivity + specificity - 1; ``'balanced_accuracy'`` is
        the same criterion ((sens + spec) / 2); ``'f1'`` maximises F1 of the positive class.

    Returns
    -------
    float
        A threshold for ``p_pos >= threshold``: the midpoint between the lowest score
        called positive at the optimum and the next lower distinct score, so that the
        cut sits in the gap rather than on a validation score.  Ties in the criterion go
        to the highest threshold.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(p_pos, dtype=np.float64).ravel()
    positive = y == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("choose_threshold needs both classes in y_true")
    order = np.argsort(-p, kind="mergesort")
    s = p[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # cut k: call s >= s[last[k]] positive
    tp = np.cumsum(positive[order])[last]
    fp = np.cumsum(~positive[order])[last]
    if rule == "f1":
        criterion = 2 * tp / (2 * tp + fp + (n_pos - tp))
    else:
        criterion = tp / n_pos + (1 - fp / n_neg) - 1
    k = int(np.argmax(criterion))
    cut = s[last[k]]
    if k + 1 < len(last):
        return float((cut + s[last[k + 1]]) / 2)
    return float(cut)


def viral_given_pneumonia(proba) -> np.ndarray:
    """(N,) probability of viral given pneumonia, P(viral) / (P(bacterial) + P(viral)), from (N, 3)
    normal / bacterial / viral probabilities: the score of bacterial-against-viral figures."""
    proba = np.asarray(proba)
    return proba[:, 2] / np.clip(proba[:, 1:].sum(1), 1e-12, None)
