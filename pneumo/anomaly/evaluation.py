"""Choosing on validation and measuring on test: rankings, test metrics with CIs, the headline figures.

The (variant, score) pair is chosen on validation alone (:func:`rank_on_validation`): by its
ROC AUC, or by its mean ROC AUC over shifted copies of the validation films; test figures of
the other pairs are added for reference only (:func:`add_test_columns`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from pneumo.anomaly.config import COMPARISONS, SELECTION_CRITERIA, AnomalyConfig
from pneumo.anomaly.variants import variant_column
from pneumo.data import XrayDataset
from pneumo.metrics import binary_metrics, metrics_table


def rank_on_validation(variant_rows: list[dict], val_columns: dict[str, np.ndarray],
                       val_rows: pd.DataFrame, shifts: pd.DataFrame | None = None,
                       selection: str = "plain") -> pd.DataFrame:
    """Validation figures of normal vs pneumonia per (variant, score); the chosen pair first.

    Parameters
    ----------
    variant_rows
        One dict per (variant, score) pair, with ``variant`` and ``score``.
    val_columns
        :func:`~pneumo.anomaly.variants.variant_column` -> (N_val,) validation scores.
    val_rows
        The validation images' rows (``binary``).
    shifts
        :func:`~pneumo.anomaly.robustness.shift_summary` of the pairs, or None.
    selection
        A key of :data:`~pneumo.anomaly.config.SELECTION_CRITERIA`: ``"plain"`` ranks by
        validation ROC AUC, ``"shift"`` by its mean over the shifted copies of validation,
        ``"normals"`` by its mean when only the normal films are shifted.

    Returns
    -------
    pandas.DataFrame
        ``variant_rows`` with ``val_roc_auc``, ``val_pr_auc`` and the ``shifts`` columns,
        sorted by the criterion, then validation ROC and PR AUC (stable); pairs the criterion
        cannot rank (skipped comparators) last.
    """
    if selection not in SELECTION_CRITERIA:
        raise ValueError(f"selection must be one of {list(SELECTION_CRITERIA)}, got {selection!r}")
    y = val_rows["binary"].to_numpy()
    table = pd.DataFrame(variant_rows)
    for metric in ("val_roc_auc", "val_pr_auc"):
        table[metric] = np.nan
    for i, row in table.iterrows():
        column = variant_column(row["variant"], row["score"])
        if column in val_columns:
            m = binary_metrics(y, val_columns[column])
            table.loc[i, ["val_roc_auc", "val_pr_auc"]] = m["roc_auc"], m["pr_auc"]
    if shifts is not None:
        table = table.merge(shifts, on=["variant", "score"], how="left")
    elif selection != "plain":
        raise ValueError(f"selection {selection!r} needs the shift summary of the pairs")
    keys = list(dict.fromkeys([SELECTION_CRITERIA[selection], "val_roc_auc", "val_pr_auc"]))
    ok = table[keys[0]].notna()
    ranked = table[ok].sort_values(keys, ascending=False, kind="mergesort")
    return pd.concat([ranked, table[~ok]], ignore_index=True)


def _comparison_mask(rows: pd.DataFrame, comparison: str) -> np.ndarray:
    return rows["label"].isin(("normal", *COMPARISONS[comparison])).to_numpy()


def comparison_metrics(config: AnomalyConfig, score: np.ndarray, rows: pd.DataFrame,
                       threshold: float) -> pd.DataFrame:
    """Test metrics of the chosen score, normal vs each comparison, patient-bootstrap CIs.

    Parameters
    ----------
    config
        The task config (``bootstrap``, ``seed``).
    score
        (N_test,) scores of the chosen pair.
    rows
        The test images' rows (``label``, ``binary``, ``patient``).
    threshold
        The decision threshold (:func:`~pneumo.anomaly.scores.threshold_from_normals`).

    Returns
    -------
    pandas.DataFrame
        Columns ``comparison, metric, value, ci_low, ci_high``, one block per
        :data:`~pneumo.anomaly.config.COMPARISONS` entry.
    """
    tables = []
    metric_fn = partial(binary_metrics, threshold=threshold)
    for comparison in COMPARISONS:
        mask = _comparison_mask(rows, comparison)
        sub = rows[mask]
        table = metrics_table(metric_fn, sub["binary"].to_numpy(), score[mask], sub["patient"].to_numpy(),
                              n_boot=config.bootstrap, seed=config.seed).reset_index()
        tables.append(table.assign(comparison=comparison))
    return pd.concat(tables, ignore_index=True)[["comparison", "metric", "value", "ci_low", "ci_high"]]


def add_test_columns(config: AnomalyConfig, variants: pd.DataFrame, test_columns: dict[str, np.ndarray],
                     rows: pd.DataFrame) -> pd.DataFrame:
    """Test ROC AUC (with CI) of every variant x score: shown for reference, never used to choose.

    Parameters
    ----------
    config
        The task config (``bootstrap``, ``seed``).
    variants
        :func:`rank_on_validation`'s table.
    test_columns
        Column name -> (N_test,) test scores.
    rows
        The test images' rows (``binary``, ``patient``).

    Returns
    -------
    pandas.DataFrame
        A copy of ``variants`` with ``test_roc_auc`` (and its CI) and ``test_pr_auc``.
    """
    out = variants.copy()
    y, groups = rows["binary"].to_numpy(), rows["patient"].to_numpy()
    for metric in ("test_roc_auc", "test_roc_auc_ci_low", "test_roc_auc_ci_high", "test_pr_auc"):
        out[metric] = np.nan
    roc_only = lambda y_, s_, sample_weight=None: {  # noqa: E731 - the two ranking metrics only
        k: v for k, v in binary_metrics(y_, s_, sample_weight=sample_weight).items() if k in ("roc_auc", "pr_auc")}
    for i, row in out.iterrows():
        column = variant_column(row["variant"], row["score"])
        if column not in test_columns:
            continue
        t = metrics_table(roc_only, y, test_columns[column], groups, n_boot=config.bootstrap, seed=config.seed)
        out.loc[i, ["test_roc_auc", "test_roc_auc_ci_low", "test_roc_auc_ci_high", "test_pr_auc"]] = (
            t.loc["roc_auc", "value"], t.loc["roc_auc", "ci_low"], t.loc["roc_auc", "ci_high"],
            t.loc["pr_auc", "value"])
    return out


def headline_metrics(config: AnomalyConfig, chosen: pd.Series, threshold: float, test_table: pd.DataFrame,
                     data: XrayDataset, train_rows: pd.DataFrame, rows: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The entry's metrics: the chosen pair, its validation and test figures, the data's sizes.

    Parameters
    ----------
    config
        The task config.
    chosen
        The first row of :func:`rank_on_validation`'s table.
    threshold
        The decision threshold.
    test_table
        :func:`comparison_metrics`'s table.
    data, train_rows, rows
        The data set, the training normals' rows, and ``{"train", "val", "test"}`` -> rows.

    Returns
    -------
    dict
        JSON-ready figures: the chosen pair, how it was chosen (``selection``) and its
        validation figures, plain and under shift (``val_shift_*``); test metrics named
        ``test_<metric>`` for all pneumonia and ``test_<metric>_<comparison>`` otherwise
        (non-finite values left out).
    """
    t = test_table.set_index(["comparison", "metric"])["value"]
    summary = {
        "chosen_variant": chosen["variant"], "chosen_score": chosen["score"],
        "selection": config.selection,
        "val_roc_auc": float(chosen["val_roc_auc"]), "val_pr_auc": float(chosen["val_pr_auc"]),
        **{k: (str(v) if isinstance(v, str) else float(v)) for k, v in chosen.items()
           if k.startswith("val_shift_") and not pd.isna(v)},
        "threshold": threshold, "threshold_quantile": config.threshold_quantile,
        "data_synthetic": bool(data.is_synthetic), "train_images": int(len(train_rows)),
        "val_images": int(len(rows["val"])), "val_normal_images": int((rows["val"]["label"] == "normal").sum()),
        "test_images": int(len(rows["test"])), "test_patients": int(rows["test"]["patient"].nunique()),
    }
    for comparison in COMPARISONS:
        suffix = "" if comparison == "pneumonia" else f"_{comparison}"
        for metric in ("roc_auc", "pr_auc", "sensitivity", "specificity", "balanced_accuracy"):
            value = float(t.loc[(comparison, metric)])
            if np.isfinite(value):
                summary[f"test_{metric}{suffix}"] = value
    return summary
