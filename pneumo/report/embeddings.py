"""Task 2 of the report: k-NN on the networks' embeddings and on raw pixels, t-SNE maps, retrieval.

:func:`embeddings_section` reads the Task 2 entry (and the Task 1 entries for the heads'
predictions and the decoded images) and returns what ``report/_embeddings.qmd`` shows.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pandas as pd

from pneumo.data import CLASSES
from pneumo.embeddings import KNN_PAIRS, REPRESENTATIONS
from pneumo.report.entries import ReportEntry, images_for, platform_text, task_dataset, task_entry, where
from pneumo.report.section import Section
from pneumo.report.tables import metric_label
from pneumo.report.text import fmt_ci, num, signed
from pneumo.shift import robustness_summary

__all__ = ["embeddings_section"]

log = logging.getLogger(__name__)

#: Short names of the representations and questions, for the k-NN panel and table titles.
_PAIR_SHORT = {"net_1a": "1a embedding", "net_1b": "1b embedding", "pixels": "pixels"}
_QUESTION_SHORT = {"binary": "normal / pneumonia", "multiclass": "three classes"}

#: Per question: the task whose head answers it and the test metrics compared (head against k-NN).
_QUESTIONS = {
    "binary": ("Task 1a", ("roc_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")),
    "multiclass": ("Task 1b", ("roc_auc", "accuracy", "balanced_accuracy", "f1_macro")),
}

#: The pixel baseline's representation name.
_PIXELS = "pixels"


def _network(question: str) -> str:
    """The network representation the task's k-NN pairs with ``question`` (``"net_1a"`` for binary)."""
    found = [rep for rep, q in KNN_PAIRS if q == question and rep != _PIXELS]
    if len(found) != 1:
        raise ValueError(f"expected one network for question {question!r} in KNN_PAIRS, found {found}")
    return found[0]

#: A map "keeps" its embedding's neighbourhoods when the class agreement changes by at most this.
MAP_TOLERANCE = 0.05

#: Pixel k-NN ROC AUC (normal against pneumonia) from which raw pixels "already separate well".
PIXELS_SEPARATE_WELL = 0.9

#: Colours of the correct / misclassified map (names of :data:`pneumo.plots.OKABE_ITO`).
_CORRECT_COLOURS = {"correct": "grey", "misclassified": "vermillion"}


# -- titles ----------------------------------------------------------------------------------------
def _representation_titles(pixel_size: int) -> dict[str, str]:
    """Map panel titles: the task module's names, the pixel baseline with its resolution."""
    return {**REPRESENTATIONS, _PIXELS: f"{REPRESENTATIONS[_PIXELS]} ({pixel_size}×{pixel_size})"}


def _pair_titles() -> dict[tuple[str, str], str]:
    """``{(representation, question): "1a embedding: normal / pneumonia"}`` in the task's order."""
    return {(rep, q): f"{_PAIR_SHORT[rep]}: {_QUESTION_SHORT[q]}" for rep, q in KNN_PAIRS}


# -- tables ----------------------------------------------------------------------------------------
def _pair_rows(table: pd.DataFrame, representation: str, question: str) -> pd.DataFrame:
    rows = table[(table["representation"] == representation) & (table["question"] == question)]
    if rows.empty:
        raise KeyError(f"no rows for representation {representation!r} and question {question!r}")
    return rows


def _ci_row(table: pd.DataFrame, question: str, metric: str, representation: str | None = None) -> pd.Series:
    """One ``value, ci_low, ci_high`` row of a test-metrics table (k-NN, or head when no representation)."""
    rows = table[table["question"] == question] if representation is None \
        else _pair_rows(table, representation, question)
    return rows.set_index("metric").loc[metric]


def _choice_table(grid: pd.DataFrame, dims: Mapping[str, int], titles: Mapping[tuple[str, str], str]) -> pd.DataFrame:
    """The chosen k-NN setting of every pair (the grid's first row of that pair is the chosen one)."""
    rows = []
    for (rep, question), title in titles.items():
        pair = _pair_rows(grid, rep, question)
        best = pair.iloc[0]
        rows.append({
            "Representation, question": title,
            "Dimensions": int(dims[rep]),
            "k": int(best["k"]),
            "Distance": best["distance"],
            "Scaling": "standardised" if best["scaling"] == "standard" else "none",
            "Val balanced accuracy": float(best["val_balanced_accuracy"]),
            "Val ROC AUC": float(best["val_roc_auc"]),
            "Settings tried": len(pair),
        })
    return pd.DataFrame(rows)


def _side_by_side(knn: pd.DataFrame, head: pd.DataFrame, question: str) -> pd.DataFrame:
    """Head, k-NN on the network's embedding and k-NN on pixels: one row per metric, with CIs."""
    network, (task, metrics) = _network(question), _QUESTIONS[question]
    return pd.DataFrame([{
        "Metric": metric_label(metric),
        f"CNN head ({task})": fmt_ci(_ci_row(head, question, metric)),
        "k-NN, network embedding": fmt_ci(_ci_row(knn, question, metric, network)),
        "k-NN, raw pixels": fmt_ci(_ci_row(knn, question, metric, _PIXELS)),
    } for metric in metrics])


def _quality_table(quality: pd.DataFrame, titles: Mapping[str, str]) -> pd.DataFrame:
    """``space_quality`` (indexed by representation) as the display table."""
    return pd.DataFrame({
        "Representation": [titles[r] for r in quality.index],
        "Agreement, embedding": quality["agreement_embedding"].to_numpy(),
        "Agreement, map": quality["agreement_map"].to_numpy(),
        "Silhouette, embedding": quality["silhouette_embedding"].to_numpy(),
        "Silhouette, map": quality["silhouette_map"].to_numpy(),
    })


def _under_shift(rows: pd.DataFrame) -> dict[str, object]:
    """Validation balanced accuracy of one classifier: as it is, its mean and worst over the shifts."""
    summary = robustness_summary(rows, "balanced_accuracy")
    return {"Validation": summary["clean"], "Mean under shift": summary["mean"], "Worst shift": summary["worst"],
            "Worst of the shifts": summary["worst_shift"]}


def _shift_table(knn_shifts: pd.DataFrame, head_shifts: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Balanced accuracy on validation and under the shift benchmark, per question: the CNN head
    (Task 1's own ``val_shifts``), the k-NN on the network's embedding and on raw pixels."""
    rows = []
    for question, (task, _) in _QUESTIONS.items():
        classifiers = {f"CNN head ({task})": head_shifts[question],
                       "k-NN, network embedding": _pair_rows(knn_shifts, _network(question), question),
                       "k-NN, raw pixels": _pair_rows(knn_shifts, _PIXELS, question)}
        rows += [{"Question": _QUESTION_SHORT[question], "Classifier": name, **_under_shift(table)}
                 for name, table in classifiers.items()]
    return pd.DataFrame(rows)


def _shift_text(table: pd.DataFrame) -> str:
    """Whether the k-NN on each network's embedding holds up under shift as well as its head."""
    parts = []
    for question in _QUESTIONS:
        rows = table[table["Question"] == _QUESTION_SHORT[question]].set_index("Classifier")
        head, knn = rows.iloc[0], rows.loc["k-NN, network embedding"]
        gap = float(knn["Mean under shift"] - head["Mean under shift"])
        verb = "better than" if gap > 0.01 else "as well as" if gap >= -0.01 else "worse than"
        parts.append(f"on {_QUESTION_SHORT[question]} the k-NN on the embedding keeps a mean balanced accuracy of "
                     f"{num(knn['Mean under shift'])} under shift and {num(knn['Worst shift'])} on its worst shift "
                     f"({knn['Worst of the shifts']}), so it holds up {verb} the head "
                     f"({num(head['Mean under shift'])} and {num(head['Worst shift'])})")
    return "On the shifted validation films, " + "; ".join(parts) + "."


# -- sentences -------------------------------------------------------------------------------------
def _versus(a: Mapping, b: Mapping, a_name: str, b_name: str) -> str:
    """Compare two CI rows: "a scores higher than b (…)" when the intervals are apart, else "within"."""
    overlap = not (a["ci_low"] > b["ci_high"] or b["ci_low"] > a["ci_high"])
    if overlap:
        return (f"{a_name} and {b_name} are within each other's confidence intervals "
                f"({num(a['value'])} against {num(b['value'])})")
    word = "higher" if a["value"] > b["value"] else "lower"
    return (f"{a_name} scores {word} than {b_name} ({num(a['value'])} against {num(b['value'])}, "
            "with confidence intervals that do not overlap)")


def _map_text(quality: pd.DataFrame, titles: Mapping[str, str], tolerance: float = MAP_TOLERANCE) -> str:
    """Whether the maps keep the neighbourhoods of their embeddings (agreement within ``tolerance``)."""
    loss = quality["agreement_embedding"] - quality["agreement_map"]
    if bool((loss.abs() <= tolerance).all()):
        return ("For every representation the map keeps the neighbourhoods of the embedding: the agreement "
                f"in the map is within {_points(tolerance)} points of the agreement in the full space, so what "
                "the maps show is a fair picture of what the k-NN searched.")
    worst = loss.abs().idxmax()
    return ("The map changes the neighbourhoods noticeably for some representations (largest change in "
            f"agreement: {signed(float(loss.loc[worst]))}, {titles[worst]}), a reminder that a "
            "two-dimensional map distorts a high-dimensional space and is read for its neighbourhoods, "
            "not for distances between clusters.")


def _points(fraction: float) -> str:
    """Percentage points in words where small (``0.05 -> "five"``), digits otherwise."""
    points = round(100 * fraction)
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return words[points] if 0 <= points < len(words) else str(points)


def _pixel_text(auc: Mapping, threshold: float = PIXELS_SEPARATE_WELL) -> str:
    """How far raw pixels alone separate normal from pneumonia (pixel k-NN ROC AUC row)."""
    if auc["value"] >= threshold:
        return (f"Raw pixels alone already separate normal from pneumonia well (k-NN ROC AUC {fmt_ci(auc)}): "
                "much of that difference is global appearance (overall opacity and contrast of the chest), "
                "which a pixel-level neighbour search picks up. It is the finer bacterial/viral distinction "
                "where the learned embedding has to add most.")
    return (f"Raw pixels separate normal from pneumonia only moderately (k-NN ROC AUC {fmt_ci(auc)}), "
            "so the networks' embeddings add a lot already on the binary question.")


def _less(value: float, other: float) -> str:
    """``"less"`` when ``value < other``, else ``"no less"`` (for "separates the classes … well than")."""
    return "less" if value < other else "no less"


# -- maps ------------------------------------------------------------------------------------------
def _correctness(predictions: pd.DataFrame, images: pd.DataFrame) -> np.ndarray:
    """Per image of ``images``: "train" (not a test image), "correct" or "misclassified".

    ``predictions`` holds the test rows (``relpath``, ``target``, ``predicted``; a ``split``
    column, when present, selects ``"test"``). A test image without a prediction raises,
    rather than being counted as correct.
    """
    test = predictions[predictions["split"] == "test"] if "split" in predictions else predictions
    ok = (test["target"] == test["predicted"]).set_axis(test["relpath"])
    out = np.full(len(images), "train", dtype=object)
    is_test = images["split"].to_numpy() == "test"
    found = images["relpath"][is_test].map(ok)
    if found.isna().any():
        lost = images["relpath"][is_test][found.isna()].tolist()
        raise KeyError(f"{len(lost)} test images have no prediction (e.g. {lost[0]!r})")
    out[is_test] = np.where(found.astype(bool).to_numpy(), "correct", "misclassified")
    return out


def _correct_colours() -> dict[str, str]:
    from pneumo.plots import OKABE_ITO  # matplotlib: only when a section is built

    return {category: OKABE_ITO[name] for category, name in _CORRECT_COLOURS.items()}


def _gallery_share(gallery: pd.DataFrame) -> float:
    """Share of retrieved neighbours (rank > 0) whose label is their query's (rank 0)."""
    queries = gallery[gallery["rank"] == 0].set_index("query")["label"]
    neighbours = gallery[gallery["rank"] > 0]
    return float((neighbours["label"].to_numpy() == neighbours["query"].map(queries).to_numpy()).mean())


# -- the section -----------------------------------------------------------------------------------
def _comparisons(knn: pd.DataFrame, head: pd.DataFrame) -> dict[str, str]:
    """The headline sentences: k-NN on the embeddings against the heads and against pixels."""
    def ba(question, representation=None):
        return _ci_row(knn if representation else head, question, "balanced_accuracy", representation)

    mc_net = ba("multiclass", _network("multiclass"))
    return {
        "net_vs_pixels": _versus(mc_net, ba("multiclass", _PIXELS),
                                 "the k-NN on the Task 1b embedding", "the k-NN on raw pixels"),
        "net_vs_head": _versus(mc_net, ba("multiclass"), "the k-NN on the Task 1b embedding", "the network's own head"),
        "bin_vs_head": _versus(ba("binary", _network("binary")), ba("binary"), "the k-NN on the Task 1a embedding",
                               "the Task 1a head"),
    }


def _maps(embeddings: ReportEntry, binary: ReportEntry, multiclass: ReportEntry,
          arrays: Mapping[str, np.ndarray]) -> dict:
    """Coordinates, splits and colourings of the t-SNE figures.

    Test images are marked correct / misclassified by the network's own head on the network
    maps and by the three-class pixel k-NN on the pixel map.
    """
    images = embeddings.table("images")
    knn_pred = embeddings.table("knn_predictions")
    pixel_pred = _pair_rows(knn_pred, _PIXELS, "multiclass")
    correct = {_network("binary"): _correctness(binary.table("network_predictions"), images),
               _network("multiclass"): _correctness(multiclass.table("network_predictions"), images),
               _PIXELS: _correctness(pixel_pred, images)}
    return {
        "maps": {name: arrays[f"tsne_{name}"] for name in REPRESENTATIONS},
        "split": images["split"].to_numpy(),
        "label_by": {name: images["label"].to_numpy() for name in REPRESENTATIONS},
        "correct": {name: correct[name] for name in REPRESENTATIONS},
    }


def embeddings_section(embeddings: ReportEntry | None = None, binary: ReportEntry | None = None,
                       multiclass: ReportEntry | None = None) -> Section:
    """Task 2: how well the networks' embeddings keep the classes together, against raw pixels.

    The section shows the k-NN settings chosen on validation, the test metrics of k-NN on
    the embeddings and on raw pixels next to the networks' own heads, t-SNE maps coloured by
    class and by correctness, the maps' class agreement, and a retrieval gallery.

    Parameters
    ----------
    embeddings, binary, multiclass
        The Task 2, Task 1a and Task 1b cache entries; None reads ``task_entry(name)``.
        Task 1a gives the heads' binary predictions and the decoded images of the gallery,
        Task 1b the heads' three-class predictions.

    Returns
    -------
    Section
        Numbers (``dim``, ``pixel_size``, ``chance_agreement``, ...), display tables
        (``choice``, ``binary_table``, ``multi_table``, ``quality_table``, ``shift_table``), figure inputs
        (``grid``, ``pair_titles``, ``maps``, ``gallery_images``, ...) and sentences
        (``net_vs_pixels``, ``map_text``, ``pixel_text``, ...).
    """
    embeddings = embeddings or task_entry("embeddings")
    binary = binary or task_entry("binary")
    multiclass = multiclass or task_entry("multiclass")
    params, phases = embeddings.params, embeddings.run.get("phases_s", {})
    grid, knn, head = (embeddings.table(name) for name in ("knn_grid", "knn_test_metrics", "head_test_metrics"))
    quality = embeddings.table("space_quality").set_index("representation")
    gallery = embeddings.table("gallery")
    arrays = embeddings.arrays()
    dim = {name: int(arrays[f"features_{name}"].shape[1]) for name in REPRESENTATIONS}
    titles, pair_titles = _representation_titles(int(params["pixel_size"])), _pair_titles()
    best_map = quality["agreement_map"].idxmax()
    shift_table = _shift_table(embeddings.table("knn_val_shifts"),
                               {"binary": binary.table("val_shifts"), "multiclass": multiclass.table("val_shifts")})
    log.info("embeddings section from %s", where(embeddings))
    return Section(
        dim=dim, embedding_dim=dim[_network("multiclass")], pixel_dim=dim[_PIXELS],
        pixel_size=int(params["pixel_size"]), max_k=int(params["max_k"]),
        perplexity=float(params["perplexity"]), tsne_iterations=int(params["tsne_iterations"]),
        seed=int(params["seed"]), agreement_k=int(params["agreement_k"]),
        n_settings=len(grid), knn_seconds=float(phases.get("knn", 0.0)),
        tsne_seconds=float(phases.get("tsne", 0.0)), feature_seconds=float(phases.get("features", 0.0)),
        platform=platform_text(embeddings), where=where(embeddings),
        binary_entry=str(params["binary_entry"]), multiclass_entry=str(params["multiclass_entry"]),
        grid=grid, pair_titles=pair_titles, titles=titles, classes=list(CLASSES),
        choice=_choice_table(grid, dim, pair_titles),
        binary_table=_side_by_side(knn, head, "binary"), multi_table=_side_by_side(knn, head, "multiclass"),
        **_comparisons(knn, head),
        **_maps(embeddings, binary, multiclass, arrays),
        correct_categories=list(_CORRECT_COLOURS), correct_colours=_correct_colours(),
        quality_table=_quality_table(quality, titles),
        chance_agreement=float(quality["chance_agreement"].iloc[0]),
        best_map_title=titles[best_map], best_map_agreement=float(quality.loc[best_map, "agreement_map"]),
        map_text=_map_text(quality, titles),
        pixel_map_less=_less(quality.loc[_PIXELS, "agreement_map"],
                             quality.loc[_network("multiclass"), "agreement_map"]),
        pixel_text=_pixel_text(_ci_row(knn, "binary", "roc_auc", _PIXELS)),
        gallery=gallery, gallery_images=images_for(task_dataset(binary), gallery["relpath"]),
        gallery_share=_gallery_share(gallery),
        shift_table=shift_table, shift_text=_shift_text(shift_table),
        n_shifts=int(embeddings.table("knn_val_shifts")["shift"].nunique() - 1),
    )
