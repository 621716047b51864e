"""Task 3 of the report on the test split: the chosen pair's table and the sentences that read it.

Part of :mod:`pneumo.report.anomaly` (which re-exports everything here): the target and
SQUID's figure the test ROC AUC is set against, the specificity against the nominal one,
which kind of pneumonia is the harder anomaly, and the supervised network's figure.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from pneumo.anomaly import COMPARISONS, RECONSTRUCTION_SCORES
from pneumo.report.text import fmt_ci, num, pct

__all__ = ["TARGET_AUC", "SQUID_AUC", "TEST_METRICS", "chosen_test_table", "target_sentence",
           "specificity_sentence", "kind_sentence", "supervised_sentence"]

#: The study's target test ROC AUC, and the one SQUID reports on this data (Xiang et al. 2023).
TARGET_AUC = 0.90
SQUID_AUC = 0.876

#: Rows of the test table: metric key -> label.
TEST_METRICS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "sensitivity": "Sensitivity at the threshold",
    "specificity": "Specificity at the threshold",
    "balanced_accuracy": "Balanced accuracy at the threshold",
}


def chosen_test_table(test: pd.DataFrame) -> pd.DataFrame:
    """The chosen pair's test figures: one row per metric, one column per comparison."""
    t = test.set_index(["comparison", "metric"])
    return pd.DataFrame([{"Metric": label, **{f"normal vs {c}": fmt_ci(t.loc[(c, metric)]) for c in COMPARISONS}}
                         for metric, label in TEST_METRICS.items()])


def target_sentence(auc: float) -> str:
    """How the test ROC AUC compares with the target and with SQUID (the qmd adds the citation)."""
    tail = f"the {SQUID_AUC:.3f} that SQUID reports on this data"
    if auc >= TARGET_AUC:
        return f"reaches the target of {TARGET_AUC:.2f} and is above {tail}"
    if auc > SQUID_AUC:
        return f"is below the target of {TARGET_AUC:.2f} but above {tail}"
    return f"is below both the target of {TARGET_AUC:.2f} and {tail}"


def specificity_sentence(spec: Mapping[str, Any], quantile: float) -> str:
    """The test specificity against the nominal one the validation-normal threshold was set to."""
    inside = spec["ci_low"] <= quantile <= spec["ci_high"]
    position = ("close to the nominal" if inside else
                "below the nominal" if spec["value"] < quantile else "above the nominal")
    ending = ("." if inside else
              ": the test normals score higher than the validation normals, so the scores of normal "
              "images shift between the training pool and the test folder, which a threshold set on "
              "normals alone cannot anticipate." if spec["value"] < quantile else
              ": the test normals score lower than the validation normals.")
    return (f"On test the threshold clears {pct(spec['value'])} of normal images (specificity {fmt_ci(spec)}), "
            f"{position} {pct(quantile, 0)} it was set to on validation normals{ending}")


def kind_sentence(auc_bacterial: float, auc_viral: float, chosen_score: str) -> str:
    """Which kind of pneumonia is the harder anomaly, and a plausible reason."""
    if auc_viral < auc_bacterial:
        why = ("it is reconstructed more like a normal chest." if chosen_score in RECONSTRUCTION_SCORES
               else "its encoder features stay closer to those of normal chests.")
        return (f"Viral pneumonia is the harder anomaly (ROC AUC {num(auc_viral)} against {num(auc_bacterial)} "
                "for bacterial): plausibly because a diffuse, interstitial pattern changes the image less than "
                f"a dense lobar consolidation, so {why}")
    return (f"Bacterial pneumonia is not the easier anomaly here (ROC AUC {num(auc_bacterial)} against "
            f"{num(auc_viral)} for viral), although a dense consolidation changes the image more than an "
            "interstitial pattern.")


def supervised_sentence(supervised: float, auc: float) -> str:
    """The autoencoder's test ROC AUC against the supervised Task 1a network's."""
    head = ("The supervised Task 1a network, which saw pneumonia during training, reaches a test ROC AUC of "
            f"{num(supervised)}; ")
    if supervised > auc:
        return head + f"the autoencoder gives up {num(supervised - auc)} of it for never seeing a sick lung."
    return head + "the autoencoder matches or beats it without ever seeing a sick lung."
