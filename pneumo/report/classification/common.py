"""What a Task 1 entry holds, read once, and the facts both Task 1 sections state alike.

:func:`_read` loads the tables and settings of a Task 1a or 1b entry; the ``_shared_*``
helpers turn them into the settings, timing and provenance that ``report/_binary.qmd`` and
``report/_multiclass.qmd`` show the same way, and :func:`_error_gallery` the inputs of the
misclassified-images figure.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from pneumo.report.entries import ReportEntry, final_variant, images_for, platform_text, task_dataset, where
from pneumo.report.provenance import entry_provenance
from pneumo.report.tables import architecture_summary, data_counts
from pneumo.report.text import duration

__all__: list[str] = []

#: Misclassified test images shown per task.
_ERRORS_SHOWN = 10


def _proba_column(name: str) -> str:
    """The ``predictions`` column holding a class's probability (as :mod:`pneumo.classification` writes it)."""
    return f"p_{name}"


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
        "classifier_text": classifier_text(metrics),
    }


def classifier_text(metrics: Mapping[str, Any]) -> str:
    """Which classifier the test figures describe: the final network, or the seed ensemble."""
    members = int(metrics.get("ensemble_members", 1))
    if members == 1:
        return "The classifier scored here is the final network above."
    return (f"The classifier scored here is the seed ensemble: the mean of the probabilities of {members} networks "
            "of the chosen design, each trained with its own seed "
            f"({duration(float(metrics['train_seconds_all_seeds']))} of training together), because it held up "
            "best on the shifted validation films (@sec-generalisation). The architecture and learning curves "
            "above are those of its first network, which the later tasks study.")


def _error_gallery(entry: ReportEntry, errors: pd.DataFrame, probability_label: str) -> dict[str, Any]:
    """Arguments of :func:`pneumo.plots.misclassified_gallery` for a task's test errors."""
    images = images_for(task_dataset(entry), errors["relpath"]) if len(errors) else []
    return {"images": images, "true": list(errors["true"]), "predicted": list(errors["pred"]),
            "probability": [float(p) for p in errors["shown"]], "probability_label": probability_label}
