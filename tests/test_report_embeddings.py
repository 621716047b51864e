"""Tests of the Task 2 report section (``pneumo.report.embeddings``) on tiny tables and smoke entries."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pneumo.embeddings import KNN_PAIRS, REPRESENTATIONS
from pneumo.report import embeddings as rep
from pneumo.report.section import Section

QMD = Path(__file__).resolve().parents[1] / "report" / "_embeddings.qmd"


def ci(value, low, high):
    return pd.Series({"value": value, "ci_low": low, "ci_high": high})


def metrics_rows(representation, question, metrics, value=0.8):
    return [{"representation": representation, "question": question, "metric": m,
             "value": value, "ci_low": value - 0.05, "ci_high": value + 0.05} for m in metrics]


# -- titles and names ------------------------------------------------------------------------------
def test_titles_follow_the_task_module():
    titles = rep._pair_titles()
    assert list(titles) == list(KNN_PAIRS)
    assert titles[("net_1a", "binary")] == "1a embedding: normal / pneumonia"
    names = rep._representation_titles(16)
    assert list(names) == list(REPRESENTATIONS)
    assert names["pixels"] == "raw pixels (16×16)"
    assert names["net_1b"] == REPRESENTATIONS["net_1b"]


def test_network_of_each_question():
    assert rep._network("binary") == "net_1a"
    assert rep._network("multiclass") == "net_1b"
    with pytest.raises(ValueError, match="expected one network"):
        rep._network("anomaly")


# -- tables ----------------------------------------------------------------------------------------
def _shift_rows(values: dict[str, float], **columns) -> pd.DataFrame:
    """A shift-benchmark table: one row per shift with its balanced accuracy."""
    return pd.DataFrame([{**columns, "shift": name, "balanced_accuracy": v} for name, v in values.items()])


def test_shift_table_and_sentence_put_heads_and_knns_side_by_side():
    steady = {"none": 0.9, "darker": 0.88, "border": 0.86}
    fragile = {"none": 0.92, "darker": 0.7, "border": 0.5}
    knn = pd.concat([_shift_rows(steady if r != "pixels" else fragile, representation=r, question=q)
                     for r, q in KNN_PAIRS], ignore_index=True)
    heads = {"binary": _shift_rows(fragile), "multiclass": _shift_rows(steady)}
    table = rep._shift_table(knn, heads)
    assert list(table.columns) == ["Question", "Classifier", "Validation", "Mean under shift", "Worst shift",
                                   "Worst of the shifts"]
    assert list(table["Classifier"][:3]) == ["CNN head (Task 1a)", "k-NN, network embedding", "k-NN, raw pixels"]
    first = table.iloc[0]
    assert (first["Validation"], first["Mean under shift"], first["Worst shift"]) == pytest.approx((0.92, 0.6, 0.5))
    assert first["Worst of the shifts"] == "border"
    text = rep._shift_text(table)
    assert text.startswith("On the shifted validation films, on normal / pneumonia the k-NN on the embedding keeps "
                           "a mean balanced accuracy of 0.870 under shift and 0.860 on its worst shift (border), so "
                           "it holds up better than the head (0.600 and 0.500)")
    assert text.endswith("on three classes the k-NN on the embedding keeps a mean balanced accuracy of 0.870 under "
                         "shift and 0.860 on its worst shift (border), so it holds up as well as the head (0.870 "
                         "and 0.860).")


def test_choice_table_takes_the_first_grid_row_of_each_pair():
    grid = pd.DataFrame([
        {"representation": r, "question": q, "k": k, "distance": d, "scaling": s,
         "val_balanced_accuracy": ba, "val_roc_auc": 0.9}
        for r, q in KNN_PAIRS
        for k, d, s, ba in ((5, "cosine", "standard", 0.8), (3, "euclidean", "none", 0.7))
    ])
    table = rep._choice_table(grid, {"net_1a": 8, "net_1b": 8, "pixels": 256}, rep._pair_titles())
    assert len(table) == len(KNN_PAIRS)
    first = table.iloc[0]
    chosen = (first["k"], first["Distance"], first["Scaling"], first["Settings tried"])
    assert chosen == (5, "cosine", "standardised", 2)
    assert table["Dimensions"].tolist() == [8, 256, 8, 256]


def test_choice_table_names_a_missing_pair():
    grid = pd.DataFrame({"representation": ["net_1a"], "question": ["binary"], "k": [1], "distance": ["cosine"],
                         "scaling": ["none"], "val_balanced_accuracy": [0.5], "val_roc_auc": [0.5]})
    with pytest.raises(KeyError, match="pixels"):
        rep._choice_table(grid, {"net_1a": 8, "pixels": 4}, rep._pair_titles())


def test_side_by_side_shows_head_network_and_pixels():
    metrics = rep._QUESTIONS["binary"][1]
    knn = pd.DataFrame(metrics_rows("net_1a", "binary", metrics, 0.9) + metrics_rows("pixels", "binary", metrics, 0.6))
    head = pd.DataFrame(metrics_rows("head_1a", "binary", metrics, 0.8))
    table = rep._side_by_side(knn, head, "binary")
    assert list(table.columns) == ["Metric", "CNN head (Task 1a)", "k-NN, network embedding", "k-NN, raw pixels"]
    assert table["Metric"].iloc[0] == "ROC AUC"
    assert table.iloc[0, 1:].tolist() == ["0.800 [0.750, 0.850]", "0.900 [0.850, 0.950]", "0.600 [0.550, 0.650]"]


def test_quality_table_uses_titles():
    quality = pd.DataFrame({"agreement_embedding": [0.9, 0.4], "agreement_map": [0.88, 0.41],
                            "silhouette_embedding": [0.5, 0.0], "silhouette_map": [0.4, 0.0]},
                           index=pd.Index(["net_1b", "pixels"], name="representation"))
    table = rep._quality_table(quality, {"net_1b": "Task 1b network", "pixels": "raw pixels (8×8)"})
    assert table["Representation"].tolist() == ["Task 1b network", "raw pixels (8×8)"]
    assert table["Agreement, map"].tolist() == [0.88, 0.41]


# -- sentences -------------------------------------------------------------------------------------
def test_versus_overlap_higher_and_lower():
    within = rep._versus(ci(0.8, 0.7, 0.9), ci(0.75, 0.65, 0.85), "A", "B")
    assert within == "A and B are within each other's confidence intervals (0.800 against 0.750)"
    higher = rep._versus(ci(0.9, 0.85, 0.95), ci(0.5, 0.4, 0.6), "A", "B")
    assert higher.startswith("A scores higher than B (0.900 against 0.500")
    assert "do not overlap" in higher
    lower = rep._versus(ci(0.5, 0.4, 0.6), ci(0.9, 0.85, 0.95), "A", "B")
    assert lower.startswith("A scores lower than B")


def quality(embedding, mapped):
    index = pd.Index(["net_1a", "net_1b", "pixels"], name="representation")
    return pd.DataFrame({"agreement_embedding": embedding, "agreement_map": mapped}, index=index)


def test_map_text_keeps_or_changes_neighbourhoods():
    titles = {"net_1a": "A", "net_1b": "B", "pixels": "P"}
    kept = rep._map_text(quality([0.6, 0.8, 0.4], [0.62, 0.76, 0.39]), titles)
    assert kept.startswith("For every representation the map keeps")
    assert "within five points" in kept
    changed = rep._map_text(quality([0.6, 0.8, 0.4], [0.62, 0.6, 0.39]), titles)
    assert changed.startswith("The map changes the neighbourhoods noticeably")
    assert "+0.200, B)" in changed
    worse = rep._map_text(quality([0.6, 0.5, 0.4], [0.62, 0.6, 0.39]), titles)
    assert "\u22120.100, B)" in worse


def test_points_in_words():
    assert rep._points(0.05) == "five"
    assert rep._points(0.12) == "12"


def test_pixel_text_follows_the_auc():
    well = rep._pixel_text(ci(0.95, 0.93, 0.97))
    assert well.startswith("Raw pixels alone already separate normal from pneumonia well "
                           "(k-NN ROC AUC 0.950 [0.930, 0.970])")
    moderate = rep._pixel_text(ci(0.7, 0.6, 0.8))
    assert moderate.startswith("Raw pixels separate normal from pneumonia only moderately (k-NN ROC AUC 0.700")
    assert rep._pixel_text(ci(rep.PIXELS_SEPARATE_WELL, 0.8, 0.95)).startswith("Raw pixels alone")


def test_less():
    assert rep._less(0.3, 0.8) == "less"
    assert rep._less(0.8, 0.8) == "no less"


# -- maps and gallery ------------------------------------------------------------------------------
IMAGES = pd.DataFrame({"relpath": ["a", "b", "c", "d"], "split": ["train", "test", "test", "val"]})


def test_correctness_marks_test_images():
    predictions = pd.DataFrame({"split": ["test", "test", "val"], "relpath": ["b", "c", "d"],
                                "target": [1, 0, 1], "predicted": [1, 1, 0]})
    out = rep._correctness(predictions, IMAGES)
    assert out.tolist() == ["train", "correct", "misclassified", "train"]
    # k-NN predictions have no split column: they are all test rows.
    out = rep._correctness(predictions.drop(columns="split").iloc[:2], IMAGES)
    assert out.tolist() == ["train", "correct", "misclassified", "train"]


def test_correctness_refuses_a_test_image_without_prediction():
    predictions = pd.DataFrame({"split": ["test"], "relpath": ["b"], "target": [1], "predicted": [1]})
    with pytest.raises(KeyError, match="1 test images have no prediction"):
        rep._correctness(predictions, IMAGES)


def test_gallery_share_counts_neighbours_with_the_query_label():
    gallery = pd.DataFrame({
        "query": ["n-1", "n-1", "n-1", "v-1", "v-1", "v-1"],
        "rank": [0, 1, 2, 0, 1, 2],
        "label": ["normal", "normal", "viral", "viral", "viral", "viral"],
    })
    assert rep._gallery_share(gallery) == pytest.approx(3 / 4)


# -- the section on smoke entries ------------------------------------------------------------------
def qmd_attributes() -> set[str]:
    """Every ``e.<name>`` the section file reads."""
    return set(re.findall(r"\be\.(\w+)", QMD.read_text()))


def test_qmd_reads_only_its_own_section():
    text = QMD.read_text()
    assert "e = embeddings_section()" in text
    for other in ("binary", "multiclass", "data", "emb", "run_task", "PROFILE"):
        assert not re.search(rf"(?<![\w.\"'-]){other}\.\w|(?<![\w.]){other}\(", text), other


def test_section_on_smoke_entries(smoke_entries):
    e = rep.embeddings_section(smoke_entries["embeddings"], smoke_entries["binary"], smoke_entries["multiclass"])
    assert isinstance(e, Section)
    missing = [name for name in qmd_attributes() if name not in vars(e)]
    assert not missing, missing
    for name in ("embedding_dim", "pixel_dim", "pixel_size", "max_k", "tsne_iterations", "seed", "agreement_k",
                 "n_settings"):
        assert isinstance(getattr(e, name), int), name
    for name in ("bin_vs_head", "net_vs_head", "net_vs_pixels", "map_text", "pixel_text", "pixel_map_less",
                 "platform", "where", "best_map_title", "binary_entry", "multiclass_entry"):
        value = getattr(e, name)
        assert isinstance(value, str) and value and "nan" not in value and "@" not in value, name
    assert e.pixel_dim == e.pixel_size ** 2
    assert len(e.choice) == len(KNN_PAIRS) and e.choice["Settings tried"].sum() == e.n_settings
    assert len(e.binary_table) == len(rep._QUESTIONS["binary"][1])
    assert len(e.multi_table) == len(rep._QUESTIONS["multiclass"][1])
    assert len(e.quality_table) == len(REPRESENTATIONS)
    assert 0 <= e.chance_agreement <= 1 and 0 <= e.gallery_share <= 1
    assert e.best_map_agreement == pytest.approx(e.quality_table["Agreement, map"].max())
    n = len(e.split)
    for name in REPRESENTATIONS:
        assert e.maps[name].shape == (n, 2)
        assert set(e.correct[name][e.split == "test"]) <= {"correct", "misclassified"}
        assert (e.correct[name][e.split != "test"] == "train").all()
    assert len(e.gallery_images) == len(e.gallery)
    assert all(isinstance(image, np.ndarray) and image.ndim == 2 for image in e.gallery_images)
    assert set(e.correct_colours) == set(e.correct_categories)
