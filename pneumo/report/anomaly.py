"""Task 3 of the report: autoencoders trained on normal lungs only, and their anomaly scores.

:func:`anomaly_section` reads the Task 3 entry (and Task 1a's, for the supervised test ROC
AUC the detector is set against) and returns what ``report/_anomaly.qmd`` shows: the
autoencoders and how they trained, every (autoencoder, score) pair ranked on validation, the
chosen pair's test figures, and the sentences that read those numbers.

The test-split part (the chosen pair's table and its sentences) is in
:mod:`pneumo.report.anomaly_test_split`, re-exported here. The names of the autoencoders, of
the scores and of the score columns come from
:mod:`pneumo.anomaly` (:func:`~pneumo.anomaly.ae_variants`, ``SCORES``, the column rule) and
:data:`pneumo.plots.anomaly.SCORE_NAMES`; nothing of the task is restated here.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pneumo.anomaly import (
    LATENT_SCORES,
    RECONSTRUCTION_SCORES,
    SCORES,
    SELECTION_CRITERIA,
    AnomalyConfig,
    _column,
    ae_variants,
)
from pneumo.metrics import auc_standard_error
from pneumo.plots.anomaly import SCORE_NAMES
from pneumo.report.entries import ReportEntry, platform_text, task_entry, where
from pneumo.report.anomaly_test_split import (
    SQUID_AUC,
    TARGET_AUC,
    TEST_METRICS,
    chosen_test_table,
    kind_sentence,
    specificity_sentence,
    supervised_sentence,
    target_sentence,
)
from pneumo.report.section import Section
from pneumo.report.tables import markdown
from pneumo.report.text import duration, fmt_ci, join_words, num, pct, plural

__all__ = [
    "TARGET_AUC", "SQUID_AUC", "TEST_METRICS",
    "anomaly_section", "anomaly_config", "latent_sizes", "score_name", "score_column",
    "intensity_description", "intensity_sentence", "normalisation_sentence", "xrv_sentence", "reference_sentence",
    "training_table", "alternatives_table", "best_score_per_autoencoder", "best_autoencoder_per_score",
    "choice_sentence", "selection_sentence", "shift_comparison_table", "shift_specificity_sentence",
    "family_sentence", "mse_sentence", "chosen_test_table", "target_sentence",
    "specificity_sentence", "kind_sentence", "supervised_sentence", "epoch_sentence",
]

log = logging.getLogger(__name__)


#: How the prose names each input normalisation (``pneumo.imaging.INTENSITY_MODES``).
INTENSITY_NAMES = {"equalize": "equalised", "stretch": "stretched", "none": "raw"}
INTENSITY_METHODS = {
    "equalize": "histogram equalisation, each grey level replaced by the share of the image's pixels "
                "that are no brighter (scaled to 0–255), so that the result is the same for any exposure "
                "that keeps the order of grey levels",
    "stretch": "a linear contrast stretch, the image's 1st percentile to black and its 99th to white, "
               "which keeps the shape of its histogram",
    "none": "the raw grey levels, as decoded",
}
CORRUPTION_NAMES = {"none": "none", "noise": "Gaussian noise", "mask": "masked cells"}


_TEST_AUC_COLUMN = "Test ROC AUC [95% CI] (not used to choose)"
_SHIFT_AUC_COLUMN = "Mean ROC AUC under shift"
_NORMALS_AUC_COLUMN = "Mean ROC AUC, normals shifted"

#: How the prose names each selection criterion (``AnomalyConfig.selection``).
SELECTION_NAMES = {"normals": "its mean validation ROC AUC when only the normal films are shifted (each shifted "
                             "copy of the normal validation films against the pneumonia films as they are)",
                   "shift": "its mean validation ROC AUC over the shifted copies of the validation films",
                   "plain": "its validation ROC AUC"}
#: How a sentence names the figure each criterion ranks by.
_CRITERION_PHRASES = {"normals": "the mean ROC AUC with the normal films shifted",
                      "shift": "the mean ROC AUC under shift", "plain": ""}


# -- names -----------------------------------------------------------------------------------------
def anomaly_config(params: Mapping[str, Any]) -> AnomalyConfig:
    """The task config an entry was computed with, rebuilt from its ``params.json``."""
    known = set(AnomalyConfig.field_names())
    return AnomalyConfig(**{k: v for k, v in params.items() if k in known})


def latent_sizes(config: AnomalyConfig) -> tuple[int | None, int | None]:
    """The smaller and larger code sizes that :func:`pneumo.anomaly.ae_variants` trains.

    Only the variants that change the latent size alone count (the full grid's masked
    variant with a small code is a masked variant). ``(None, None)`` when the grid has none.
    """
    sizes = sorted(int(changes["latent"]) for _, changes in ae_variants(config) if set(changes) == {"latent"})
    return (sizes[0], sizes[-1]) if sizes else (None, None)


def score_name(score: str) -> str:
    """The readable name of a score key (``"mse" -> "pixel MSE"``); unknown keys as they are."""
    return SCORE_NAMES.get(score, score)


def score_column(variant: str, score: str) -> str:
    """The ``scores`` table's column of one (autoencoder, score) pair: the task's own rule."""
    return _column(variant, score)


def _ci_text(row: Mapping[str, Any]) -> str:
    return fmt_ci({"value": row["test_roc_auc"], "ci_low": row["test_roc_auc_ci_low"],
                   "ci_high": row["test_roc_auc_ci_high"]})


# -- training --------------------------------------------------------------------------------------
def _fits(variants: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One row per trained autoencoder (its training columns), in the order they were trained."""
    trained = variants[variants["status"] == "trained"].drop_duplicates("variant").set_index("variant")
    order = [v for v in dict.fromkeys(history["variant"]) if v in trained.index]
    return trained.reindex(order + [v for v in trained.index if v not in order])


def training_table(fits: pd.DataFrame) -> pd.DataFrame:
    """The autoencoders table: normalisation, code size, corruption, size, epochs, error, time."""
    return pd.DataFrame({
        "Autoencoder": list(fits.index),
        "Input grey levels": [INTENSITY_NAMES.get(m, m) for m in fits["intensity"]],
        "Latent size": fits["latent"].astype(int).to_numpy(),
        "Input corruption": [CORRUPTION_NAMES.get(c, c) for c in fits["corruption"]],
        "Parameters": fits["parameters"].astype(int).to_numpy(),
        "Best / run epochs": [f"{int(b)} / {int(r)}" for b, r in zip(fits["best_epoch"], fits["epochs_run"])],
        "Validation MSE": fits["val_loss"].astype(float).to_numpy(),
        "Training time": [duration(s) for s in fits["train_seconds"]],
    })


def intensity_description(baseline: str, trained: Sequence[str]) -> str:
    """How the baseline normalises each image, and the alternatives measured (if any)."""
    others = [m for m in dict.fromkeys(trained) if m != baseline]
    text = f"the baseline uses {INTENSITY_METHODS[baseline]}."
    if others:
        text += " The alternatives measured are " + "; and ".join(INTENSITY_METHODS[m] for m in others) + "."
    return text


def _best_per_intensity(alt: pd.DataFrame, latent: int) -> pd.DataFrame:
    """The best score of the baseline design (no corruption, baseline code) per input normalisation."""
    same_design = (alt["corruption"] == "none") & (alt["latent"] == latent)
    return (alt[same_design].sort_values("val_roc_auc", ascending=False, kind="mergesort")
            .drop_duplicates("intensity").set_index("intensity"))


def intensity_sentence(by_intensity: pd.DataFrame) -> str:
    """The baseline's best validation ROC AUC per input normalisation ("" with only one)."""
    if len(by_intensity) <= 1:
        return ""
    parts = [f"{num(row['val_roc_auc'])} on {INTENSITY_NAMES.get(mode, mode)} grey levels ({score_name(row['score'])})"
             for mode, row in by_intensity.iterrows()]
    return "On validation the same autoencoder reaches a best ROC AUC of " + join_words(parts) + "."


def normalisation_sentence(by_intensity: pd.DataFrame, design_spread: float) -> str:
    """Whether normalising the grey levels mattered more than the design of the autoencoder.

    ``design_spread``: the range of the best validation ROC AUC over the autoencoders that
    share the baseline's normalisation (latent sizes and corruptions).
    """
    if "none" not in by_intensity.index or len(by_intensity) <= 1:
        return "The input normalisation was not compared with raw grey levels in this run."
    raw = float(by_intensity.loc["none", "val_roc_auc"])
    best = float(by_intensity.drop(index="none")["val_roc_auc"].max())
    text = ("Normalising each image's grey levels moves the best validation ROC AUC of the same autoencoder "
            f"from {num(raw)} to {num(best)}")
    if best - raw > design_spread:
        return text + (", more than any change of latent size or corruption does: what the input looks like "
                       "mattered more than how the autoencoder is built. Without it, a film that is merely "
                       "darker or flatter than usual looks anomalous, and that nuisance competes with the "
                       "disease for the score.")
    return text + "; changes of latent size or corruption matter as much or more."


def reference_sentence(copies: int) -> str:
    """What the code and feature scores measure distances to: the training normals, and jittered copies."""
    if not copies:
        return "Their normal reference is the training normals as they are."
    return (f"Their normal reference is the training normals and {plural(copies, 'copy', 'copies')} of each, "
            "jittered as training augments them (position, zoom, rotation, exposure), so that a normal film "
            "framed a little differently from the usual is not far from every normal.")


def xrv_sentence(status: str) -> str:
    """Whether torchxrayvision's pre-trained autoencoder entered the comparison, and why not."""
    if status == "used":
        return ("Its pre-trained weights were found in the local torchxrayvision cache, so its pixel MSE is "
                "scored like ours (at its native 224 pixels) and enters the comparison.")
    if status == "not requested":
        return "It was not requested in this run's configuration, so it does not appear in the comparison."
    return ("It is not part of the comparison: its weights are downloaded on first use, this study runs "
            f"offline and the file is not in the local cache (the run recorded: {status.removeprefix('skipped: ')}).")


def epoch_sentence(fits: pd.DataFrame, epochs: int):
    """Markdown (it cites @fig-anomaly-curves): whether the epoch budget cut training short.

    An autoencoder counts as still improving when it ran every epoch and kept one of the
    last two.
    """
    late = sum(int(b) >= int(r) - 1 and int(r) == int(epochs) for b, r in zip(fits["best_epoch"], fits["epochs_run"]))
    if not late:
        return markdown("every autoencoder stopped early, so a longer budget would not change much")
    return markdown(f"the validation error of {late} of the {plural(len(fits), 'autoencoder')} was still falling "
                    "in the last epochs (@fig-anomaly-curves), so a longer training budget may well help")


# -- choosing on validation ------------------------------------------------------------------------
def _alternatives(variants: pd.DataFrame, selection: str) -> pd.DataFrame:
    """Every scored pair (skipped comparators dropped), ranked by the entry's selection criterion."""
    alt = variants[~variants["status"].astype(str).str.startswith("skipped")]
    keys = [k for k in dict.fromkeys((SELECTION_CRITERIA[selection], "val_roc_auc")) if k in alt]
    # The task ranks them already; a stable sort keeps its order (and its choice) on ties.
    return alt.sort_values(keys, ascending=False, kind="mergesort", na_position="last").reset_index(drop=True)


def _shift_column(alt: pd.DataFrame) -> dict[str, np.ndarray]:
    """The mean-under-shift columns of a table (every film shifted; only the normals), when
    the entry measured them."""
    columns = {_SHIFT_AUC_COLUMN: "val_shift_roc_auc_mean", _NORMALS_AUC_COLUMN: "val_shift_normals_roc_auc_mean"}
    return {name: alt[column].astype(float).to_numpy() for name, column in columns.items() if column in alt}


def alternatives_table(alt: pd.DataFrame) -> pd.DataFrame:
    """Every (autoencoder, score) pair: validation ROC / PR AUC, under shift, test ROC AUC with its interval."""
    return pd.DataFrame({
        "Autoencoder": alt["variant"].to_numpy(),
        "Score": [score_name(s) for s in alt["score"]],
        "Validation ROC AUC": alt["val_roc_auc"].astype(float).to_numpy(),
        "Validation PR AUC": alt["val_pr_auc"].astype(float).to_numpy(),
        **_shift_column(alt),
        _TEST_AUC_COLUMN: [_ci_text(r) for _, r in alt.iterrows()],
    })


def best_score_per_autoencoder(alt: pd.DataFrame) -> pd.DataFrame:
    """A short version of :func:`alternatives_table`: each autoencoder's best score on validation.

    Best by the entry's selection criterion (``alt``'s order); also the autoencoder's mean
    validation ROC AUC over its scores; best autoencoder first.
    """
    best = alt.drop_duplicates("variant")  # alt is sorted best first
    means = alt.groupby("variant")["val_roc_auc"].mean()
    return pd.DataFrame({
        "Autoencoder": best["variant"].to_numpy(),
        "Best score": [score_name(s) for s in best["score"]],
        "Validation ROC AUC": best["val_roc_auc"].astype(float).to_numpy(),
        **_shift_column(best),
        "Mean over scores": means.reindex(best["variant"]).astype(float).to_numpy(),
        _TEST_AUC_COLUMN: [_ci_text(r) for _, r in best.iterrows()],
    })


def best_autoencoder_per_score(alt: pd.DataFrame) -> pd.DataFrame:
    """A short version of :func:`alternatives_table`: each score's best autoencoder on validation.

    Also the score's mean validation ROC AUC over the autoencoders; best score first.
    """
    best = alt.drop_duplicates("score")
    means = alt.groupby("score")["val_roc_auc"].mean()
    return pd.DataFrame({
        "Score": [score_name(s) for s in best["score"]],
        "Best autoencoder": best["variant"].to_numpy(),
        "Validation ROC AUC": best["val_roc_auc"].astype(float).to_numpy(),
        "Mean over autoencoders": means.reindex(best["score"]).astype(float).to_numpy(),
        _TEST_AUC_COLUMN: [_ci_text(r) for _, r in best.iterrows()],
    })


def choice_sentence(alt: pd.DataFrame, se: float, selection: str) -> str:
    """How far the runner-up is behind the chosen pair on the selection criterion, against the
    validation AUC's standard error ``se``."""
    if len(alt) < 2:
        return "There was no other pair to compare with."
    first, second = alt.iloc[0], alt.iloc[1]
    criterion = SELECTION_CRITERIA[selection]
    gap = float(first[criterion] - second[criterion])
    verdict = ("within the rough standard error of a validation AUC of this size, so the choice between the two "
               "is close to a coin toss." if gap <= se else "more than that standard error.")
    measure = _CRITERION_PHRASES[selection]
    return (f"The runner-up, {second['variant']} with the {score_name(second['score'])} score, is {num(gap)} "
            f"behind{' on ' + measure if measure else ''}, {verdict}")


def selection_sentence(alt: pd.DataFrame, selection: str) -> str:
    """What choosing under shift changed: the pair plain validation ROC AUC would have chosen."""
    criterion = SELECTION_CRITERIA[selection]
    if selection == "plain" or criterion not in alt:
        return "The shift benchmark was not part of this run's choice."
    chosen = alt.iloc[0]
    plain = alt.sort_values(["val_roc_auc", "val_pr_auc"], ascending=False, kind="mergesort").iloc[0]
    head = (f"The chosen pair keeps a mean ROC AUC of {num(chosen['val_shift_roc_auc_mean'])} over the shifted "
            f"films and {num(chosen['val_shift_roc_auc_worst'])} on its worst shift ({chosen['val_shift_worst']})")
    if selection == "normals":
        head += (f"; with only the normal films shifted, {num(chosen['val_shift_normals_roc_auc_mean'])} on average "
                 f"and {num(chosen['val_shift_normals_roc_auc_worst'])} on the worst shift "
                 f"({chosen['val_shift_normals_worst']})")
    head += ". "
    if (plain["variant"], plain["score"]) == (chosen["variant"], chosen["score"]):
        return head + "Plain validation ROC AUC would have chosen the same pair."
    worst, worst_shift = (("val_shift_normals_roc_auc_worst", "val_shift_normals_worst") if selection == "normals"
                          else ("val_shift_roc_auc_worst", "val_shift_worst"))
    how = "with the normal films shifted" if selection == "normals" else "under shift"
    return head + (f"Plain validation ROC AUC would have chosen {plain['variant']} with the "
                   f"{score_name(plain['score'])} score ({num(plain['val_roc_auc'])} against "
                   f"{num(chosen['val_roc_auc'])}), which falls to {num(plain[criterion])} on average "
                   f"{how} and to {num(plain[worst])} on its worst ({plain[worst_shift]}).")


def shift_comparison_table(shifts: pd.DataFrame, alt: pd.DataFrame) -> pd.DataFrame:
    """Per shift: ROC AUC (every film shifted, and only the normals), and the share of normal
    films kept under the threshold, for the chosen pair and, when it differs, the pair plain
    validation ROC AUC would have chosen."""
    plain = alt.sort_values(["val_roc_auc", "val_pr_auc"], ascending=False, kind="mergesort").iloc[0]
    pairs = {"chosen": alt.iloc[0]}
    if (plain["variant"], plain["score"]) != (alt.iloc[0]["variant"], alt.iloc[0]["score"]):
        pairs["best plain"] = plain
    table = pd.DataFrame({"Shift": list(dict.fromkeys(shifts["shift"]))})
    for label, pair in pairs.items():
        rows = shifts[(shifts["variant"] == pair["variant"]) & (shifts["score"] == pair["score"])].set_index("shift")
        table[f"ROC AUC, {label}"] = rows["roc_auc"].reindex(table["Shift"]).to_numpy()
        if "normals_roc_auc" in rows:
            table[f"ROC AUC, normals shifted, {label}"] = rows["normals_roc_auc"].reindex(table["Shift"]).to_numpy()
        table[f"Normals kept, {label}"] = rows["specificity"].reindex(table["Shift"]).to_numpy()
    return table


def shift_specificity_sentence(chosen: pd.Series, quantile: float) -> str:
    """How many normal validation films the threshold still lets through under shift."""
    if "val_shift_specificity_mean" not in chosen or pd.isna(chosen["val_shift_specificity_mean"]):
        return ""
    return (f"At its threshold, set on the unshifted validation normals to keep {pct(quantile, 0)} of them, the "
            f"chosen pair keeps {pct(chosen['val_shift_specificity_mean'])} of normal films on average under "
            f"shift and {pct(chosen['val_shift_specificity_worst'])} on the worst shift: a normal film from "
            "another machine is flagged that much more often.")


def family_sentence(alt: pd.DataFrame) -> str:
    """The best reconstruction score against the best score that ignores the reconstruction."""
    rec, lat = alt[alt["score"].isin(RECONSTRUCTION_SCORES)], alt[alt["score"].isin(LATENT_SCORES)]
    if not len(rec) or not len(lat):
        return ""
    r, l = rec.iloc[0], lat.iloc[0]
    verb = "beats" if r["val_roc_auc"] > l["val_roc_auc"] else "does not beat"
    return (f"The best reconstruction score ({score_name(r['score'])} of {r['variant']}, validation ROC AUC "
            f"{num(r['val_roc_auc'])}) {verb} the best score that ignores the reconstruction "
            f"({score_name(l['score'])} of {l['variant']}, {num(l['val_roc_auc'])}).")


def mse_sentence(alt: pd.DataFrame):
    """Markdown (it cites @tbl-anomaly-alternatives): whether any score beats the pixel MSE."""
    mse_best = alt.loc[alt["score"] == "mse", "val_roc_auc"].max()
    others = alt[alt["score"] != "mse"]
    if not len(others) or not np.isfinite(mse_best):
        return markdown("")
    other = others.iloc[0]
    if other["val_roc_auc"] > mse_best:
        return markdown(
            f"Looking beyond the pixel MSE pays off on validation: the best other score ({score_name(other['score'])} "
            f"of {other['variant']}) reaches a ROC AUC of {num(other['val_roc_auc'])} against {num(mse_best)} for "
            "the best pixel MSE (@tbl-anomaly-alternatives).")
    return markdown("Looking beyond the pixel MSE does not pay off on validation: no other score beats the best "
                    f"pixel MSE ({num(mse_best)}; @tbl-anomaly-alternatives).")


# -- the section -----------------------------------------------------------------------------------
def _design(anomaly: ReportEntry, params: Mapping[str, Any], fits: pd.DataFrame) -> dict[str, Any]:
    """What was trained and how: the approach and design paragraphs and the training table."""
    cfg = anomaly.load_model()["config"]  # the chosen autoencoder's settings
    small, large = latent_sizes(anomaly_config(params))
    phases, run = anomaly.run.get("phases_s", {}), anomaly.run
    return dict(
        config=cfg, latent=int(params["latent"]), latent_small=small, latent_large=large,
        knn_k=int(params["knn_k"]), resolution=int(cfg["resolution"]),
        reference_text=reference_sentence(int(params.get("reference_copies", 0))),
        decode_resolution=int(params["decode_resolution"]),
        depth=int(cfg["depth"]), width=int(cfg["width"]), chosen_latent=int(cfg["latent"]),
        grey_levels=INTENSITY_NAMES.get(cfg.get("intensity", "none"), str(cfg.get("intensity"))),
        parameters=int(fits.loc[cfg["variant"], "parameters"]) if cfg["variant"] in fits.index else 0,
        lr_text=f"{params['lr']:g}", weight_decay_text=f"{params['weight_decay']:g}",
        batch_size=int(params["batch_size"]), epochs=int(params["epochs"]), patience=int(params["patience"]),
        bootstrap=int(params["bootstrap"]),
        aug_text=("Training images are augmented with the Task 1 geometric and intensity jitter, so that the "
                  "autoencoder learns the normal variation of position and exposure instead of flagging it."
                  if cfg["augment"] else "Training images are not augmented."),
        intensity_description=intensity_description(params["intensity"], list(fits["intensity"])),
        platform=platform_text(anomaly), where=where(anomaly),
        wall_seconds=float(run["wall_s"]), train_seconds=float(phases.get("train", 0.0)),
        score_seconds=float(phases.get("score", 0.0)), test_seconds=float(phases.get("test", 0.0)),
        n_ae=len(fits), ae_names=list(fits.index), training_table=training_table(fits),
        best_fit=str(fits["val_loss"].astype(float).idxmin()), epoch_text=epoch_sentence(fits, params["epochs"]),
    )


def _selection(alt: pd.DataFrame, scores: pd.DataFrame, params: Mapping[str, Any], ae_names: Sequence[str],
               selection: str, shifts: pd.DataFrame) -> dict[str, Any]:
    """Choosing the pair on validation: the ranking, its noise, the shifts and what they say."""
    val = scores[scores["split"] == "val"]
    val_pos = int(val["binary"].sum())
    val_neg = len(val) - val_pos
    se = auc_standard_error(float(alt["val_roc_auc"].max()), val_pos, val_neg)
    score_means = alt.groupby("score")["val_roc_auc"].mean().sort_values(ascending=False)
    variant_means = alt[alt["variant"].isin(ae_names)].groupby("variant")["val_roc_auc"].mean()
    by_intensity = _best_per_intensity(alt, int(params["latent"]))
    spread = (alt[alt["intensity"] == params["intensity"]].groupby("variant")["val_roc_auc"].max()
              .pipe(lambda m: float(m.max() - m.min())))
    return dict(
        alternatives=alt, alternatives_table=alternatives_table(alt),
        best_score_per_autoencoder=best_score_per_autoencoder(alt),
        best_autoencoder_per_score=best_autoencoder_per_score(alt),
        n_alternatives=len(alt), val_pos=val_pos, val_neg=val_neg, n_val=len(val), se=se,
        choice_text=choice_sentence(alt, se, selection), family_text=family_sentence(alt), mse_text=mse_sentence(alt),
        best_score_family=score_name(score_means.index[0]), best_variant_mean=str(variant_means.idxmax()),
        intensity_text=intensity_sentence(by_intensity), norm_discussion=normalisation_sentence(by_intensity, spread),
        selection=selection, selection_name=SELECTION_NAMES[selection],
        n_shifts=int(shifts.loc[shifts["shift"] != "none", "shift"].nunique()),
        selection_text=selection_sentence(alt, selection),
        shift_table=shift_comparison_table(shifts, alt),
        shift_spec_text=shift_specificity_sentence(alt.iloc[0], float(params["threshold_quantile"])),
        # Pre-trained comparators: drawn in the first panel of the ROC figure, not trained here.
        extra=[score_column(v, s) for v, s, st in zip(alt["variant"], alt["score"], alt["status"])
               if st == "pre-trained"],
    )


def _test(anomaly: ReportEntry, metrics: Mapping[str, Any], scores: pd.DataFrame, column: str,
          supervised: float) -> dict[str, Any]:
    """The chosen pair on test: its table, the sentences, the example images."""
    t = anomaly.table("test_metrics").set_index(["comparison", "metric"])
    auc = t.loc[("pneumonia", "roc_auc")]
    quantile = float(metrics["threshold_quantile"])
    examples = anomaly.table("examples")
    arrays = anomaly.arrays()
    test_scores = scores[scores["split"] == "test"].set_index("relpath")[column]
    return dict(
        test_table=chosen_test_table(anomaly.table("test_metrics")), auc=auc, quantile=quantile,
        target_text=target_sentence(float(auc["value"])),
        spec_text=specificity_sentence(t.loc[("pneumonia", "specificity")], quantile),
        kind_text=kind_sentence(float(t.loc[("bacterial", "roc_auc"), "value"]),
                                float(t.loc[("viral", "roc_auc"), "value"]), metrics["chosen_score"]),
        supervised=supervised, sup_text=supervised_sentence(supervised, float(auc["value"])),
        example_input=arrays["example_input"], example_reconstruction=arrays["example_reconstruction"],
        example_residual=arrays["example_residual"], example_labels=list(examples["label"]),
        example_scores=[float(test_scores.loc[p]) for p in examples["relpath"]], n_examples=len(examples),
    )


def anomaly_section(anomaly: ReportEntry | None = None, binary: ReportEntry | None = None) -> Section:
    """What Task 3 shows: autoencoders of normal lungs and the anomaly scores they give.

    Parameters
    ----------
    anomaly
        Task 3's entry; None: ``task_entry("anomaly")``.
    binary
        Task 1a's entry, for the supervised network's test ROC AUC; None: ``task_entry("binary")``.

    Returns
    -------
    Section
        The chosen pair (``chosen_variant``, ``chosen_score``, ``score_name``, ``chosen_column``,
        ``val_roc_auc``, ``threshold``, ``quantile``); how it was chosen (``selection``,
        ``selection_name``, ``shift_table`` per shift for ``md_table``); the design (``latent``, ``latent_small``,
        ``latent_large``, ``resolution``, ``depth``, ... , ``parameters``, times in seconds);
        tables for ``md_table`` (``training_table``, ``alternatives_table`` with every pair and its
        short versions ``best_score_per_autoencoder`` and ``best_autoencoder_per_score``,
        ``test_table``); figure inputs (``history``, ``scores``, ``ae_names``, ``score_keys``,
        ``extra``, ``hist_xlabel``, ``example_*``); the sentences (``*_text``, ``norm_discussion``;
        ``mse_text`` and ``epoch_text`` are Markdown, as they carry cross-references).
    """
    anomaly = anomaly or task_entry("anomaly")
    binary = binary or task_entry("binary")
    metrics, params = anomaly.metrics, anomaly.params
    variants, history, scores = anomaly.table("variants"), anomaly.table("history"), anomaly.table("scores")
    fits = _fits(variants, history)
    design = _design(anomaly, params, fits)
    selection = str(metrics.get("selection", "plain"))  # entries before the shift benchmark: plain
    chosen = score_column(metrics["chosen_variant"], metrics["chosen_score"])
    name = score_name(metrics["chosen_score"])
    log.debug("anomaly section from %s (chosen %s)", where(anomaly), chosen)
    return Section(
        chosen_variant=str(metrics["chosen_variant"]), chosen_score=str(metrics["chosen_score"]),
        chosen_column=chosen, score_name=name, val_roc_auc=float(metrics["val_roc_auc"]),
        threshold=float(metrics["threshold"]), train_images=int(metrics["train_images"]),
        val_normal_images=int(metrics["val_normal_images"]), test_images=int(metrics["test_images"]),
        test_patients=int(metrics["test_patients"]),
        xrv_text=xrv_sentence(str(metrics.get("xrv_status", "not requested"))),
        history=history, scores=scores, score_keys=list(SCORES),
        hist_xlabel=f"{name}, {metrics['chosen_variant']} autoencoder",
        **design,
        **_selection(_alternatives(variants, selection), scores, params, design["ae_names"], selection,
                     anomaly.table("val_shifts")),
        **_test(anomaly, metrics, scores, chosen, float(binary.metrics["test_roc_auc"])),
    )
