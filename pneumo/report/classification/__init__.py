"""Task 1 of the report: 1a (normal or pneumonia) and 1b (normal, bacterial or viral).

:func:`binary_section` and :func:`multiclass_section` read the Task 1 cache entries and
return what ``report/_binary.qmd`` and ``report/_multiclass.qmd`` show. Both sections tell
the same story (a grid chosen on validation, a final model, its test figures); the parts
they share are built once, by the same functions.

Modules
-------
builder
    The two section functions, which put the parts below together.
common
    Reading a Task 1 entry, and the settings, timing and provenance both sections state.
grid
    The grid: the winner and why, each variant's effect, the noise yardstick, the retraining.
design
    The chosen model's design and training in words (loss, augmentation, grey levels, start).
evaluation
    The test figures: metric tables, the threshold on validation and test, curves, errors.
comparison
    The discussion's comparisons: published figures, 1b against 1a, bacterial against viral.
"""

from __future__ import annotations

from pneumo.report.classification.builder import binary_section, multiclass_section
from pneumo.report.classification.comparison import (
    accuracy_sentence,
    error_sentence,
    imbalance_sentence,
    induced_sentence,
)
from pneumo.report.classification.design import BALANCE_TEXT, curve_sentence, intensity_sentence, start_sentence
from pneumo.report.classification.evaluation import gap_sentence, roc_sentence, shift_sentence
from pneumo.report.classification.grid import grid_story, init_sentence, retrain_sentence

__all__ = ["binary_section", "multiclass_section", "grid_story", "BALANCE_TEXT", "retrain_sentence",
           "curve_sentence", "gap_sentence", "shift_sentence", "accuracy_sentence", "intensity_sentence",
           "start_sentence", "init_sentence", "induced_sentence", "imbalance_sentence", "error_sentence",
           "roc_sentence"]
