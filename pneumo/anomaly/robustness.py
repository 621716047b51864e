"""Task 3 under the shift benchmark: every (autoencoder, score) pair on shifted validation films.

A detector of "not normal" that learnt the training pool's normals fails first on normal films
that merely look different: another exposure, another framing, a black border. The benchmark
of :mod:`pneumo.shift` measures that on validation, without any outside data: each pair scores
every shifted copy of the validation images (:func:`shifted_images`), and
:func:`shift_table` gives, per shift, its ROC AUC of normal against pneumonia and its
specificity and sensitivity at the pair's own threshold, set on the *unshifted* validation
normals as the task sets it, and its ROC AUC when only the normal films are shifted (the
pneumonia films as they are), which is what a new machine's normal films do to a detector
trained on the pool's. :func:`shift_summary` condenses that to the mean and worst shift
per pair, which :func:`~pneumo.anomaly.evaluation.rank_on_validation` can choose by.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pneumo.anomaly.scores import threshold_from_normals
from pneumo.anomaly.variants import variant_column
from pneumo.metrics import binary_metrics
from pneumo.shift import SHIFTS, apply_shift, robustness_summary

def shifted_images(images: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """``{shift name: shifted copy}`` of uint8 (N, H, W) images for every :data:`~pneumo.shift.SHIFTS`
    entry, the unshifted ``"none"`` first.

    The shifts act on the stored pixels, before the autoencoder's own intensity normalisation,
    as a film from another machine would arrive.
    """
    return {shift.name: apply_shift(images, shift, seed=seed) for shift in SHIFTS}


def shift_table(pairs: list[tuple[str, str]], shifted_columns: dict[str, dict[str, np.ndarray]],
                val_rows: pd.DataFrame, quantile: float) -> pd.DataFrame:
    """Every pair's validation figures under every shift.

    Parameters
    ----------
    pairs
        ``(variant, score)`` pairs; pairs without shifted scores are left out.
    shifted_columns
        ``{shift name: {column: (N_val,) scores}}``, ``"none"`` (the unshifted images) among
        the shifts; columns named by :func:`~pneumo.anomaly.variants.variant_column`.
    val_rows
        The validation images' rows (``label``, ``binary``).
    quantile
        The threshold rule of the task: this quantile of the unshifted validation normals'
        scores (:func:`~pneumo.anomaly.scores.threshold_from_normals`).

    Returns
    -------
    pandas.DataFrame
        One row per (pair, shift): ``variant``, ``score``, ``shift``, ``group``, ``roc_auc``
        (every film shifted), ``normals_roc_auc`` (only the normal films shifted, against the
        pneumonia films as they are: a new machine's normals among the pool's pneumonia), and
        ``specificity`` (the share of normal films not flagged) and ``sensitivity`` at the
        pair's threshold.
    """
    y = val_rows["binary"].to_numpy()
    normal = (val_rows["label"] == "normal").to_numpy()
    # Only the normals shifted: the (n_sick + n_normal,) labels of [clean pneumonia, shifted normals].
    y_normals_shifted = np.r_[np.ones(int((y == 1).sum())), np.zeros(int(normal.sum()))]
    groups = {shift.name: shift.group for shift in SHIFTS}
    rows = []
    for variant, score in pairs:
        column = variant_column(variant, score)
        if column not in shifted_columns["none"]:
            continue
        clean = shifted_columns["none"][column]
        threshold = threshold_from_normals(clean[normal], quantile)
        for shift, columns in shifted_columns.items():
            m = binary_metrics(y, columns[column], threshold=threshold)
            normals_shifted = binary_metrics(y_normals_shifted, np.r_[clean[y == 1], columns[column][normal]])
            rows.append({"variant": variant, "score": score, "shift": shift, "group": groups[shift],
                         "roc_auc": float(m["roc_auc"]), "normals_roc_auc": float(normals_shifted["roc_auc"]),
                         **{k: float(m[k]) for k in ("specificity", "sensitivity")}})
    return pd.DataFrame(rows, columns=["variant", "score", "shift", "group", "roc_auc", "normals_roc_auc",
                                       "specificity", "sensitivity"])


def shift_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and worst shift of each pair in a :func:`shift_table`.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``variant``, ``score``, ``val_shift_roc_auc_mean``,
        ``val_shift_roc_auc_worst``, ``val_shift_worst`` (the shift with the lowest ROC AUC),
        the same three for ``normals_roc_auc`` (``val_shift_normals_roc_auc_mean``,
        ``..._worst``, ``val_shift_normals_worst``), ``val_shift_specificity_mean`` and
        ``val_shift_specificity_worst`` (normal films kept under the threshold of the unshifted
        validation normals).
    """
    rows = []
    for (variant, score), pair in table.groupby(["variant", "score"], sort=False):
        auc, spec = robustness_summary(pair, "roc_auc"), robustness_summary(pair, "specificity")
        normals = robustness_summary(pair, "normals_roc_auc")
        rows.append({"variant": variant, "score": score, "val_shift_roc_auc_mean": auc["mean"],
                     "val_shift_roc_auc_worst": auc["worst"], "val_shift_worst": auc["worst_shift"],
                     "val_shift_normals_roc_auc_mean": normals["mean"],
                     "val_shift_normals_roc_auc_worst": normals["worst"],
                     "val_shift_normals_worst": normals["worst_shift"],
                     "val_shift_specificity_mean": spec["mean"], "val_shift_specificity_worst": spec["worst"]})
    return pd.DataFrame(rows, columns=["variant", "score", "val_shift_roc_auc_mean", "val_shift_roc_auc_worst",
                                       "val_shift_worst", "val_shift_normals_roc_auc_mean",
                                       "val_shift_normals_roc_auc_worst", "val_shift_normals_worst",
                                       "val_shift_specificity_mean", "val_shift_specificity_worst"])
