"""Task 1 under acquisition shifts of the validation films, and the 1a threshold rule they chose.

:func:`_binary_robustness` and :func:`_multiclass_robustness` turn an entry's ``val_shifts``
(and for 1a ``threshold_rules``) tables, written by :mod:`pneumo.classification` with
:mod:`pneumo.shift`, into the tables and sentences of the sections' "Validation under shift"
parts.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pneumo.report.entries import ReportEntry
from pneumo.report.text import num
from pneumo.shift import THRESHOLD_RULES_UNDER_SHIFT, robustness_summary, summarise_threshold_rules

__all__: list[str] = []

#: Short names of the rules, for the table and the figure legend.
RULE_LABELS = {"youden": "Youden's J", "half": "fixed 0.5", "pooled_youden": "Youden's J, shifts pooled",
               "worst_case": "best worst shift"}


def _shift_table(shifts: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """The displayed shift table: one row per shift, ``columns`` renamed (in that order)."""
    table = shifts[["shift", *columns]].rename(columns={"shift": "Validation films", **columns})
    table.loc[table["Validation films"] == "none", "Validation films"] = "as stored (no shift)"
    return table


def _binary_robustness(entry: ReportEntry, threshold: float) -> dict[str, Any]:
    """1a: the shift table at the chosen threshold, the rule comparison and their sentences."""
    shifts, comparison = entry.table("val_shifts"), entry.table("threshold_rules")
    rule = str(entry.metrics["threshold_rule"])
    rules = summarise_threshold_rules(comparison)
    auc = robustness_summary(shifts, "roc_auc")
    specificity = robustness_summary(shifts, "specificity")
    chosen, youden = rules.loc[rule], rules.loc["youden"]
    rules_table = pd.DataFrame({
        "Threshold rule": [RULE_LABELS[r] + (" (chosen)" if r == rule else "") for r in rules.index],
        "Threshold": rules["threshold"].to_numpy(),
        "Bal. acc., no shift": rules["clean_balanced_accuracy"].to_numpy(),
        "Bal. acc., mean of shifts": rules["mean_balanced_accuracy"].to_numpy(),
        "Bal. acc., worst shift": rules["worst_balanced_accuracy"].to_numpy(),
        "Specificity, mean of shifts": rules["mean_specificity"].to_numpy(),
    })
    if rule == "youden":
        rule_text = (f"Youden's J on validation alone also holds best under the shifts (mean balanced "
                     f"accuracy {num(chosen['mean_balanced_accuracy'])}), so it sets the threshold.")
    else:
        rule_text = (f"Youden's J on the unshifted validation films would put the cut at "
                     f"{num(youden['threshold'])}; on shifts it did not see, its balanced accuracy averages "
                     f"{num(youden['mean_balanced_accuracy'])} (worst {num(youden['worst_balanced_accuracy'])}). "
                     f"The rule that holds best is {THRESHOLD_RULES_UNDER_SHIFT[rule]} (mean {num(chosen['mean_balanced_accuracy'])}, "
                     f"worst {num(chosen['worst_balanced_accuracy'])}), so it sets the threshold, "
                     f"at {num(threshold)}.")
    return {
        "threshold_rule": rule,
        "threshold_rule_name": THRESHOLD_RULES_UNDER_SHIFT[rule],
        "threshold_rule_label": RULE_LABELS[rule],
        "robustness_table": _shift_table(shifts, {"roc_auc": "ROC AUC", "accuracy": "Accuracy",
                                                  "sensitivity": "Sensitivity", "specificity": "Specificity"}),
        "rules_table": rules_table,
        "robustness_text": (
            f"The ranking barely depends on the films' look: validation ROC AUC is {num(auc['clean'])} as "
            f"stored and {num(auc['mean'])} on average over the shifts (worst {num(auc['worst'])}, "
            f"{auc['worst_shift']}). The decisions depend on it more: at the chosen threshold, "
            f"specificity is {num(specificity['clean'])} as stored and falls to {num(specificity['worst'])} "
            f"under the worst shift ({specificity['worst_shift']})."
            if auc["clean"] - auc["worst"] < 0.02 else
            f"Validation ROC AUC is {num(auc['clean'])} as stored, {num(auc['mean'])} on average over the "
            f"shifts and {num(auc['worst'])} under the worst ({auc['worst_shift']}); at the chosen "
            f"threshold specificity falls from {num(specificity['clean'])} to {num(specificity['worst'])} "
            f"({specificity['worst_shift']})."),
        "rule_text": rule_text,
    }


def _multiclass_robustness(entry: ReportEntry) -> dict[str, Any]:
    """1b: the shift table and a sentence on its worst shifts."""
    shifts = entry.table("val_shifts")
    accuracy = robustness_summary(shifts, "accuracy")
    bv = robustness_summary(shifts, "bacterial_vs_viral_roc_auc")
    return {
        "robustness_table": _shift_table(shifts, {"accuracy": "Accuracy", "balanced_accuracy": "Bal. accuracy",
                                                  "roc_auc": "Macro ROC AUC",
                                                  "bacterial_vs_viral_roc_auc": "Bacterial vs viral AUC"}),
        "robustness_text": (
            f"Under the same shifts of the validation films, accuracy is {num(accuracy['clean'])} as stored, "
            f"{num(accuracy['mean'])} on average and {num(accuracy['worst'])} under the worst "
            f"({accuracy['worst_shift']}); bacterial against viral keeps a ROC AUC of {num(bv['mean'])} on "
            f"average (worst {num(bv['worst'])}, {bv['worst_shift']})."),
    }
