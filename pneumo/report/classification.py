"""Task 1 of the report: 1a (normal or pneumonia) and 1b (normal, bacterial or viral).

:func:`binary_section` and :func:`multiclass_section` read the Task 1 cache entries and
return what ``report/_binary.qmd`` and ``report/_multiclass.qmd`` show. Both sections tell
the same story (a grid chosen on validation, a final model, its test figures); the parts
they share (the grid's story and its noise yardstick, the retraining, loss, optimiser,
timing and training-run facts) are built once, by the ``_shared_*`` helpers below.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pneumo.data import BINARY_CLASSES, CLASSES
from pneumo.metrics import auc_standard_error, binary_metrics
from pneumo.report.entries import (
    ReportEntry,
    curves_from_arrays,
    final_variant,
    images_for,
    misclassified,
    platform_text,
    task_dataset,
    task_entry,
    where,
)
from pneumo.report.provenance import entry_provenance
from pneumo.report.section import Section
from pneumo.report.tables import architecture_summary, data_counts, grid_table, markdown, metric_label, metrics_with_ci
from pneumo.report.text import capitalise, count, fmt_ci, num, pct, plural, signed

__all__ = ["binary_section", "multiclass_section", "grid_story", "BALANCE_TEXT", "retrain_sentence",
           "curve_sentence", "gap_sentence", "shift_sentence", "accuracy_sentence", "intensity_sentence",
           "start_sentence", "init_sentence", "induced_sentence", "imbalance_sentence", "error_sentence",
           "roc_sentence"]

log = logging.getLogger(__name__)

#: How each ``balance`` setting handles the class imbalance (for the design prose).
BALANCE_TEXT = {
    "weights": ("class-weighted cross-entropy, each class weighted by the inverse of its "
                "training frequency (normalised so that the mean weight per image is 1)"),
    "sampling": ("plain cross-entropy on class-balanced batches: every epoch draws as many "
                 "images as the training set holds, with replacement, each class equally likely"),
    "none": "plain cross-entropy, with no correction for the class imbalance",
}

#: Short names of the ``balance`` settings, for a sentence that only names the choice.
_BALANCE_SHORT = {"weights": "class-weighted cross-entropy", "sampling": "class-balanced sampling",
                  "none": "no correction"}

#: Metrics of the Task 1a model and the induced 1b classifier set side by side (tbl-induced).
_INDUCED_METRICS = ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")

#: Rows of the test tables.
_BINARY_TEST_METRICS = ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity",
                        "precision", "f1")
_MULTICLASS_TEST_METRICS = ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "f1_macro")
_BV_METRICS = ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")

#: Misclassified test images shown per task.
_ERRORS_SHOWN = 10


# -- the grid's story ------------------------------------------------------------------------
def _axis_phrase(value: float, base: float, se: float) -> str:
    delta = value - base
    head = f"{num(value)} against the baseline's {num(base)} ({signed(delta)})"
    if not math.isfinite(se) or se <= 0:
        return head + "."
    if abs(delta) <= se:
        return head + ", within one standard error: no clear effect."
    return head + f", more than one standard error {'higher' if delta > 0 else 'lower'}."


def _short_reason(status: Any) -> str:
    """``"skipped: weights 'x' not found: missing file ..."`` -> ``"weights 'x' not found"``."""
    reason = str(status).removeprefix("skipped:").strip()
    return reason.split(": ")[0].split(". ")[0].strip() or "no reason given"


def grid_story(grid: pd.DataFrame, chosen: str, *, se: float, baseline: str = "baseline",
               metric_name: str = "validation ROC AUC") -> dict[str, str]:
    """Sentences that explain the grid's outcome from its numbers (Markdown).

    Parameters
    ----------
    grid
        The task's ``grid`` table (ranked, ``status`` ``trained`` or ``skipped: ...``).
    chosen
        ``metrics["chosen_variant"]``.
    se
        Rough standard error of a validation AUC (:func:`pneumo.metrics.auc_standard_error`),
        used to say which differences are larger than the noise of the validation split; NaN
        or 0 (an AUC at its ceiling) means no such yardstick.
    baseline
        Name of the baseline row.
    metric_name
        How to call the selection metric in the text.

    Returns
    -------
    dict
        ``winner``: why the chosen variant won; ``effects``: a Markdown bullet list, one line
        per variant, its difference from the baseline; ``skipped``: a sentence on skipped
        variants ('' if none).
    """
    trained = grid[grid["status"] == "trained"].sort_values(
        ["val_roc_auc", "val_balanced_accuracy"], ascending=False, kind="stable").reset_index(drop=True)
    if chosen not in set(trained["variant"]):
        raise KeyError(f"chosen variant {chosen!r} is not a trained row of the grid")
    usable_se = math.isfinite(se) and se > 0
    by_name = trained.set_index("variant")
    best = by_name.loc[chosen]
    if len(trained) == 1:
        winner = (f"Only one variant was trained, so **{chosen}** was used "
                  f"({metric_name} {num(best['val_roc_auc'])}).")
    else:
        runner = trained[trained["variant"] != chosen].iloc[0]
        margin = float(best["val_roc_auc"] - runner["val_roc_auc"])
        bal_margin = float(best["val_balanced_accuracy"] - runner["val_balanced_accuracy"])
        noise = ""
        if margin > 1e-12:
            # Enough decimals to show the two values apart.
            d = next((k for k in (3, 4, 5, 6) if num(best["val_roc_auc"], k) != num(runner["val_roc_auc"], k)), 6)
            reason = (f"it reached the highest {metric_name}, {num(best['val_roc_auc'], d)}, ahead of "
                      f"**{runner['variant']}** ({num(runner['val_roc_auc'], d)}) by {num(margin, d)}")
            if usable_se and margin < se:
                noise = (f"That margin is smaller than the rough standard error of a validation AUC "
                         f"on this split (about {num(se)}), so the top of the ranking is close to a "
                         "tie: another validation split could order these variants differently.")
            elif usable_se:
                noise = (f"The margin exceeds the rough standard error of a validation AUC on this "
                         f"split (about {num(se)}).")
        elif bal_margin > 1e-12:
            reason = (f"it tied with **{runner['variant']}** on {metric_name} "
                      f"({num(best['val_roc_auc'])}) and won on validation balanced accuracy "
                      f"({num(best['val_balanced_accuracy'])} against {num(runner['val_balanced_accuracy'])})")
        else:
            reason = (f"it tied with **{runner['variant']}** on both {metric_name} "
                      f"({num(best['val_roc_auc'])}) and balanced accuracy "
                      f"({num(best['val_balanced_accuracy'])}), and a full tie keeps the grid's "
                      "order, which lists the baseline first")
        if float(best["val_roc_auc"]) >= 1 - 1e-12 and margin <= 1e-12:
            noise = ("With validation AUCs at their ceiling of 1, the validation split is too easy "
                     "to rank these variants.")
        kept = ("The configured baseline kept its place" if chosen == baseline
                else f"The change **{chosen}** was adopted over the baseline")
        winner = f"{kept}: {reason}. {noise}".strip()

    effects = []
    if baseline in by_name.index:
        base_auc = float(by_name.loc[baseline, "val_roc_auc"])
        for name, row in by_name.iterrows():
            if name != baseline:
                effects.append(f"- **{name}**: {_axis_phrase(float(row['val_roc_auc']), base_auc, se)}")
    skipped_rows = grid[grid["status"] != "trained"]
    skipped = ""
    if len(skipped_rows):
        items = "; ".join(f"**{r['variant']}** ({_short_reason(r['status'])})"
                          for _, r in skipped_rows.iterrows())
        skipped = f"Skipped, so not compared: {items}."
    return {"winner": winner, "effects": "\n".join(effects), "skipped": skipped}


# -- reading an entry --------------------------------------------------------------------------
def _proba_column(name: str) -> str:
    """The ``predictions`` column holding a class's probability (as :mod:`pneumo.classification` writes it)."""
    return f"p_{name}"


def _grid_changes(entry: ReportEntry, task: str) -> dict[str, dict[str, Any]]:
    """``{variant name: field changes}`` of the entry's grid, from the task's own grid definition.

    Rebuilds the task config from the entry's parameters and asks
    :func:`pneumo.classification.grid_variants`, so the section never spells out variant names.
    """
    from pneumo.classification import BinaryConfig, MulticlassConfig, grid_variants

    cls = BinaryConfig if task == "binary" else MulticlassConfig
    params = entry.params
    config = cls(**{k: params[k] for k in cls.field_names() if k in params})
    return dict(grid_variants(config))


def _variant_named(changes: Mapping[str, Mapping[str, Any]], wanted: Mapping[str, Any]) -> str | None:
    """The grid variant whose changes are exactly ``wanted`` (``{}``: the baseline), or None."""
    return next((name for name, c in changes.items() if dict(c) == dict(wanted)), None)


def _read(entry: ReportEntry) -> dict[str, Any]:
    """The tables and settings of a Task 1 entry that both sections read."""
    grid = entry.table("grid")
    predictions = entry.table("predictions")
    test_metrics = entry.table("test_metrics")
    return {
        "metrics": entry.metrics,
        "params": entry.params,
        # The chosen model's full settings (its architecture, budget and loss).
        "config": entry.load_model()["config"],
        "grid": grid,
        "trained": grid[grid["status"] == "trained"],
        "history": entry.table("history"),
        "test_metrics": test_metrics,
        "test": test_metrics.set_index("metric"),
        "predictions": predictions,
        "val": predictions[predictions["split"] == "val"],
        "confusion": entry.table("confusion"),
        "counts": data_counts(entry.json("data_summary")),
    }


# -- what both sections say -------------------------------------------------------------------
def _validation_auc_se(best_auc: float, targets: Sequence[int], classes: Sequence[int]) -> float:
    """Rough standard error of the best validation AUC: Hanley & McNeil's per one-vs-rest question.

    ``classes`` are the positive classes of the questions (1a: pneumonia only); several are
    averaged, which for a macro AUC is an upper bound on the standard error of their mean.
    """
    targets = np.asarray(targets)
    return float(np.mean([auc_standard_error(best_auc, int((targets == c).sum()), int((targets != c).sum()))
                          for c in classes]))


def _final_is_grid_run(trained: pd.DataFrame, chosen: str, metrics: Mapping[str, Any],
                       history: pd.DataFrame) -> bool:
    """True when the final model is the winner's grid run itself, not a retraining.

    The grid screens at a smaller budget than the final training only sometimes; when it does
    not, the final training finds the winner's run in the cache and reuses it, so its record
    (epochs run, best epoch, training time) is the grid row's. A retraining is a new run,
    whose measured training time differs.
    """
    row = trained.set_index("variant").loc[chosen]
    return (int(row["epochs_run"]) == len(history) and int(row["best_epoch"]) == int(metrics["best_epoch"])
            and math.isclose(float(row["train_seconds"]), float(metrics["train_seconds"]), rel_tol=1e-9))


def retrain_sentence(retrained: bool, screened: int, final_epochs: int, again: str = "again") -> str:
    """How the final model relates to the grid: retrained at the full budget, or the winner's run.

    ``screened`` is the most epochs any grid variant ran; ``again`` words the retraining
    (1a: ``"again from the start"``).
    """
    if not retrained:
        return (f"Every variant was trained with the full budget of {plural(final_epochs, 'epoch')}, so the winner's "
                "grid run is the final model.")
    return (f"Every variant was screened for at most {plural(screened, 'epoch')}; the winner was then trained "
            f"{again} for up to {plural(final_epochs, 'epoch')}, and that model is the one evaluated below.")


def _loss_sentence(config: Mapping[str, Any]) -> str:
    """The training loss of the chosen model, capitalised, without a final full stop."""
    smoothing = f" with label smoothing {config['label_smoothing']:g}" if config["label_smoothing"] else ""
    return capitalise(BALANCE_TEXT[config["balance"]] + smoothing)


def _shared_design(r: Mapping[str, Any]) -> dict[str, Any]:
    """Settings and timing of the chosen model that both sections state the same way."""
    config, history, trained = r["config"], r["history"], r["trained"]
    return {
        "config": config,
        "parameters": int(r["metrics"]["parameters"]),
        "lr": f"{config['lr']:g}",
        "weight_decay": f"{config['weight_decay']:g}",
        "warmup": f"{config['warmup_epochs']:g}",
        "train_seconds": float(r["metrics"]["train_seconds"]),
        "speed": float(history["images_per_s"].median()),
        "data_wait": float(history["data_wait_fraction"].median()),
        "grid_variants": int(len(trained)),
        "grid_seconds": float(trained["train_seconds"].sum()),
    }


def _shared_selection(r: Mapping[str, Any], *, se: float, baseline: str, metric_name: str,
                      again: str) -> dict[str, Any]:
    """The grid's table and story, the retraining sentence and the final training run."""
    metrics, trained, history, config = r["metrics"], r["trained"], r["history"], r["config"]
    chosen = str(metrics["chosen_variant"])
    story = grid_story(r["grid"], chosen, se=se, baseline=baseline, metric_name=metric_name)
    effects = story["effects"] or "*The grid has no baseline row to compare with.*"
    retrained = not _final_is_grid_run(trained, chosen, metrics, history)
    return {
        "chosen": chosen,
        "se": se,
        "grid_table": grid_table(r["grid"]),
        "grid_winner": markdown(story["winner"]),
        "grid_effects": "\n\n".join(part for part in (effects, story["skipped"]) if part),
        "retrained": retrained,
        "retrain_text": retrain_sentence(retrained, int(trained["epochs_run"].max()), int(config["epochs"]), again),
        "history": history,
        "epochs_run": int(len(history)),
        "best_epoch": int(metrics["best_epoch"]),
        "stopped": len(history) < int(config["epochs"]),
    }


def _shared_entry(entry: ReportEntry, r: Mapping[str, Any]) -> dict[str, Any]:
    """Where the results come from, and the tables both sections display as they are."""
    metrics = r["metrics"]
    return {
        "where": where(entry),
        "platform": platform_text(final_variant(entry)),
        "architecture": architecture_summary(entry.table("architecture")),
        "confusion": r["confusion"],
        "test": r["test"],
        "test_images": int(metrics["test_images"]),
        "test_patients": int(metrics["test_patients"]),
        "synthetic": bool(metrics["data_synthetic"]),
        "official_test": entry_provenance(entry).official,
    }


def _error_gallery(entry: ReportEntry, errors: pd.DataFrame, probability_label: str) -> dict[str, Any]:
    """Arguments of :func:`pneumo.plots.misclassified_gallery` for a task's test errors."""
    images = images_for(task_dataset(entry), errors["relpath"]) if len(errors) else []
    return {"images": images, "true": list(errors["true"]), "predicted": list(errors["pred"]),
            "probability": [float(p) for p in errors["shown"]], "probability_label": probability_label}


# -- Task 1a: sentences -----------------------------------------------------------------------
def _augmentation_sentence(augment: bool) -> str:
    """The augmentation of the chosen 1a model, with the ranges :func:`pneumo.training.augment_batch` uses."""
    if not augment:
        return "The chosen model is trained without augmentation."
    from pneumo.training import augment_batch

    aug = {k: v.default for k, v in inspect.signature(augment_batch).parameters.items()
           if v.default is not inspect.Parameter.empty}
    return (f"Training batches are augmented on the device: random rotation (±{aug['max_rotation_deg']:.0f}°), "
            f"zoom ({aug['scale_range'][0]:.2f}–{aug['scale_range'][1]:.2f}), "
            f"shift (±{100 * aug['max_translate']:.0f}% of the side), gamma, "
            f"contrast (±{100 * aug['max_contrast']:.0f}%) and brightness (±{100 * aug['max_brightness']:.0f}%) "
            "jitter. There are no horizontal flips: a mirrored chest "
            "is anatomically implausible, and side markers would flip with it.")


def intensity_sentence(stretch: bool, measured: bool) -> str:
    """What the 1a network does with grey levels; ``measured``: the grid compared both modes."""
    if stretch:
        return ("Its first layer stretches each image's contrast, linearly and without learnt parameters: the "
                "image's 1st percentile of grey levels goes to black and its 99th to white, so that neither the "
                "exposure nor the contrast of a film can inform the decision.")
    if measured:
        return ("It reads the grey levels as they are; the per-image contrast stretch measured in the grid "
                "was not chosen.")
    return "It reads the grey levels as they are."


def _design_note(arch: str) -> str:
    """Markdown (printed as is) when the grid chose the pre-trained comparator; '' for the VGG network."""
    if arch == "vgg":
        return ""
    return (f"*The grid chose the pre-trained comparator `{arch}` [@cohen2022] over the from-scratch network, "
            "so the model evaluated below is that network (its layers are in the table); the next paragraph "
            "describes the from-scratch network it was compared with.*\n")


def curve_sentence(history: pd.DataFrame, max_epochs: int, patience: int) -> str:
    """How training ended, and whether validation loss shows over-fitting (no final full stop)."""
    epochs_run = len(history)
    low_epoch = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    rise = float(history["val_loss"].iloc[-1] - history["val_loss"].min())
    head = (f"Training stopped early after epoch {epochs_run}, {plural(patience, 'epoch')} without a better "
            f"validation ROC AUC" if epochs_run < max_epochs else f"Training ran all {epochs_run} epochs")
    if rise > 0.05 * history["val_loss"].min() and low_epoch < epochs_run:
        return head + (f"; validation loss was lowest at epoch {low_epoch} and then rose by {num(rise)} "
                       "while training loss kept falling, the usual sign of over-fitting, which early stopping "
                       "and keeping the best epoch's weights guard against.")
    return head + ("; validation loss did not rise markedly towards the end, so there is little sign of "
                   "over-fitting within this budget.")


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


def accuracy_sentence(accuracy_minus_balanced: float) -> str:
    """Why accuracy and balanced accuracy differ (or nearly agree) on test."""
    d = accuracy_minus_balanced
    if abs(d) < 0.01:
        return ("the two nearly agree here, but accuracy alone would depend on the test split's class mix, "
                "which is why we lead with ROC AUC and balanced accuracy.")
    return (f"accuracy is {'higher' if d > 0 else 'lower'} by {num(abs(d))} because it "
            "weighs the classes by their share of the test split, while balanced accuracy weighs them "
            "equally; that is why we lead with ROC AUC and balanced accuracy.")


def _test_source(official: bool | None):
    """Markdown (it may refer to @sec-data): where the test folder's images come from."""
    if official is False:
        return markdown("the same hospital as training (and, as @sec-data found, not the official test split)")
    return markdown("the same hospital as training")


def _binary_comparison(official: bool | None, test: pd.DataFrame) -> str:
    """Markdown (printed as is, it cites @kermany2018): how our 1a test figures relate to published ones."""
    if official is None:
        return ("Because these results come from synthetic images, they cannot be compared with "
                "published results on the real collection.")
    if official is False:
        return (f"@kermany2018 reported about 93% accuracy for this binary question with an "
                f"ImageNet-pretrained network on the original test split. Our test folder is not that "
                f"split (see @sec-data), so our accuracy of {fmt_ci(test.loc['accuracy'])} is not "
                "comparable with it.")
    return (f"For reference, @kermany2018 reported about 93% accuracy for this binary question "
            f"with an ImageNet-pretrained network; our from-scratch model reaches "
            f"{fmt_ci(test.loc['accuracy'])} on the test folder (balanced accuracy "
            f"{fmt_ci(test.loc['balanced_accuracy'])}). The two figures are not measured on "
            "identical protocols, so this is a rough comparison only.")


# -- Task 1a: the section ---------------------------------------------------------------------
def _binary_design(entry: ReportEntry, r: Mapping[str, Any]) -> dict[str, Any]:
    config = r["config"]
    changes = _grid_changes(entry, "binary")
    intensity_measured = any("intensity" in changes.get(v, {}) for v in r["grid"]["variant"])
    return {
        "is_vgg": config.get("arch", "vgg") == "vgg",
        "design_note": _design_note(config.get("arch", "vgg")),
        "intensity_text": intensity_sentence(config.get("intensity", "none") == "stretch", intensity_measured),
        "last_channels": int(config["width"] * 2 ** (config["depth"] - 1)),
        "side_out": int(config["resolution"] // 2 ** config["depth"]),
        "loss_text": _loss_sentence(config),
        "balance_text": BALANCE_TEXT[config["balance"]],
        "augmentation_text": _augmentation_sentence(bool(config["augment"])),
    }


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


def _binary_discussion(entry: ReportEntry, r: Mapping[str, Any], official: bool | None) -> dict[str, Any]:
    counts, test = r["counts"], r["test"]
    kaggle_val = entry.json("data_summary")["kaggle_counts"].get("val", {})
    return {
        "train_pneumonia": int(counts.loc["train", "bacterial"] + counts.loc["train", "viral"]),
        "train_normal": int(counts.loc["train", "normal"]),
        "accuracy_text": accuracy_sentence(float(test.loc["accuracy", "value"]
                                                 - test.loc["balanced_accuracy", "value"])),
        "kaggle_val": int(sum(kaggle_val.values())),
        "test_source": _test_source(official),
        "comparison_text": _binary_comparison(official, test),
    }


def binary_section(binary: ReportEntry | None = None) -> Section:
    """What the Task 1a section shows: design, grid, training, test figures, threshold, errors.

    Parameters
    ----------
    binary
        Task 1a's entry; None: :func:`~pneumo.report.entries.task_entry` ``("binary")``.

    Returns
    -------
    Section
        Settings of the chosen model (``config``, ``parameters``, ``lr``, ``weight_decay``,
        ``warmup``, ``architecture``) and the design sentences (``design_note``, printed as
        Markdown; ``intensity_text``, ``loss_text``, ``augmentation_text``); the grid
        (``grid_table``, ``grid_winner`` Markdown, ``grid_effects`` printed as Markdown,
        ``retrain_text``, ``se``) and the validation split (``val_images``, ``val_pos``,
        ``val_neg``); training (``history``, ``best_epoch``, ``epochs_run``, ``curve_text``,
        ``platform``, ``train_seconds``, ``speed``, ``data_wait``, ``grid_variants``,
        ``grid_seconds``); test (``test`` indexed by metric, ``test_table``, ``gap_text``,
        confusion counts ``tp fn tn fp``, ``prevalence``, ``confusion``, ``curves``); the
        threshold (``threshold``, ``val_target``, ``val_score``, ``val_sensitivity``,
        ``val_specificity``, the shifts and ``shift_text``); ``errors`` (arguments of
        :func:`pneumo.plots.misclassified_gallery`); the discussion (``train_pneumonia``,
        ``train_normal``, ``balance_text``, ``accuracy_text``, ``kaggle_val``,
        ``test_source``, ``comparison_text`` printed as Markdown) and ``where``.
    """
    binary = binary or task_entry("binary")
    r = _read(binary)
    # 1a's targets are 0 (normal) and 1 (pneumonia, the positive class of its AUC).
    se = _validation_auc_se(float(r["trained"]["val_roc_auc"].max()), r["val"]["target"], [1])
    baseline = _variant_named(_grid_changes(binary, "binary"), {}) or "baseline"
    shared = {**_shared_entry(binary, r), **_shared_design(r),
              **_shared_selection(r, se=se, baseline=baseline, metric_name="validation ROC AUC",
                                  again="again from the start")}
    n_pos = int(r["val"]["target"].sum())
    return Section(
        **shared,
        **_binary_design(binary, r),
        val_images=int(len(r["val"])), val_pos=n_pos, val_neg=int(len(r["val"]) - n_pos),
        curve_text=curve_sentence(r["history"], int(r["config"]["epochs"]), int(r["config"]["patience"])),
        **_binary_test(binary, r, se),
        **_binary_discussion(binary, r, shared["official_test"]),
    )


# -- Task 1b: sentences -----------------------------------------------------------------------
def start_sentence(from_1a: bool, inherits: bool):
    """Markdown: where the chosen 1b model's weights started (it may refer to @tbl-grid-multiclass)."""
    if from_1a:
        text = ("The chosen model starts from the Task 1a network: every layer except the final linear "
                "layer is copied from it, and the new three-way output layer starts from random weights.")
    elif inherits:
        text = ("The chosen model starts from random weights (the grid preferred training from scratch "
                "to starting from the Task 1a network; see @tbl-grid-multiclass).")
    else:
        text = ("The chosen model starts from random weights: the Task 1a model could not be reused "
                "(it is not the VGG network), so 1b trains its own from scratch.")
    return markdown(text)


def init_sentence(warm: float | None, scratch: float | None, se: float) -> str:
    """The effect of starting from Task 1a (``warm``) against scratch on validation ('' if not measured)."""
    if warm is None or scratch is None:
        return ""
    delta = warm - scratch
    verdict = ("a difference within the rough standard error, so on this evidence the head start "
               "neither clearly helps nor hurts." if abs(delta) <= se else
               "the head start helps." if delta > 0 else
               "the head start hurts here, perhaps because features tuned to the binary question "
               "must first be unlearned.")
    return (f"Starting from the Task 1a network changed the validation macro ROC AUC by "
            f"{signed(delta)} compared with training the same network from scratch for the "
            f"same number of epochs ({num(warm)} against {num(scratch)}); " + verdict)


def roc_sentence(hardest: str, worst_recall: str) -> str:
    """Continues "the hardest class to single out is X (ROC AUC a)": agreement with the recalls."""
    if hardest == worst_recall:
        return ", the same class."
    return (f". The class with the lowest sensitivity, {worst_recall}, is ranked better than its "
            "sensitivity suggests, so the arg-max decision, not only the probabilities, costs it.")


def error_sentence(n_errors: int, between: int, bv_auc: float, induced_auc: float) -> str:
    """Where the 1b test errors are: between the pneumonias or involving normal, and which split is harder."""
    text = (f"Of the {count(n_errors)} test errors, {count(between)} ({pct(between / max(n_errors, 1))}) "
            "confuse the two kinds of pneumonia and the rest involve the normal class. ")
    if bv_auc < induced_auc:
        return text + (f"Separating bacterial from viral pneumonia (ROC AUC {num(bv_auc)}) is harder for the model "
                       f"than separating normal from pneumonia ({num(induced_auc)}), as one expects from "
                       "radiographic patterns that overlap.")
    return text + (f"Separating bacterial from viral pneumonia (ROC AUC {num(bv_auc)}) is not harder for the model "
                   f"than separating normal from pneumonia ({num(induced_auc)}) on this test split.")


def induced_sentence(induced: pd.Series, binary: pd.Series) -> str:
    """The induced 1b classifier's test ROC AUC against Task 1a's (rows: value, ci_low, ci_high)."""
    delta = float(induced["value"] - binary["value"])
    overlap = not (induced["ci_low"] > binary["ci_high"] or binary["ci_low"] > induced["ci_high"])
    if overlap:
        return (f"The two ROC AUCs differ by {signed(delta)} and their confidence intervals overlap, so "
                "on this test split learning the finer three-way question did not measurably change how well "
                "the network separates normal from pneumonia.")
    return (f"The three-class model's ROC AUC is {'higher' if delta > 0 else 'lower'} by "
            f"{num(abs(delta))}, and the confidence intervals do not overlap.")


def imbalance_sentence(viral_share: float, balance: str) -> str:
    """The bacterial/viral imbalance in training and how the chosen model handles it."""
    short = _BALANCE_SHORT[balance]
    if abs(viral_share - 0.5) > 0.1:
        return (f"Viral images are {pct(viral_share)} of the pneumonia images in training, so they are a "
                f"minority class; the chosen model uses {short}, and the balanced accuracy and macro "
                "figures we report weigh every class equally, where plain accuracy would let the majority "
                "classes dominate.")
    return (f"Bacterial and viral images are about equally frequent in training ({pct(viral_share)} viral), "
            f"so the imbalance here is between normal and pneumonia; the chosen model uses {short}.")


def _compare_table(binary_test: pd.DataFrame, induced: pd.DataFrame) -> pd.DataFrame:
    """tbl-induced: the 1a model and the induced 1b classifier, estimate [95% CI] per metric."""
    label = {k: metric_label(k) for k in _INDUCED_METRICS} | {"sensitivity": "Sensitivity"}
    return pd.DataFrame([{"Metric": label[k], "Task 1a model": fmt_ci(binary_test.loc[k]),
                          "Task 1b model, P(normal) < 0.5": fmt_ci(induced.loc[k])} for k in _INDUCED_METRICS])


def _multiclass_comparison(official: bool | None, bv: pd.DataFrame, train_images: int) -> str:
    """Markdown (printed as is, it cites @kermany2018): our bacterial/viral accuracy against theirs."""
    if official is None:
        return ("On synthetic images the bacterial and viral phantoms differ by construction "
                "(a consolidation against a diffuse texture), so these results say nothing about "
                "how separable the real classes are, and cannot be compared with published figures.")
    transfer = ("Their network was also not trained from scratch: they fine-tuned an Inception V3 pretrained "
                f"on ImageNet, whereas ours learned from the {count(train_images)} training images alone.")
    if official is False:
        return (f"@kermany2018 reported about 91% accuracy for bacterial against viral pneumonia on the "
                f"original test split; our test folder is not that split (see @sec-data), so our "
                f"accuracy on this sub-question, {fmt_ci(bv.loc['accuracy'])} at a fixed 0.5 cut, "
                f"is not comparable with it. {transfer}")
    return (f"@kermany2018 reported about 91% accuracy for bacterial against viral pneumonia; "
            f"our model's accuracy on this sub-question is {fmt_ci(bv.loc['accuracy'])} at a "
            f"fixed 0.5 cut. The protocols differ, so the comparison is rough. {transfer}")


# -- Task 1b: the section ---------------------------------------------------------------------
def _per_class_metrics(index: pd.Index) -> list[str]:
    """Per-class test keys, named after the class (``sensitivity_viral``) or, in older entries, its index."""
    return [f"{kind}_{c}" if f"{kind}_{c}" in index else f"{kind}_{i}"
            for kind in ("sensitivity", "precision") for i, c in enumerate(CLASSES)]


def _multiclass_design(r: Mapping[str, Any], binary_config: Mapping[str, Any],
                       changes: Mapping[str, Mapping[str, Any]], se: float) -> dict[str, Any]:
    config, trained = r["config"], r["trained"].set_index("variant")
    init_entry = str(r["params"].get("init_entry") or "")
    warm, scratch = _variant_named(changes, {}), _variant_named(changes, {"init": "scratch"})
    measured = warm in trained.index and scratch in trained.index
    tail = (". Label smoothing keeps the network from becoming over-confident on a distinction whose "
            "labels are themselves uncertain." if config["label_smoothing"] else ".")
    same_arch = all(config.get(k) == binary_config.get(k) for k in ("width", "depth", "convs_per_block", "resolution"))
    return {
        "init_entry": init_entry or "(none)",
        "start_text": start_sentence(bool(config.get("init")), bool(init_entry)),
        "init_text": init_sentence(float(trained.loc[warm, "val_roc_auc"]) if measured else None,
                                   float(trained.loc[scratch, "val_roc_auc"]) if measured else None, se),
        "network_text": "the Task 1a architecture" if same_arch else "a VGG-style network",
        "intensity_text": ("each image's contrast stretched by the first layer (1st percentile to black, "
                           "99th to white)" if config.get("intensity", "none") == "stretch"
                           else "read with their grey levels as they are"),
        "loss_text": _loss_sentence(config) + tail,
        "binary_lr": f"{binary_config['lr']:g}",
        "augmentation_text": ("on" if config["augment"] else "off") + (
            ", as in the chosen Task 1a model." if config["augment"] == binary_config["augment"] else
            ", unlike in the chosen Task 1a model."),
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


def _bacterial_viral_validation(r: Mapping[str, Any], test_auc: float) -> str:
    """The bacterial/viral ROC AUC on the validation split that chose the model, against test."""
    normal, bacterial, viral = CLASSES
    preds = r["predictions"]
    sick = r["val"][r["val"]["target"] != CLASSES.index(normal)]
    score = sick[_proba_column(viral)] / (sick[_proba_column(bacterial)] + sick[_proba_column(viral)])
    val_auc = float(binary_metrics((sick["target"] == CLASSES.index(viral)).astype(int), score)["roc_auc"])
    test_patients = preds[(preds["split"] == "test") & (preds["target"] != CLASSES.index(normal))]["patient"].nunique()
    return (f"On the validation split, which chose the model, the same score reaches ROC AUC "
            f"{num(val_auc)} ({count(len(sick))} pneumonia images), against {num(test_auc)} on test. "
            f"The two differ by {num(abs(val_auc - test_auc))}: resting on "
            f"{count(sick['patient'].nunique())} and {count(test_patients)} patients, this "
            "figure moves with the patients in the sample, so small differences on it between variants "
            "mean little.")


def _multiclass_discussion(entry: ReportEntry, r: Mapping[str, Any], binary_test: pd.DataFrame,
                           official: bool | None) -> dict[str, Any]:
    counts = r["counts"]
    bv_table, induced_table = entry.table("bacterial_vs_viral"), entry.table("induced_binary")
    bv, induced = bv_table.set_index("metric"), induced_table.set_index("metric")
    _, bacterial, viral = CLASSES
    cm = r["confusion"].set_index("true").loc[list(CLASSES), list(CLASSES)]
    confused = int(cm.loc[viral, bacterial] + cm.loc[bacterial, viral])
    n_errors = int(cm.to_numpy().sum() - np.trace(cm.to_numpy()))
    bv_auc, induced_auc = float(bv.loc["roc_auc", "value"]), float(induced.loc["roc_auc", "value"])
    train_viral, train_bacterial = int(counts.loc["train", viral]), int(counts.loc["train", bacterial])
    width = lambda t: float(t.loc["roc_auc", "ci_high"] - t.loc["roc_auc", "ci_low"])  # noqa: E731
    test_sick = int(counts.loc["test", bacterial] + counts.loc["test", viral])
    return {
        "bv": bv,
        "bv_table": metrics_with_ci(bv_table, list(_BV_METRICS)),
        "induced_text": induced_sentence(induced.loc["roc_auc"], binary_test.loc["roc_auc"]),
        "compare_table": _compare_table(binary_test, induced),
        "error_text": error_sentence(n_errors, confused, bv_auc, induced_auc),
        "bv_val_text": _bacterial_viral_validation(r, bv_auc),
        "comparison_text": _multiclass_comparison(official, bv, int(r["metrics"]["train_images"])),
        "train_bacterial": train_bacterial,
        "train_viral": train_viral,
        "imbalance_text": imbalance_sentence(train_viral / (train_viral + train_bacterial), r["config"]["balance"]),
        "width_text": (f"The bacterial/viral figures rest on the {count(test_sick)} pneumonia images of the test "
                       f"split alone; their ROC AUC interval is {num(width(bv))} wide, against "
                       f"{num(width(induced))} for normal against pneumonia."),
    }


def multiclass_section(multiclass: ReportEntry | None = None, binary: ReportEntry | None = None) -> Section:
    """What the Task 1b section shows: start from 1a, grid, test figures, bacterial/viral, 1a comparison.

    Parameters
    ----------
    multiclass
        Task 1b's entry; None: :func:`~pneumo.report.entries.task_entry` ``("multiclass")``.
    binary
        Task 1a's entry, for its chosen settings and its test ROC AUC; None:
        ``task_entry("binary")``.

    Returns
    -------
    Section
        The shared attributes of :func:`binary_section` (``config``, ``parameters``, ``lr``,
        ``weight_decay``, ``warmup``, ``architecture``, ``loss_text``, ``augmentation_text``,
        ``intensity_text``, ``grid_table``, ``grid_winner``, ``grid_effects`` (with the
        initialisation's effect), ``retrain_text``, ``history``, ``best_epoch``,
        ``epochs_run``, ``stopped``, ``platform``, timing, ``test``, ``confusion``,
        ``curves``, ``errors``, ``where``), and for 1b: ``start_text`` (Markdown),
        ``init_text``, ``init_entry``, ``network_text``, ``binary_lr``, ``test_table``,
        ``chance_accuracy``, per-class ``class_auc``/``recall`` with ``hardest``,
        ``hardest_auc``, ``worst_recall``, ``worst_recall_value``, ``roc_text``, the
        confusions ``viral_as_bacterial``/``bacterial_as_viral``, bacterial against viral
        (``bv`` indexed by metric, ``bv_table``, ``bv_val_text``), the induced binary
        classifier (``induced_text``, ``compare_table``) and the discussion
        (``error_text``, ``comparison_text`` printed as Markdown, ``train_bacterial``,
        ``train_viral``, ``imbalance_text``, ``width_text``).
    """
    multiclass = multiclass or task_entry("multiclass")
    binary = binary or task_entry("binary")
    r = _read(multiclass)
    changes = _grid_changes(multiclass, "multiclass")
    se = _validation_auc_se(float(r["trained"]["val_roc_auc"].max()), r["val"]["target"], range(len(CLASSES)))
    shared = {**_shared_entry(multiclass, r), **_shared_design(r),
              **_shared_selection(r, se=se, baseline=_variant_named(changes, {}) or "baseline",
                                  metric_name="validation macro ROC AUC", again="again")}
    shared["grid_table"] = shared["grid_table"].rename(columns={"Val ROC AUC": "Val macro ROC AUC"})
    design = _multiclass_design(r, binary.load_model()["config"], changes, se)
    if design["init_text"]:
        shared["grid_effects"] += "\n\n" + design["init_text"]
    binary_test = binary.table("test_metrics").set_index("metric")
    return Section(
        **shared,
        **design,
        run_phrase="stopped early after" if shared["stopped"] else "ran all",
        **_multiclass_test(multiclass, r),
        **_multiclass_discussion(multiclass, r, binary_test, shared["official_test"]),
    )
