"""The Task 1 section builders: :func:`binary_section` (1a) and :func:`multiclass_section` (1b).

Each reads its entry once and puts together the shared facts (:mod:`.common`, :mod:`.grid`),
the design (:mod:`.design`), the test figures (:mod:`.evaluation`) and the discussion
(:mod:`.comparison`) into the :class:`~pneumo.report.section.Section` its ``.qmd`` reads.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pneumo.data import CLASSES
from pneumo.report.classification.common import _read, _shared_design, _shared_entry
from pneumo.report.classification.comparison import _binary_discussion, _multiclass_discussion
from pneumo.report.classification.design import _binary_design, _multiclass_design, curve_sentence
from pneumo.report.classification.evaluation import _binary_test, _multiclass_test
from pneumo.report.classification.grid import _grid_changes, _shared_selection, _validation_auc_se, _variant_named
from pneumo.report.classification.robustness import _binary_robustness, _multiclass_robustness
from pneumo.report.entries import ReportEntry, task_entry
from pneumo.report.section import Section

__all__ = ["binary_section", "multiclass_section"]


def _shared(entry: ReportEntry, r: Mapping[str, Any], changes: Mapping[str, Mapping[str, Any]], *,
            positives: Sequence[int], metric_name: str, again: str) -> dict[str, Any]:
    """What both sections state alike: provenance, settings, timing, the grid's story and the run.

    ``positives`` are the positive classes of the validation AUC's one-vs-rest questions, for
    its rough standard error (``se``); ``metric_name`` and ``again`` word the grid's story and
    the retraining (:func:`~pneumo.report.classification.grid._shared_selection`).
    """
    se = _validation_auc_se(float(r["trained"]["val_roc_auc"].max()), r["val"]["target"], positives)
    return {**_shared_entry(entry, r), **_shared_design(r),
            **_shared_selection(r, se=se, baseline=_variant_named(changes, {}) or "baseline",
                                metric_name=metric_name, again=again)}


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
        (``grid_table``, ``selection_text``, ``grid_winner`` Markdown, ``grid_effects`` printed
        as Markdown, ``retrain_text``, ``se``) and the validation split (``val_images``, ``val_pos``,
        ``val_neg``); training (``history``, ``best_epoch``, ``epochs_run``, ``curve_text``,
        ``platform``, ``train_seconds``, ``speed``, ``data_wait``, ``grid_variants``,
        ``grid_seconds``); test (``test`` indexed by metric, ``test_table``, ``gap_text``,
        confusion counts ``tp fn tn fp``, ``prevalence``, ``confusion``, ``curves``); the
        threshold (``threshold``, ``val_target``, ``val_score``, ``val_sensitivity``,
        ``val_specificity``, the shifts and ``shift_text``); validation under acquisition
        shifts (``robustness_table``, ``robustness_text``, the threshold rules' ``rules_table``,
        ``rule_text``, ``threshold_rule``, ``threshold_rule_name`` and its legend label
        ``threshold_rule_label``); ``errors`` (arguments of
        :func:`pneumo.plots.misclassified_gallery`); the discussion (``train_pneumonia``,
        ``train_normal``, ``balance_text``, ``accuracy_text``, ``kaggle_val``,
        ``test_source``, ``comparison_text`` printed as Markdown) and ``where``.
    """
    binary = binary or task_entry("binary")
    r = _read(binary)
    changes = _grid_changes(binary, "binary")
    # 1a's targets are 0 (normal) and 1 (pneumonia, the positive class of its AUC).
    shared = _shared(binary, r, changes, positives=[1], metric_name="validation ROC AUC",
                     again="again from the start")
    n_pos = int(r["val"]["target"].sum())
    test = _binary_test(binary, r, shared["se"])
    return Section(
        **shared,
        **_binary_design(r, changes),
        val_images=int(len(r["val"])), val_pos=n_pos, val_neg=int(len(r["val"]) - n_pos),
        curve_text=curve_sentence(r["history"], int(r["config"]["epochs"]), int(r["config"]["patience"])),
        **test,
        **_binary_robustness(binary, test["threshold"]),
        **_binary_discussion(binary, r, shared["official_test"]),
    )


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
        ``intensity_text``, ``grid_table``, ``selection_text``, ``grid_winner``, ``grid_effects`` (with the
        initialisation's effect), ``retrain_text``, ``history``, ``best_epoch``,
        ``epochs_run``, ``stopped``, ``platform``, timing, ``test``, ``confusion``,
        ``curves``, ``errors``, ``where``), and for 1b: ``start_text`` (Markdown),
        ``init_text``, ``init_entry``, ``network_text``, ``binary_lr``, ``test_table``,
        ``chance_accuracy``, per-class ``class_auc``/``recall`` with ``hardest``,
        ``hardest_auc``, ``worst_recall``, ``worst_recall_value``, ``roc_text``, the
        confusions ``viral_as_bacterial``/``bacterial_as_viral``, bacterial against viral
        (``bv`` indexed by metric, ``bv_table``, ``bv_val_text``), the induced binary
        classifier (``induced_text``, ``compare_table``), validation under acquisition shifts
        (``robustness_table``, ``robustness_text``) and the discussion
        (``error_text``, ``comparison_text`` printed as Markdown, ``train_bacterial``,
        ``train_viral``, ``imbalance_text``, ``width_text``).
    """
    multiclass = multiclass or task_entry("multiclass")
    binary = binary or task_entry("binary")
    r = _read(multiclass)
    changes = _grid_changes(multiclass, "multiclass")
    shared = _shared(multiclass, r, changes, positives=range(len(CLASSES)),
                     metric_name="validation macro ROC AUC", again="again")
    shared["grid_table"] = shared["grid_table"].rename(columns={"Val ROC AUC": "Val macro ROC AUC"})
    design = _multiclass_design(r, binary.load_model()["config"], changes, shared["se"])
    if design["init_text"]:
        shared["grid_effects"] += "\n\n" + design["init_text"]
    binary_test = binary.table("test_metrics").set_index("metric")
    return Section(
        **shared,
        **design,
        run_phrase="stopped early after" if shared["stopped"] else "ran all",
        **_multiclass_test(multiclass, r),
        **_multiclass_robustness(multiclass),
        **_multiclass_discussion(multiclass, r, binary_test, shared["official_test"]),
    )
