"""The Task 1 test figures: metric tables, the threshold on validation and test, curves, errors.

:func:`_binary_test` and :func:`_multiclass_test` compute what each section shows about
its final model on the test split; the sentences judge those figures against validation.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from pneumo.data import BINARY_CLASSES, CLASSES
from pneumo.metrics import binary_metrics
from pneumo.report.classification.common import _ERRORS_SHOWN, _error_gallery, _proba_column
from pneumo.report.entries import ReportEntry, curves_from_arrays, misclassified
from pneumo.report.tables import metrics_with_ci
from pneumo.report.text import num, signed

__all__ = ["gap_sentence", "shift_sentence", "roc_sentence"]

#: Rows of the test tables.
_BINARY_TEST_METRICS = ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity",
                        "precision", "f1")
_MULTICLASS_TEST_METRICS = ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "f1_macro")


def gap_sentence(test_auc: float, val_auc: float, se: float) -> str:
    """The test ROC AUC against the final model's validation AUC, judged by the rough SE."""
    gap = test_auc - val_auc
    if abs(gap) <= 2 * se:
        return f"close to the final model's validation AUC ({num(val_auc)}; difference {signed(gap)})"
    return (f"{'above' if gap > 0 else 'below'} the final model's validation AUC ({num(val_auc)}; "
            f"difference {signed(gap)}, more than twice its rough standard error)")


def shift_sentence(largest_shift: float) -> str:
    """Whether the validation threshold carried over to test, from the larger error-rate shift."""
    if largest_shift > 0.1:
        return (f"Here the larger of the two shifts is {num(largest_shift)}, so the probabilities behave "
                "differently on the test images than on validation (the threshold sits where the two "
                "classes' scores overlap, so small differences in calibration move the error rates).")
    return f"Here both shifts are small (at most {num(largest_shift)}), so the threshold carried over well."


def roc_sentence(hardest: str, worst_recall: str) -> str:
    """Continues "the hardest class to single out is X (ROC AUC a)": agreement with the recalls."""
    if hardest == worst_recall:
        return ", the same class."
    return (f". The class with the lowest sensitivity, {worst_recall}, is ranked better than its "
            "sensitivity suggests, so the arg-max decision, not only the probabilities, costs it.")


def _per_class_metrics(index: pd.Index) -> list[str]:
    """Per-class test keys, named after the class (``sensitivity_viral``) or, in older entries, its index."""
    return [f"{kind}_{c}" if f"{kind}_{c}" in index else f"{kind}_{i}"
            for kind in ("sensitivity", "precision") for i, c in enumerate(CLASSES)]


def _binary_test(entry: ReportEntry, r: Mapping[str, Any], se: float) -> dict[str, Any]:
    """Test figures, the threshold on validation and on test, curves and errors."""
    negative, positive = BINARY_CLASSES
    metrics, test, history, val = r["metrics"], r["test"], r["history"], r["val"]
    cm = r["confusion"].set_index("true")
    threshold = float(metrics["threshold"])
    val_score = val[_proba_column(positive)].to_numpy()
    val_at = binary_metrics(val["target"], val_score, threshold)
    best_epoch = int(metrics["best_epoch"])
    final_val_auc = float(history.loc[history["epoch"] == best_epoch, "val_auc"].iloc[0])
    sens_shift = float(test.loc["sensitivity", "value"] - val_at["sensitivity"])
    spec_shift = float(test.loc["specificity", "value"] - val_at["specificity"])
    tp, fn = int(cm.loc[positive, positive]), int(cm.loc[positive, negative])
    tn, fp = int(cm.loc[negative, negative]), int(cm.loc[negative, positive])
    curves = curves_from_arrays(entry.arrays(), {"test": "test", "validation": "val"},
                                aucs={"test": float(test.loc["roc_auc", "value"])})
    from pneumo import plots

    curves["test"]["colour"] = plots.CLASS_COLOURS[positive]
    curves["validation"].update(colour=plots.OKABE_ITO["grey"], linestyle="--")
    errors = misclassified(r["predictions"], BINARY_CLASSES, threshold=threshold, limit=_ERRORS_SHOWN)
    return {
        "test_table": metrics_with_ci(r["test_metrics"], list(_BINARY_TEST_METRICS)),
        "final_val_auc": final_val_auc,
        "gap_text": gap_sentence(float(test.loc["roc_auc", "value"]), final_val_auc, se),
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "prevalence": (tp + fn) / (tp + fn + tn + fp),
        "curves": curves,
        "threshold": threshold,
        "val_target": val["target"].to_numpy(),
        "val_score": val_score,
        "val_sensitivity": float(val_at["sensitivity"]),
        "val_specificity": float(val_at["specificity"]),
        "sensitivity_shift": sens_shift,
        "specificity_shift": spec_shift,
        "shift_text": shift_sentence(max(abs(sens_shift), abs(spec_shift))),
        "errors": _error_gallery(entry, errors, f"P({positive})"),
    }


def _multiclass_test(entry: ReportEntry, r: Mapping[str, Any]) -> dict[str, Any]:
    """Test figures per class, the confusions, the curves and the errors."""
    _, bacterial, viral = CLASSES
    test, preds = r["test"], r["predictions"]
    cm = r["confusion"].set_index("true")
    rows = preds[preds["split"] == "test"]
    # One-vs-rest ROC AUC per class, on the same test predictions the curves were drawn from.
    class_auc = {c: float(binary_metrics((rows["target"] == i).astype(int), rows[_proba_column(c)])["roc_auc"])
                 for i, c in enumerate(CLASSES)}
    hardest = min(class_auc, key=class_auc.get)
    recall = {c: float(cm.loc[c, c] / cm.loc[c].sum()) for c in CLASSES}
    worst = min(recall, key=recall.get)
    arrays = entry.arrays()
    curves = curves_from_arrays(arrays, {c: f"test_{c}" for c in CLASSES})
    curves["bacterial vs viral"] = {**curves_from_arrays(arrays, {"bv": "test_bacterial_vs_viral"})["bv"],
                                    "linestyle": "--"}
    errors = misclassified(preds, CLASSES, limit=_ERRORS_SHOWN)
    return {
        "test_table": metrics_with_ci(r["test_metrics"], [*_MULTICLASS_TEST_METRICS, *_per_class_metrics(test.index)],
                                      classes=CLASSES),
        "chance_accuracy": 1 / len(CLASSES),
        "class_auc": class_auc,
        "hardest": hardest,
        "hardest_auc": class_auc[hardest],
        "recall": recall,
        "worst_recall": worst,
        "worst_recall_value": recall[worst],
        "viral_as_bacterial": int(cm.loc[viral, bacterial]),
        "bacterial_as_viral": int(cm.loc[bacterial, viral]),
        "roc_text": roc_sentence(hardest, worst),
        "curves": curves,
        "errors": _error_gallery(entry, errors, "p"),
    }
