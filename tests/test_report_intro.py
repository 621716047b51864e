"""The introduction's section function and the test-split provenance check."""

from __future__ import annotations

import pandas as pd
import pytest

from pneumo.report.intro import (
    balance_adjective,
    dropped_sentence,
    duplicates_sentence,
    intro_section,
    mix_sentence,
    provenance_sentence,
    size_sentence,
)
from pneumo.report.provenance import OFFICIAL_TEST_COUNTS, OFFICIAL_TEST_FILES, split_provenance
from pneumo.report.tables import markdown

# -- provenance ------------------------------------------------------------------------------------
OFFICIAL_NAMES = [f"test/{name}" for name in OFFICIAL_TEST_FILES]
CARVED_NAMES = ["test/NORMAL/IM-0117-0001.jpeg", "test/PNEUMONIA/person1012_bacteria_2943.jpeg"]


def test_the_official_split_is_recognised_by_composition_and_names():
    result = split_provenance(OFFICIAL_TEST_COUNTS, OFFICIAL_NAMES + CARVED_NAMES)
    assert result.official is True
    assert "234 normal, 242 bacterial, 148 viral" in result.reason


def test_a_carve_out_with_the_official_counts_is_not_the_official_split():
    """The shared development copy: 234 / 242 / 148 images carved from the training split."""
    result = split_provenance(dict(OFFICIAL_TEST_COUNTS), CARVED_NAMES)
    assert result.official is False
    assert "none of the official split's known files" in result.reason


def test_other_counts_are_not_the_official_split_whatever_the_names():
    counts = {"normal": 100, "bacterial": 242, "viral": 148}
    result = split_provenance(counts, OFFICIAL_NAMES)
    assert result.official is False and "100 normal" in result.reason and "234 normal" in result.reason


def test_synthetic_data_have_no_provenance_sentence():
    result = split_provenance({}, [], synthetic=True)
    assert result.official is None and provenance_sentence(result.official, result.reason) == ""


def test_provenance_sentence_cites_the_split_and_follows_the_check():
    yes = provenance_sentence(True, "it holds ...")
    no = provenance_sentence(False, "it holds ...")
    assert "matches the official test split of @kermany2018" in yes and "can be set beside" in yes
    assert "is not the official test split of @kermany2018" in no and "cannot be compared" in no


# -- sentences -------------------------------------------------------------------------------------
def test_sentences_follow_the_numbers():
    assert balance_adjective(3.0) == "far from balanced" and balance_adjective(1 / 3) == "far from balanced"
    assert balance_adjective(1.5) == "unbalanced" and balance_adjective(1.1) == "roughly balanced"
    assert "differs from training" in mix_sentence(0.4, 0.25) and "is close to" in mix_sentence(0.26, 0.25)
    assert dropped_sentence({"patient_in_test": 0, "duplicate_of_test": 0}).startswith("No image")
    assert dropped_sentence({"patient_in_test": 5, "duplicate_of_test": 2}).startswith("7 images")
    assert duplicates_sentence({"groups": 0, "pairs": 0}) == "We found no byte-identical files"
    assert "3 sets" in duplicates_sentence({"groups": 3, "pairs": 4})
    one = {"min": 224, "max": 224, "median": 224}
    assert size_sentence({"width": one, "height": one}) == "All stored images are 224×224 pixels"
    varied = {"min": 384, "max": 2916, "median": 1281}
    assert "range from 384 to 2,916" in size_sentence({"width": varied, "height": varied})


# -- the section on real (smoke) entries -----------------------------------------------------------
@pytest.mark.slow
def test_intro_section_reads_the_entry(smoke_entries):
    i = intro_section(smoke_entries["binary"])
    assert i.synthetic is True and i.provenance.official is None and i.provenance_text == ""
    assert i.profile == "smoke" and i.n_images == int(i.counts["total"].sum())
    assert list(i.counts_table.columns) == ["normal", "bacterial", "viral", "images", "patients"]
    assert set(i.samples) == {"normal", "bacterial", "viral"} and all(len(v) == 6 for v in i.samples.values())
    assert 0 < i.train_pneumonia < 1 and i.kaggle_total["test"] == int(i.counts.loc["test", "total"])


def test_a_missing_table_is_one_line_naming_the_entry_and_the_fix(tmp_path):
    from pneumo.report import ReportEntry, ReportInputError
    from pneumo.results import ResultCache

    cache = ResultCache(tmp_path)
    with cache.write("binary", "k1") as out:
        out.json("params", {"profile": "smoke"})
        out.json("metrics", {"data_synthetic": True})
    entry = ReportEntry(cache.entry("binary", "k1"), "binary")
    assert entry.metrics == {"data_synthetic": True}
    with pytest.raises(ReportInputError) as error:
        entry.table("grid")
    message = str(error.value)
    assert "\n" not in message and "binary entry" in message and "k1" in message
    assert "recompute it with: python tasks/binary.py --profile smoke --force true" in message
    assert error.value._render_traceback_() == [f"error: {message}"]  # what the notebook shows
