"""Tests of the generalisation section (``pneumo.report.generalisation``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pneumo.report.generalisation import (ANCHORS, SEED_ROWS, generalisation_section, provenance_paragraph,
                                           seed_block, seed_table)

QMD = Path(__file__).resolve().parents[1] / "report" / "_generalisation.qmd"


def test_provenance_paragraph_says_what_the_test_folder_can_tell():
    official = provenance_paragraph(True, "it holds 624 images")
    assert official.startswith("The test folder is the collection's official test split: it holds 624 images.")
    assert "can be set beside the published figures" in official
    carved = provenance_paragraph(False, "it holds 600 images")
    assert "is not the collection's official test split: it holds 600 images." in carved
    assert "do not compare with this test folder" in carved
    synthetic = provenance_paragraph(None, "the images are synthetic phantoms")
    assert "synthetic phantoms" in synthetic and "@" not in synthetic


def test_anchors_are_the_published_figures():
    assert [values[1:] for values in ANCHORS.values()] == [(0.928, 0.968), (0.884, 0.962), (None, 0.876)]
    assert all(re.search(r"@\w+", name) for name in ANCHORS)  # each cites its source


@pytest.mark.slow
def test_generalisation_section_reads_every_shift_benchmark(smoke_entries):
    g = generalisation_section(smoke_entries["binary"], smoke_entries["multiclass"], smoke_entries["embeddings"],
                               smoke_entries["anomaly"])
    for name in set(re.findall(r"\bg\.(\w+)", QMD.read_text())):
        value = getattr(g, name)
        assert not isinstance(value, str) or "@" not in value, name  # Quarto would not resolve it inline
    table = g.figures_table
    assert len(table) == 6 and table["Figure"].iloc[0] == "Task 1a, ROC AUC"
    assert (table["Worst shift"] <= table["Mean under shift"] + 1e-12).all()
    binary = smoke_entries["binary"]
    assert table["Test"].iloc[0] == pytest.approx(binary.metrics["test_roc_auc"])
    clean = binary.table("val_shifts").set_index("shift").loc["none", "roc_auc"]
    assert table["Validation"].iloc[0] == pytest.approx(clean)
    assert g.official is None and "synthetic phantoms" in g.provenance_text
    assert g.n_shifts == 12 and g.drop == pytest.approx((table["Validation"] - table["Worst shift"]).max())
    assert len(g.anchor_table) == len(ANCHORS) + 2


class _SeedEntry:
    """The parts of a ReportEntry the seed table reads."""

    def __init__(self, seeds=None, count=1):
        from pneumo.classification import seed_spread

        self._seeds, self.params = seeds, {"seeds": count, "profile": "cpu"}
        self.metrics = {} if seeds is None else seed_spread(seeds)

    def has_table(self, name):
        return name == "seeds" and self._seeds is not None

    def table(self, name):
        return self._seeds


def test_seed_table_spreads_each_figure_and_the_paragraph_cites_it():
    import numpy as np
    import pandas as pd

    binary = pd.DataFrame({
        "member": ["seed 0", "seed 1", "seed 2", "ensemble of 3 (reported)"], "seed": [0, 1, 2, np.nan],
        "test_roc_auc": [0.97, 0.99, 0.98, 0.985], "test_accuracy": [0.90, 0.94, 0.92, 0.93],
        "test_sensitivity": [0.99, 0.98, 0.97, 0.98], "test_specificity": [0.80, 0.88, 0.84, 0.86],
        "threshold": [0.2, 0.9, 0.5, 0.6], "val_shift_roc_auc_mean": [0.95, 0.96, 0.97, 0.97],
        "val_shift_balanced_accuracy_worst": [0.91, 0.95, 0.93, 0.97]})
    table = seed_table(_SeedEntry(binary, 3), _SeedEntry())
    assert list(table["Figure"]) == [label for task, _, label in SEED_ROWS if task == "binary"]
    auc = table.iloc[0]
    assert (auc["First seed"], auc["Lowest"], auc["Highest"], auc["Seed ensemble (reported)"]) == (0.97, 0.97, 0.99, 0.985)
    assert auc["Mean over seeds"] == pytest.approx(0.98) and auc["SD"] == pytest.approx(0.01)
    block = seed_block(_SeedEntry(binary, 3), _SeedEntry(), table)
    # Why the ensemble is reported: its worst shifted balanced accuracy against the networks' range.
    assert "balanced accuracy is 0.970 for Task 1a, where the single networks range from 0.910 to 0.950" in block
    # The threshold moves most, but a cut is no figure of merit: the widest range is specificity's.
    assert "Task 1b trained one seed within the `cpu` profile's time budget; the `gpu` profile trains three." in block
    assert "(3 seeds of Task 1a; 1 seed of Task 1b;" in block and '"Task 1a, test specificity at its threshold", 0.800 to 0.880' in block
    assert block.rstrip().endswith("{#tbl-seeds}") and "@tbl-seeds" in block
    one = seed_block(_SeedEntry(), _SeedEntry(), None)
    assert one.startswith("**Seeds.** Every network of this run was trained with one seed") and "|" not in one
