"""Tests of the generalisation section (``pneumo.report.generalisation``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pneumo.report.generalisation import ANCHORS, generalisation_section, provenance_paragraph

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
