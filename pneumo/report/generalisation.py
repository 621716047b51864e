"""Generalisation in the report: validation against test, under shift, and what the shifts chose.

:func:`generalisation_section` reads the shift-benchmark tables every task stores (Task 1a
and 1b ``val_shifts``, Task 2 ``knn_val_shifts``, Task 3 ``val_shifts``) and the test
figures, and returns what ``report/_generalisation.qmd`` shows: one row per headline figure
with its value on validation as it is, its mean and worst value over the shifted copies, and
its test value; where the test folder comes from; and the published figures on the
collection's official test split, which only apply when the test folder is that split.
"""

from __future__ import annotations

import logging
from typing import Mapping

import pandas as pd

from pneumo.report.anomaly import score_name
from pneumo.report.entries import ReportEntry, task_entry
from pneumo.report.provenance import entry_provenance
from pneumo.report.section import Section
from pneumo.report.tables import md_table
from pneumo.report.text import num, pct, plural
from pneumo.shift import THRESHOLD_RULES_UNDER_SHIFT, robustness_summary

__all__ = ["generalisation_section", "ANCHORS", "figures_table", "anchor_table", "provenance_paragraph",
           "seed_table", "seed_paragraph", "seed_block"]

log = logging.getLogger(__name__)

#: Published figures on the collection's official test split (624 images): name -> (what it
#: is, accuracy, ROC AUC, the caveat). ``None``: not reported.
ANCHORS = {
    "@kermany2018": ("Inception V3 pre-trained on ImageNet, normal vs pneumonia", 0.928,
                                           0.968),
    "MedMNIST v2 [@yang2023medmnist]": ("ResNet-50 from scratch at 224 px, normal vs pneumonia", 0.884, 0.962),
    "SQUID [@xiang2023squid]": ("anomaly detection, trained on normal films only", None, 0.876),
}


def _row(figure: str, shifts: pd.DataFrame, metric: str, test: float) -> dict[str, object]:
    """One figure: validation as it is, mean and worst over the shifts (which), test."""
    summary = robustness_summary(shifts, metric)
    return {"Figure": figure, "Validation": summary["clean"], "Mean under shift": summary["mean"],
            "Worst shift": summary["worst"], "Worst of the shifts": summary["worst_shift"], "Test": test}


def figures_table(binary: ReportEntry, multiclass: ReportEntry, embeddings: ReportEntry,
                  anomaly: ReportEntry) -> pd.DataFrame:
    """The headline figures of Tasks 1-3 on validation, under shift and on test.

    Parameters
    ----------
    binary, multiclass, embeddings, anomaly
        The four task entries; each stores its own shift benchmark on validation.

    Returns
    -------
    pandas.DataFrame
        Columns ``Figure``, ``Validation``, ``Mean under shift``, ``Worst shift``, ``Worst of
        the shifts`` (its name) and ``Test``.
    """
    b, m, e, a = binary.metrics, multiclass.metrics, embeddings.metrics, anomaly.metrics
    b_shifts, m_shifts = binary.table("val_shifts"), multiclass.table("val_shifts")
    knn = embeddings.table("knn_val_shifts")
    knn_1a = knn[(knn["representation"] == "net_1a") & (knn["question"] == "binary")]
    detector = anomaly.table("val_shifts")
    detector = detector[(detector["variant"] == a["chosen_variant"]) & (detector["score"] == a["chosen_score"])]
    return pd.DataFrame([
        _row("Task 1a, ROC AUC", b_shifts, "roc_auc", b["test_roc_auc"]),
        _row("Task 1a, balanced accuracy at the threshold", b_shifts, "balanced_accuracy",
             b["test_balanced_accuracy"]),
        _row("Task 1b, balanced accuracy", m_shifts, "balanced_accuracy", m["test_balanced_accuracy"]),
        _row("Task 1b, bacterial vs viral ROC AUC", m_shifts, "bacterial_vs_viral_roc_auc",
             m["bacterial_vs_viral_roc_auc"]),
        _row("Task 2, k-NN on the 1a embedding, balanced accuracy", knn_1a, "balanced_accuracy",
             e["net_1a_binary_test_balanced_accuracy"]),
        _row("Task 3, anomaly detector, ROC AUC", detector, "roc_auc", a["test_roc_auc"]),
    ])


THRESHOLD_ROW = "Task 1a, decision threshold"
ROBUSTNESS_ROWS = {"binary": "Task 1a, validation balanced accuracy, worst shift",
                   "multiclass": "Task 1b, validation balanced accuracy, worst shift"}

#: The Task 1 figures of the seed table: (task, ``seeds`` column, label).
SEED_ROWS = (
    ("binary", "test_roc_auc", "Task 1a, test ROC AUC"),
    ("binary", "test_accuracy", "Task 1a, test accuracy at its threshold"),
    ("binary", "test_specificity", "Task 1a, test specificity at its threshold"),
    ("binary", "threshold", THRESHOLD_ROW),
    ("binary", "val_shift_roc_auc_mean", "Task 1a, validation ROC AUC, mean under shift"),
    ("binary", "val_shift_balanced_accuracy_worst", ROBUSTNESS_ROWS["binary"]),
    ("multiclass", "test_accuracy", "Task 1b, test accuracy"),
    ("multiclass", "test_balanced_accuracy", "Task 1b, test balanced accuracy"),
    ("multiclass", "bacterial_vs_viral_roc_auc", "Task 1b, bacterial vs viral test ROC AUC"),
    ("multiclass", "val_shift_roc_auc_mean", "Task 1b, validation macro ROC AUC, mean under shift"),
    ("multiclass", "val_shift_balanced_accuracy_worst", ROBUSTNESS_ROWS["multiclass"]),
)


def seed_table(binary: ReportEntry, multiclass: ReportEntry) -> pd.DataFrame | None:
    """Task 1's figures over its seed networks: the first seed's, mean, SD, range, and the
    seed ensemble's (the reported classifier).

    Returns
    -------
    pandas.DataFrame or None
        One row per figure of :data:`SEED_ROWS` whose task trained more than one seed
        (its ``seeds`` table, and the spread :func:`pneumo.classification.seed_spread` put in its
        metrics); None when neither did.
    """
    entries = {task: entry for task, entry in (("binary", binary), ("multiclass", multiclass))
               if entry.has_table("seeds")}
    first = {task: entry.table("seeds").iloc[0] for task, entry in entries.items()}  # the saved network
    rows = []
    for task, column, label in SEED_ROWS:
        if task not in entries:
            continue
        m = entries[task].metrics
        rows.append({"Figure": label, "First seed": first[task][column],
                     "Mean over seeds": m[f"seeds_{column}_mean"], "SD": m[f"seeds_{column}_sd"],
                     "Lowest": m[f"seeds_{column}_min"], "Highest": m[f"seeds_{column}_max"],
                     "Seed ensemble (reported)": m[f"ensemble_{column}"]})
    return pd.DataFrame(rows) if rows else None


def seed_paragraph(binary: ReportEntry, multiclass: ReportEntry, table: pd.DataFrame | None) -> str:
    """What the seeds say: how many, why their ensemble is the reported classifier, how far
    the single networks' figures spread."""
    counts = {task: int(entry.params.get("seeds", 1)) for task, entry in
              (("Task 1a", binary), ("Task 1b", multiclass))}
    if table is None:
        return ("Every network of this run was trained with one seed (`seeds` = 1, the budget of the "
                f"`{binary.params.get('profile', 'cpu')}` profile), so its figures carry the spread of one draw of "
                "initialisation and batch order, which the confidence intervals do not include; the `cpu` "
                "profile trains three seeds of Task 1a and the `gpu` profile three of each Task 1 network, "
                "report the ensemble of the three, and give their spread here.")
    rows = table.set_index("Figure")
    robustness = [(task, rows.loc[label]) for task, label in zip(("Task 1a", "Task 1b"), ROBUSTNESS_ROWS.values())
                  if label in rows.index]
    text = ("Task 1's chosen configurations were trained with several seeds (" +
            "; ".join(plural(n, "seed") + f" of {task}" for task, n in counts.items()) +
            "; the data split and every setting fixed). Where a task trained several, the classifier its "
            "section reports is their seed ensemble, which averages the networks' probabilities and chooses its "
            "own threshold by the same rule: ")
    text += "; ".join(f"on the worst of the shifted validation copies its balanced accuracy is "
                      f"{num(r['Seed ensemble (reported)'])} for {task}, where the single networks range from "
                      f"{num(r['Lowest'])} to {num(r['Highest'])}" for task, r in robustness)
    text += (". Averaging smooths each network's idiosyncratic reading of a film, which is what a shift "
             "exposes; validation as it is, saturated, cannot show it. Tasks 1b, 2 and 4 build on the "
             "first seed's network, the one shown in the architecture and learning-curve figures.")
    single = [task for task, n in counts.items() if n == 1]
    if single:
        text += (f" {' and '.join(single)} trained one seed within the "
                 f"`{binary.params.get('profile', 'cpu')}` profile's time budget; the `gpu` profile trains three.")
    figures = table[~table["Figure"].isin([THRESHOLD_ROW, *ROBUSTNESS_ROWS.values()])]  # figures of merit on test
    first, widest = figures.iloc[0], figures.loc[(figures["Highest"] - figures["Lowest"]).idxmax()]
    text += (f" Over the seeds, \"{first['Figure']}\" ranges from {num(first['Lowest'])} to "
             f"{num(first['Highest'])} (SD {num(first['SD'])}; the ensemble {num(first['Seed ensemble (reported)'])})")
    if widest["Figure"] != first["Figure"]:
        text += (f", and the widest range is that of \"{widest['Figure']}\", {num(widest['Lowest'])} to "
                 f"{num(widest['Highest'])}")
    return text + "; @tbl-seeds lists them all."


def seed_block(binary: ReportEntry, multiclass: ReportEntry, table: pd.DataFrame | None) -> str:
    """The seeds paragraph and, when there are seeds, their table (captioned, ``@tbl-seeds``),
    as Markdown: a table that only some runs have cannot be a fixed cell of the ``.qmd``."""
    text = "**Seeds.** " + seed_paragraph(binary, multiclass, table) + "\n"
    if table is None:
        return text
    return (text + "\n" + md_table(table, floatfmt=".3f", align={"Figure": "left"}).data +
            "\n\n: Task 1's figures over its seeds: the first seed's network (the one Tasks 1b, 2 and 4 build "
            "on), the mean, standard deviation and range over the seeds, and the seed ensemble that averages "
            "their probabilities, the classifier the task sections report. Each network and the ensemble "
            "choose their own threshold on validation by the same rule. {#tbl-seeds}\n")


def anchor_table(binary: ReportEntry, anomaly: ReportEntry) -> pd.DataFrame:
    """The published figures on the official test split next to this study's test figures."""
    ours = [("This study, Task 1a", "VGG-style network from scratch, normal vs pneumonia",
             binary.metrics["test_accuracy"], binary.metrics["test_roc_auc"]),
            ("This study, Task 3", "autoencoder trained on normal films only", None, anomaly.metrics["test_roc_auc"])]
    rows = [(name, *values) for name, values in ANCHORS.items()] + ours
    return pd.DataFrame({
        "Study": [r[0] for r in rows], "Model": [r[1] for r in rows],
        "Accuracy": ["—" if r[2] is None else num(r[2]) for r in rows],
        "ROC AUC": [num(r[3]) for r in rows],
    })


def provenance_paragraph(official: bool | None, reason: str) -> str:
    """Where the test folder comes from, and what that means for its figures and the anchors."""
    if official is None:
        return ("This run uses synthetic phantoms, whose test images come from the same generator as the "
                "training images: there is no outside split to compare with, and the published figures on the "
                "real collection do not apply.")
    if official:
        return (f"The test folder is the collection's official test split: {reason}. Its films were not drawn "
                "from the training pool, so its figures are this study's measure of how the models travel, and "
                "they can be set beside the published figures on the same split.")
    return (f"The test folder is not the collection's official test split: {reason}. It comes from the same pool "
            "as the training and validation films, so its figures, like validation's, say how well the models "
            "fit that pool. The mean and worst columns are this study's stand-in for films from elsewhere; the "
            "published figures on the official split do not compare with this test folder.")


def _threshold_text(binary: ReportEntry) -> str:
    rule = str(binary.metrics.get("threshold_rule", "youden"))
    return (f"Task 1a's decision threshold comes from the rule that held best on shifted films it had not "
            f"seen: {THRESHOLD_RULES_UNDER_SHIFT.get(rule, rule)} (cut {num(binary.metrics['threshold'])})")


def _detector_text(anomaly: Mapping) -> str:
    detector = f"Task 3's detector ({anomaly['chosen_variant']} with the {score_name(anomaly['chosen_score'])} score)"
    if anomaly.get("selection") == "normals":
        return (f"{detector} was chosen by its mean ROC AUC when only the normal films are shifted, as a new "
                f"machine's normal films would arrive among the pool's pneumonia: "
                f"{num(anomaly['val_shift_normals_roc_auc_mean'])}, where plain validation gives "
                f"{num(anomaly['val_roc_auc'])}")
    if anomaly.get("selection") == "shift":
        return (f"{detector} was chosen by its mean ROC AUC over the shifted films, "
                f"{num(anomaly['val_shift_roc_auc_mean'])}, where plain validation gives {num(anomaly['val_roc_auc'])}")
    return "Task 3's detector was chosen on validation as it is"


def generalisation_section(binary: ReportEntry | None = None, multiclass: ReportEntry | None = None,
                           embeddings: ReportEntry | None = None, anomaly: ReportEntry | None = None) -> Section:
    """Validation against test and under shift, for the headline figures of Tasks 1-3.

    Parameters
    ----------
    binary, multiclass, embeddings, anomaly
        The task entries; None reads ``task_entry(name)``.

    Returns
    -------
    Section
        ``figures_table`` and ``anchor_table`` for ``md_table``; ``provenance_text``, ``official`` (True, False or None),
        ``threshold_text``, ``detector_text``, ``n_shifts``, ``largest_drop`` (the figure
        that falls most from validation to its worst shift) and ``drop``; the seeds:
        ``seed_table`` (:func:`seed_table`, None with one seed) and ``seed_block`` (the seeds
        paragraph and table as Markdown, :func:`seed_block`).
    """
    binary = binary or task_entry("binary")
    multiclass = multiclass or task_entry("multiclass")
    embeddings = embeddings or task_entry("embeddings")
    anomaly = anomaly or task_entry("anomaly")
    provenance = entry_provenance(binary)
    table = figures_table(binary, multiclass, embeddings, anomaly)
    drops = table["Validation"] - table["Worst shift"]
    worst = table.loc[drops.idxmax()]
    seeds = seed_table(binary, multiclass)
    log.debug("generalisation section: test folder official=%s", provenance.official)
    return Section(
        figures_table=table, anchor_table=anchor_table(binary, anomaly),
        official=provenance.official, provenance_text=provenance_paragraph(provenance.official, provenance.reason),
        threshold_text=_threshold_text(binary), detector_text=_detector_text(anomaly.metrics),
        n_shifts=int(binary.table("val_shifts")["shift"].nunique() - 1),
        largest_drop=str(worst["Figure"]), drop=float(drops.max()), drop_shift=str(worst["Worst of the shifts"]),
        border_mask=pct(float(binary.params.get("border_mask", 0.0)), 0),
        seed_table=seeds, seed_block=seed_block(binary, multiclass, seeds),
    )
