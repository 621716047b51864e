"""The Task 1 report sections (:mod:`pneumo.report.classification`): sentences follow the numbers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.display import Markdown

from pneumo.metrics import auc_standard_error
from pneumo.report import classification as c
from pneumo.report.classification import comparison as c_comparison
from pneumo.report.classification import design as c_design
from pneumo.report.classification import evaluation as c_evaluation
from pneumo.report.classification import grid as c_grid
from pneumo.report.classification import robustness as c_robustness
from pneumo.shift import SHIFTS, THRESHOLD_RULES_UNDER_SHIFT, compare_threshold_rules

REPORT = Path(__file__).resolve().parents[1] / "report"


def _ci(value, low, high) -> pd.Series:
    return pd.Series({"value": value, "ci_low": low, "ci_high": high})


# -- shared helpers -----------------------------------------------------------------------------
def test_validation_se_is_hanley_mcneil_for_1a_and_the_class_mean_for_1b():
    targets = np.array([0] * 20 + [1] * 50 + [2] * 30)
    binary = np.array([0] * 25 + [1] * 52)
    assert c_grid._validation_auc_se(0.9, binary, [1]) == pytest.approx(auc_standard_error(0.9, 52, 25))
    per_class = [auc_standard_error(0.8, n, 100 - n) for n in (20, 50, 30)]
    assert c_grid._validation_auc_se(0.8, targets, range(3)) == pytest.approx(np.mean(per_class))


def _grid_row(**kw) -> pd.DataFrame:
    row = {"variant": "baseline", "status": "trained", "val_roc_auc": 0.9, "val_balanced_accuracy": 0.8,
           "val_accuracy": 0.8, "best_epoch": 3, "epochs_run": 4, "train_seconds": 12.5, "parameters": 100}
    return pd.DataFrame([{**row, **kw}])


def test_final_model_is_the_grid_run_only_when_its_record_is_the_grid_rows():
    grid = _grid_row()
    history = pd.DataFrame({"epoch": [1, 2, 3, 4]})
    same = {"best_epoch": 3, "train_seconds": 12.5}
    assert c_grid._final_is_grid_run(grid, "baseline", same, history)
    assert not c_grid._final_is_grid_run(grid, "baseline", {**same, "train_seconds": 40.1}, history)
    assert not c_grid._final_is_grid_run(grid, "baseline", same, pd.DataFrame({"epoch": range(1, 9)}))


def test_retrain_sentence_both_ways():
    retrained = c.retrain_sentence(True, 2, 12, "again from the start")
    assert "screened for at most 2 epochs" in retrained and "again from the start for up to 12" in retrained
    kept = c.retrain_sentence(False, 12, 12)
    assert "full budget of 12 epochs" in kept and "screened" not in kept


def test_loss_sentence_capitalises_and_names_smoothing():
    assert c_design._loss_sentence({"balance": "none", "label_smoothing": 0.0}) == capital(c.BALANCE_TEXT["none"])
    text = c_design._loss_sentence({"balance": "weights", "label_smoothing": 0.05})
    assert text.startswith("Class-weighted") and text.endswith("with label smoothing 0.05")
    mixed = c_design._loss_sentence({"balance": "weights", "label_smoothing": 0.0, "mixup": 0.2})
    assert mixed.endswith("by a weight drawn from Beta(0.2, 0.2))") and "smoothing" not in mixed


def capital(text: str) -> str:
    return text[0].upper() + text[1:]


def test_shared_selection_joins_effects_and_skipped_and_reads_the_run():
    grid = pd.concat([_grid_row(variant="augment=False", val_roc_auc=0.95, train_seconds=1.0),
                      _grid_row(), _grid_row(variant="xrv", status="skipped: weights not cached: x")],
                     ignore_index=True)
    r = {"metrics": {"chosen_variant": "augment=False", "best_epoch": 5, "train_seconds": 30.0},
         "grid": grid, "trained": grid[grid["status"] == "trained"],
         "history": pd.DataFrame({"epoch": range(1, 7)}), "config": {"epochs": 8}, "params": {"selection": "plain"}}
    s = c_grid._shared_selection(r, se=0.01, baseline="baseline", metric_name="validation ROC AUC", again="again")
    assert isinstance(s["grid_winner"], Markdown) and "**augment=False** was adopted" in s["grid_winner"].data
    assert s["grid_effects"].startswith("- **augment=False**") and "Skipped, so not compared" in s["grid_effects"]
    assert s["retrained"] and "at most 4 epochs" in s["retrain_text"]
    assert (s["epochs_run"], s["best_epoch"], s["stopped"]) == (6, 5, True)


def test_grid_story_under_shift_ranks_and_words_by_the_shift_criterion():
    # The plain winner (validation AUC 0.99) is the worst under shift: the shift criterion
    # chooses the other variant, and the story gives its figure and the runner-up's.
    grid = pd.concat([_grid_row(variant="augment=False", val_roc_auc=0.99, val_shift_roc_auc_mean=0.80),
                      _grid_row(val_roc_auc=0.98, val_shift_roc_auc_mean=0.90)], ignore_index=True)
    story = c.grid_story(grid, "baseline", se=0.005, metric_name="mean validation ROC AUC under shift",
                         selection="shift")
    assert "kept its place: it reached the highest mean validation ROC AUC under shift, 0.900" in story["winner"]
    assert "**augment=False** (0.800) by 0.100" in story["winner"]
    assert story["effects"] == "- **augment=False**: 0.800 against the baseline's 0.900 (−0.100), " \
        "more than one standard error lower."
    with pytest.raises(KeyError):
        c.grid_story(grid, "baseline", se=0.005, selection="nope")


def test_grid_table_shows_the_shift_columns_only_for_grids_ranked_under_shift():
    from pneumo.report.tables import grid_table

    assert "Val ROC AUC under shift: mean" not in grid_table(_grid_row()).columns
    shifted = grid_table(_grid_row(val_shift_roc_auc_mean=0.8, val_shift_roc_auc_worst=0.6))
    assert shifted.loc[0, "Val ROC AUC under shift: mean"] == 0.8 and shifted.loc[0, "worst"] == 0.6


# -- Task 1a sentences --------------------------------------------------------------------------
def test_augmentation_sentence_reads_the_training_defaults():
    import inspect

    from pneumo.training import augment_batch

    rotation = inspect.signature(augment_batch).parameters["max_rotation_deg"].default
    assert f"(±{rotation:.0f}°)" in c_design._augmentation_sentence(True)
    assert c_design._augmentation_sentence(False) == "The chosen model is trained without augmentation."
    assert "border" not in c_design._augmentation_sentence(True)
    assert "up to 12% of the side" in c_design._augmentation_sentence(True, 0.12)
    assert c_design._augmentation_sentence(False, 0.12).startswith("The chosen model is trained without random jitter; half")


def test_intensity_sentence_three_ways():
    assert c.intensity_sentence(True, True).startswith("Its first layer stretches")
    assert "was not chosen" in c.intensity_sentence(False, True)
    assert c.intensity_sentence(False, False) == "It reads the grey levels as they are."


def test_design_note_only_for_the_comparator():
    assert c_design._design_note("vgg") == ""
    note = c_design._design_note("xrv-densenet121")
    assert "`xrv-densenet121` [@cohen2022]" in note


def test_curve_sentence_early_stop_with_overfitting_and_full_run_without():
    rising = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "val_loss": [0.6, 0.4, 0.45, 0.5, 0.55]})
    text = c.curve_sentence(rising, max_epochs=10, patience=3)
    assert text.startswith("Training stopped early after epoch 5, 3 epochs")
    assert "lowest at epoch 2 and then rose by 0.150" in text
    flat = pd.DataFrame({"epoch": [1, 2, 3], "val_loss": [0.6, 0.5, 0.49]})
    text = c.curve_sentence(flat, max_epochs=3, patience=3)
    assert text.startswith("Training ran all 3 epochs") and "little sign of over-fitting" in text


def test_gap_sentence_judges_by_twice_the_standard_error():
    assert c.gap_sentence(0.91, 0.90, se=0.02).startswith("close to")
    assert c.gap_sentence(0.98, 0.90, se=0.02).startswith("above")
    below = c.gap_sentence(0.80, 0.90, se=0.02)
    assert below.startswith("below") and "\u22120.100" in below


def test_shift_sentence_both_ways():
    assert "larger of the two shifts is 0.150" in c.shift_sentence(0.15)
    assert "carried over well" in c.shift_sentence(0.05)


def test_accuracy_sentence_three_ways():
    assert c.accuracy_sentence(0.005).startswith("the two nearly agree")
    assert c.accuracy_sentence(0.03).startswith("accuracy is higher by 0.030")
    assert c.accuracy_sentence(-0.03).startswith("accuracy is lower by 0.030")


def test_binary_comparison_cites_and_follows_the_provenance():
    test = pd.DataFrame({"value": [0.9, 0.88], "ci_low": [0.85, 0.83], "ci_high": [0.95, 0.93]},
                        index=["accuracy", "balanced_accuracy"])
    synthetic = c_comparison._binary_comparison(None, test)
    assert "synthetic" in synthetic and "@" not in synthetic
    resized = c_comparison._binary_comparison(False, test)
    assert "@kermany2018" in resized and "(see @sec-data)" in resized and "0.900 [0.850, 0.950]" in resized
    official = c_comparison._binary_comparison(True, test)
    assert official.startswith("For reference, @kermany2018") and "balanced accuracy 0.880" in official
    assert "@sec-data" in c_comparison._test_source(False).data
    assert c_comparison._test_source(True).data == "the same hospital as training"


# -- Task 1b sentences --------------------------------------------------------------------------
def test_start_sentence_is_markdown_and_refers_to_the_grid_only_when_it_chose_scratch():
    texts = [c.start_sentence(True, True), c.start_sentence(False, True), c.start_sentence(False, False)]
    assert all(isinstance(t, Markdown) for t in texts)
    assert "copied from it" in texts[0].data
    assert "@tbl-grid-multiclass" in texts[1].data and "@" not in texts[0].data + texts[2].data
    assert "not the VGG network" in texts[2].data


def test_init_sentence_four_ways():
    assert c.init_sentence(None, 0.8, 0.02) == ""
    assert "neither clearly helps nor hurts" in c.init_sentence(0.81, 0.80, 0.02)
    assert c.init_sentence(0.90, 0.80, 0.02).endswith("the head start helps.")
    hurts = c.init_sentence(0.70, 0.80, 0.02)
    assert "hurts here" in hurts and "(0.700 against 0.800)" in hurts


def test_roc_error_induced_and_imbalance_sentences_follow_the_numbers():
    assert c.roc_sentence("viral", "viral") == ", the same class."
    assert "lowest sensitivity, viral" in c.roc_sentence("bacterial", "viral")
    harder = c.error_sentence(20, 15, 0.7, 0.95)
    assert harder.startswith("Of the 20 test errors, 15 (75.0%)") and "is harder" in harder
    assert "is not harder" in c.error_sentence(0, 0, 0.96, 0.95)
    overlap = c.induced_sentence(_ci(0.95, 0.92, 0.97), _ci(0.94, 0.91, 0.96))
    assert "+0.010 and their confidence intervals overlap" in overlap
    apart = c.induced_sentence(_ci(0.80, 0.75, 0.85), _ci(0.95, 0.92, 0.97))
    assert "lower by 0.150" in apart and "do not overlap" in apart
    assert "minority class; the chosen model uses class-balanced sampling" in c.imbalance_sentence(0.3, "sampling")
    assert "about equally frequent" in c.imbalance_sentence(0.5, "none")


def test_multiclass_comparison_three_ways():
    bv = pd.DataFrame({"value": [0.7], "ci_low": [0.6], "ci_high": [0.8]}, index=["accuracy"])
    assert "@" not in c_comparison._multiclass_comparison(None, bv, 1000)
    resized = c_comparison._multiclass_comparison(False, bv, 4000)
    assert "(see @sec-data)" in resized and "from the 4,000 training images" in resized
    assert "comparison is rough" in c_comparison._multiclass_comparison(True, bv, 4000)


def test_per_class_metric_keys_by_name_or_older_index():
    by_name = pd.Index(["sensitivity_normal", "sensitivity_bacterial", "sensitivity_viral",
                        "precision_normal", "precision_bacterial", "precision_viral"])
    assert c_evaluation._per_class_metrics(by_name) == list(by_name)
    assert c_evaluation._per_class_metrics(pd.Index([]))[:2] == ["sensitivity_0", "sensitivity_1"]


def test_compare_table_sets_the_two_models_side_by_side():
    rows = {k: [0.9, 0.85, 0.95] for k in c_comparison._INDUCED_METRICS}
    table = pd.DataFrame(rows, index=["value", "ci_low", "ci_high"]).T
    shown = c_comparison._compare_table(table, table)
    assert shown["Metric"].tolist()[:1] == ["ROC AUC"] and "Sensitivity" in shown["Metric"].tolist()
    assert shown.iloc[0, 1] == "0.900 [0.850, 0.950]"


class _ShiftEntry:
    """A fake 1a entry with only what the robustness part reads."""

    def __init__(self, rule: str, rules: pd.DataFrame):
        self.metrics = {"threshold_rule": rule}
        self._tables = {"threshold_rules": rules, "val_shifts": pd.DataFrame({
            "shift": ["none", "darker", "border"], "group": ["none", "exposure", "border"],
            "roc_auc": [0.99, 0.985, 0.98], "accuracy": [0.95, 0.9, 0.8], "sensitivity": [0.95, 0.97, 0.99],
            "specificity": [0.95, 0.8, 0.3]})}

    def table(self, name):
        return self._tables[name]


def test_robustness_part_names_the_chosen_rule_and_what_youden_would_have_done():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50, int), np.ones(50, int)]
    clean = np.r_[rng.uniform(0, 0.3, 50), rng.uniform(0.1, 1, 50)]
    rules = compare_threshold_rules(y, {"none": clean, "darker": clean + (y == 0) * 0.3,
                                        "border": clean + (y == 0) * 0.5})
    half = c_robustness._binary_robustness(_ShiftEntry("half", rules), 0.5)
    assert "Youden's J on the unshifted validation films would put the cut at" in half["rule_text"]
    assert "a fixed 0.5" in half["rule_text"] and half["threshold_rule_name"] == "a fixed 0.5"
    assert "falls to 0.300 under the worst shift (border)" in half["robustness_text"]
    youden = c_robustness._binary_robustness(_ShiftEntry("youden", rules), 0.2)
    assert youden["rule_text"].startswith("Youden's J on validation alone also holds best")
    assert youden["rules_table"].loc[0, "Threshold rule"] == "Youden's J (chosen)"


# -- the sections on the smoke entries ----------------------------------------------------------
def _used(qmd: str, prefix: str) -> set[str]:
    """Attributes of the section object that a qmd file reads (``b.xxx``)."""
    return set(re.findall(rf"(?<![\w.]){prefix}\.(\w+)", (REPORT / qmd).read_text(encoding="utf-8")))


def _inline_ok(value) -> bool:
    return isinstance(value, (str, int, Markdown)) and not isinstance(value, bool)


def test_binary_section_on_the_smoke_entry(smoke_entries):
    b = c.binary_section(smoke_entries["binary"])
    missing = _used("_binary.qmd", "b") - set(vars(b))
    assert not missing, f"_binary.qmd reads {missing}, which binary_section does not return"
    for name in ("intensity_text", "loss_text", "augmentation_text", "retrain_text", "curve_text", "gap_text",
                 "shift_text", "accuracy_text", "balance_text", "platform", "where", "lr"):
        assert isinstance(getattr(b, name), str) and "@" not in getattr(b, name), name
    assert all(_inline_ok(getattr(b, n)) for n in ("grid_winner", "test_source", "best_epoch", "last_channels",
                                                    "kaggle_val"))
    assert b.tp + b.fn + b.tn + b.fp == b.test_images and b.val_pos + b.val_neg == b.val_images
    assert b.prevalence == pytest.approx((b.tp + b.fn) / b.test_images)
    assert len(b.grid_table) == len(smoke_entries["binary"].table("grid")) == b.grid_variants
    assert len(b.val_target) == len(b.val_score) == b.val_images
    assert len({len(v) for k, v in b.errors.items() if k != "probability_label"}) == 1
    assert b.errors["probability_label"] == "P(pneumonia)"
    assert set(b.curves) == {"test", "validation"} and b.curves["validation"]["linestyle"] == "--"
    assert b.test_table["Metric"].iloc[0] == "ROC AUC" and len(b.test_table) == len(c_evaluation._BINARY_TEST_METRICS)
    assert b.synthetic and b.official_test is None and "synthetic" in b.comparison_text
    assert b.design_note == "" and b.is_vgg
    assert list(b.robustness_table["Validation films"])[0] == "as stored (no shift)"
    assert len(b.robustness_table) == len(SHIFTS) and len(b.rules_table) == len(THRESHOLD_RULES_UNDER_SHIFT)
    assert b.rules_table["Threshold rule"].str.endswith("(chosen)").sum() == 1
    assert b.threshold_rule in THRESHOLD_RULES_UNDER_SHIFT and "@" not in b.rule_text + b.robustness_text


def test_multiclass_section_on_the_smoke_entries(smoke_entries):
    m = c.multiclass_section(smoke_entries["multiclass"], smoke_entries["binary"])
    missing = _used("_multiclass.qmd", "m") - set(vars(m))
    assert not missing, f"_multiclass.qmd reads {missing}, which multiclass_section does not return"
    assert isinstance(m.start_text, Markdown) and isinstance(m.grid_winner, Markdown)
    for name in ("network_text", "intensity_text", "loss_text", "augmentation_text", "run_phrase", "roc_text",
                 "induced_text", "error_text", "bv_val_text", "imbalance_text", "width_text", "init_entry",
                 "binary_lr", "retrain_text"):
        assert isinstance(getattr(m, name), str) and "@" not in getattr(m, name), name
    assert m.grid_table.columns[1] == "Val macro ROC AUC"
    assert m.hardest == min(m.class_auc, key=m.class_auc.get) and m.hardest_auc == m.class_auc[m.hardest]
    assert m.worst_recall_value == min(m.recall.values())
    assert set(m.curves) == {"normal", "bacterial", "viral", "bacterial vs viral"}
    # 1b started from the network of this 1a entry
    assert m.init_entry == f"binary-variant/{smoke_entries['binary'].metrics['variant_entry']}"
    # The smoke grid compares the start from 1a with scratch, so its effect is told with the grid.
    assert m.init_text and m.grid_effects.endswith(m.init_text)
    assert m.compare_table.shape == (len(c_comparison._INDUCED_METRICS), 3)
    assert m.bacterial_as_viral + m.viral_as_bacterial <= m.test_images
    assert len(m.robustness_table) == len(SHIFTS) and "@" not in m.robustness_text


def test_selection_sentence_names_the_criterion_and_its_tie_break():
    shift = c_grid.selection_sentence("shift", "mean validation ROC AUC under shift")
    assert "ranked by their mean validation ROC AUC under shift: the mean over 12 shifted" in shift
    assert "@sec-generalisation" in shift and "ties go to the plain validation figure" in shift
    plain = c_grid.selection_sentence("plain", "validation ROC AUC")
    assert plain == "Variants are ranked by their validation ROC AUC; ties go to validation balanced accuracy."
