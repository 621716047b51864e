"""The report's logic: what every section of ``report/*.qmd`` shows, computed from the cache.

One function per section takes the cache entries of its tasks and returns a
:class:`Section`: the numbers, display tables and sentences that section shows. A ``.qmd``
keeps the prose, inline values (`` `{python} b.threshold` ``) and one call per figure or
table; nothing else is computed at render time.

Modules
-------
text
    Numbers and words for inline values (``num``, ``pct``, ``fmt_ci``, ...).
tables
    Markdown pipe tables (:func:`md_table`) and the display frames they show.
entries
    The cache entries (:func:`task_entry`) and the images they were computed on.
intro, classification, embeddings, anomaly, explain, generalisation
    One section function each (``intro_section``, ``binary_section``, ...).
    ``classification`` (Tasks 1a and 1b) and ``explain`` are packages: ``builder`` holds
    their section functions, and one module each part of the section (the grid, the test
    figures, the sanity checks, ...).
build
    ``python -m pneumo.report``: compute every task, then ``quarto render``.

Sentences that carry a cross-reference or a citation are returned as Markdown
(:func:`markdown`), which Quarto resolves; a plain string would show ``@fig-x`` as text.
"""

from __future__ import annotations

import importlib
from typing import Any

from pneumo.report.entries import (
    ReportEntry,
    ReportInputError,
    curves_from_arrays,
    final_variant,
    images_for,
    load_images,
    misclassified,
    platform_text,
    sample_images,
    task_dataset,
    task_entry,
    where,
)
from pneumo.report.section import Section
from pneumo.report.tables import (
    COUNT_METRICS,
    architecture_summary,
    data_counts,
    grid_table,
    markdown,
    md_table,
    metric_label,
    metric_value,
    metrics_with_ci,
)
from pneumo.report.text import capitalise, count, duration, fmt_ci, join_words, missing, num, pct, plural, signed

#: Section functions, imported when first used (each pulls in its task's modules).
_SECTIONS = {
    "intro_section": "pneumo.report.intro",
    "binary_section": "pneumo.report.classification.builder",
    "multiclass_section": "pneumo.report.classification.builder",
    "embeddings_section": "pneumo.report.embeddings",
    "anomaly_section": "pneumo.report.anomaly",
    "generalisation_section": "pneumo.report.generalisation",
    "explain_section": "pneumo.report.explain.builder",
}

__all__ = [
    *_SECTIONS,
    "Section", "ReportEntry", "ReportInputError", "task_entry", "where", "final_variant", "task_dataset",
    "images_for", "load_images", "sample_images", "misclassified", "curves_from_arrays", "platform_text",
    "COUNT_METRICS", "markdown", "md_table", "metric_label", "metric_value", "metrics_with_ci", "grid_table",
    "architecture_summary", "data_counts",
    "missing", "num", "pct", "count", "signed", "plural", "join_words", "duration", "fmt_ci", "capitalise",
]


def __getattr__(name: str) -> Any:
    if name in _SECTIONS:
        return getattr(importlib.import_module(_SECTIONS[name]), name)
    raise AttributeError(f"module 'pneumo.report' has no attribute {name!r}")
