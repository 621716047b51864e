"""Task 3's report section: the sentences follow the numbers, the tables hold every pair."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from IPython.display import Markdown

from pneumo.anomaly import SCORES, AnomalyConfig, ae_variants
from pneumo.plots.anomaly import SCORE_NAMES
from pneumo.report.anomaly import (
    alternatives_table,
    anomaly_config,
    anomaly_section,
    best_autoencoder_per_score,
    best_score_per_autoencoder,
    choice_sentence,
    selection_sentence,
    shift_comparison_table,
    shift_specificity_sentence,
    chosen_test_table,
    epoch_sentence,
    family_sentence,
    intensity_description,
    intensity_sentence,
    kind_sentence,
    latent_sizes,
    mse_sentence,
    normalisation_sentence,
    score_column,
    specificity_sentence,
    supervised_sentence,
    target_sentence,
    training_table,
    reference_sentence,
    xrv_sentence,
    _alternatives,
    _best_per_intensity,
    _fits,
)


# -- fake entries ----------------------------------------------------------------------------------
def pairs(rows) -> pd.DataFrame:
    """A ``variants`` table from ``(variant, score, val_roc_auc)`` rows (other columns filled in)."""
    out = []
    for i, (variant, score, auc) in enumerate(rows):
        out.append({"variant": variant, "score": score, "status": "trained", "intensity": "equalize",
                    "latent": 16, "corruption": "none", "augment": True, "best_epoch": 5, "epochs_run": 8,
                    "train_seconds": 12.0, "val_loss": 0.2, "parameters": 1000, "val_roc_auc": auc,
                    "val_pr_auc": auc - 0.05, "test_roc_auc": auc - 0.01, "test_roc_auc_ci_low": auc - 0.1,
                    "test_roc_auc_ci_high": min(auc + 0.05, 1.0), "test_pr_auc": auc})
    return pd.DataFrame(out)


@pytest.fixture
def alt() -> pd.DataFrame:
    return _alternatives(pairs([("masked", "features", 0.80), ("baseline", "ssim", 0.78),
                                ("baseline", "mse", 0.70), ("masked", "mse", 0.60),
                                ("baseline", "features", 0.65), ("masked", "ssim", 0.55)]), "plain")


# -- names from the task module --------------------------------------------------------------------
def test_config_and_latent_sizes_come_from_the_task():
    params = AnomalyConfig.create("smoke").to_dict()
    config = anomaly_config({**params, "an_old_key": 1})  # keys the task no longer has are ignored
    assert config == AnomalyConfig.create("smoke")
    small, large = latent_sizes(config)
    assert (small, large) == (4, 64)  # smoke: latent 16
    assert {f"latent={small}", f"latent={large}"} <= {name for name, _ in ae_variants(config)}
    full = AnomalyConfig.create("gpu")  # the full grid's "masked, latent=small" does not count twice
    assert latent_sizes(full) == (full.latent // 4, full.latent * 4)
    assert latent_sizes(config.replace(grid="none")) == (None, None)
    assert score_column("baseline", "mse") == "baseline/mse"


# -- training --------------------------------------------------------------------------------------
def test_training_order_and_table():
    variants = pairs([("masked", "mse", 0.8), ("baseline", "mse", 0.7), ("masked", "ssim", 0.6)])
    variants.loc[variants["variant"] == "masked", ["corruption", "val_loss"]] = ["mask", 0.1]
    history = pd.DataFrame({"variant": ["baseline", "baseline", "masked"], "epoch": [1, 2, 1]})
    fits = _fits(variants, history)
    assert list(fits.index) == ["baseline", "masked"]  # training order, not the ranking
    table = training_table(fits)
    assert list(table["Input corruption"]) == ["none", "masked cells"]
    assert list(table["Best / run epochs"]) == ["5 / 8", "5 / 8"] and table["Training time"][0] == "12 s"


def test_epoch_sentence_is_markdown_with_its_reference():
    fits = pd.DataFrame({"best_epoch": [8, 7, 3], "epochs_run": [8, 8, 3]})
    late = epoch_sentence(fits, epochs=8)
    assert isinstance(late, Markdown)
    assert late.data.startswith("the validation error of 2 of the 3 autoencoders") and "@fig-anomaly-curves" in late.data
    early = epoch_sentence(fits.assign(best_epoch=[3, 3, 3], epochs_run=[6, 6, 3]), epochs=8)
    assert early.data == "every autoencoder stopped early, so a longer budget would not change much"


def test_intensity_sentences():
    only = intensity_description("equalize", ["equalize", "equalize"])
    assert only.startswith("the baseline uses histogram equalisation") and "alternatives" not in only
    both = intensity_description("equalize", ["equalize", "none", "stretch"])
    assert "The alternatives measured are the raw grey levels, as decoded; and a linear contrast" in both

    variants = pairs([("intensity=stretch", "features", 0.8), ("baseline", "ssim", 0.7),
                      ("intensity=none", "mse", 0.6), ("latent=64", "mse", 0.9)])
    variants["intensity"] = ["stretch", "equalize", "none", "equalize"]
    variants.loc[3, "latent"] = 64  # another design: not "the same autoencoder"
    by = _best_per_intensity(_alternatives(variants, "plain"), latent=16)
    assert list(by.index) == ["stretch", "equalize", "none"]
    assert intensity_sentence(by) == ("On validation the same autoencoder reaches a best ROC AUC of 0.800 on stretched "
                                      "grey levels (encoder-feature Mahalanobis), 0.700 on equalised grey levels "
                                      "(1 - SSIM) and 0.600 on raw grey levels (pixel MSE).")
    assert intensity_sentence(by.iloc[:1]) == ""
    assert "more than any change of latent size" in normalisation_sentence(by, design_spread=0.1)
    assert normalisation_sentence(by, design_spread=0.3).endswith("; changes of latent size or corruption matter "
                                                                  "as much or more.")
    assert "from 0.600 to 0.800" in normalisation_sentence(by, 0.1)
    assert "not compared with raw grey levels" in normalisation_sentence(by.drop(index="none"), 0.1)


def test_reference_sentence():
    assert reference_sentence(0) == "Their normal reference is the training normals as they are."
    assert reference_sentence(2).startswith("Their normal reference is the training normals and 2 copies of each")
    assert reference_sentence(1).startswith("Their normal reference is the training normals and 1 copy of each")


def test_xrv_sentence_per_status():
    assert "enters the comparison" in xrv_sentence("used")
    assert "not requested" in xrv_sentence("not requested")
    assert xrv_sentence("skipped: no file x.pt").endswith("(the run recorded: no file x.pt).")


# -- choosing on validation ------------------------------------------------------------------------
def test_alternatives_and_their_short_versions(alt):
    full = alternatives_table(alt)
    assert len(full) == 6 and list(full["Validation ROC AUC"]) == sorted(full["Validation ROC AUC"], reverse=True)
    assert full["Score"][0] == SCORE_NAMES["features"] and full.iloc[0, -1] == "0.790 [0.700, 0.850]"
    per_ae = best_score_per_autoencoder(alt)
    assert list(per_ae["Autoencoder"]) == ["masked", "baseline"]
    assert list(per_ae["Best score"]) == [SCORE_NAMES["features"], SCORE_NAMES["ssim"]]
    assert per_ae["Mean over scores"].tolist() == pytest.approx([(0.8 + 0.6 + 0.55) / 3, (0.78 + 0.7 + 0.65) / 3])
    per_score = best_autoencoder_per_score(alt)
    assert list(per_score["Best autoencoder"]) == ["masked", "baseline", "baseline"]
    assert per_score["Mean over autoencoders"].tolist() == pytest.approx([0.725, 0.665, 0.65])


def test_choice_sentence_against_the_standard_error(alt):
    close = choice_sentence(alt, 0.05, "plain")
    assert close.startswith("The runner-up, baseline with the 1 - SSIM score, is 0.020 behind, within")
    assert choice_sentence(alt, 0.01, "plain").endswith("behind, more than that standard error.")
    assert choice_sentence(alt.iloc[:1], 0.05, "plain") == "There was no other pair to compare with."


def _under_shift(variants: pd.DataFrame, means: list[float]) -> pd.DataFrame:
    """``variants`` with shift-benchmark columns: the given means, worst = mean - 0.1."""
    return variants.assign(val_shift_roc_auc_mean=means, val_shift_roc_auc_worst=np.array(means) - 0.1,
                           val_shift_worst="border masked (8% frame)", val_shift_specificity_mean=0.8,
                           val_shift_specificity_worst=0.5)


def test_choosing_under_shift_ranks_and_tells_what_it_changed():
    variants = _under_shift(pairs([("baseline", "mse", 0.9), ("masked", "features", 0.8)]), [0.6, 0.75])
    alt = _alternatives(variants, "shift")
    assert list(alt["variant"]) == ["masked", "baseline"]  # the shift criterion, not validation
    assert "0.150 behind on the mean ROC AUC under shift" in choice_sentence(alt, 0.01, "shift")
    text = selection_sentence(alt, "shift")
    assert text.startswith("The chosen pair keeps a mean ROC AUC of 0.750 over the shifted films and 0.650 on its "
                           "worst shift")
    assert "Plain validation ROC AUC would have chosen baseline with the pixel MSE score (0.900 against 0.800)" in text
    assert text.endswith("falls to 0.600 on average under shift and to 0.500 on its worst (border masked (8% frame)).")
    same = _alternatives(_under_shift(variants, [0.8, 0.7]), "shift")
    assert selection_sentence(same, "shift").endswith("Plain validation ROC AUC would have chosen the same pair.")
    assert selection_sentence(alt, "plain") == "The shift benchmark was not part of this run's choice."
    spec = shift_specificity_sentence(alt.iloc[0], 0.95)
    assert "to keep 95% of them" in spec and "80.0% of normal films on average" in spec and "50.0%" in spec

    shifts = pd.DataFrame([(v, sc, sh, 0.7, 0.9) for v, sc in (("baseline", "mse"), ("masked", "features"))
                           for sh in ("none", "darker (gamma 1.5)")],
                          columns=["variant", "score", "shift", "roc_auc", "specificity"])
    shifts.loc[shifts["variant"] == "masked", "roc_auc"] = [0.8, 0.75]
    table = shift_comparison_table(shifts, alt)
    assert list(table.columns) == ["Shift", "ROC AUC, chosen", "Normals kept, chosen", "ROC AUC, best plain",
                                   "Normals kept, best plain"]
    assert list(table["ROC AUC, chosen"]) == [0.8, 0.75] and list(table["Shift"]) == ["none", "darker (gamma 1.5)"]
    assert list(shift_comparison_table(shifts, same).columns) == ["Shift", "ROC AUC, chosen", "Normals kept, chosen"]
    with_normals = shift_comparison_table(shifts.assign(normals_roc_auc=0.6), same)
    assert list(with_normals.columns) == ["Shift", "ROC AUC, chosen", "ROC AUC, normals shifted, chosen",
                                          "Normals kept, chosen"]


def test_choosing_with_the_normals_shifted_names_both_figures():
    variants = _under_shift(pairs([("baseline", "mse", 0.9), ("masked", "features", 0.8)]), [0.8, 0.75])
    variants = variants.assign(val_shift_normals_roc_auc_mean=[0.5, 0.7], val_shift_normals_roc_auc_worst=[0.3, 0.6],
                               val_shift_normals_worst=["zoom in (x1.15)", "darker (gamma 1.5)"])
    alt = _alternatives(variants, "normals")
    assert list(alt["variant"]) == ["masked", "baseline"]  # by the normals-shifted mean, not the every-film one
    assert "0.200 behind on the mean ROC AUC with the normal films shifted" in choice_sentence(alt, 0.01, "normals")
    text = selection_sentence(alt, "normals")
    assert "; with only the normal films shifted, 0.700 on average and 0.600 on the worst shift (darker (gamma 1.5))." in text
    assert text.endswith("falls to 0.500 on average with the normal films shifted and to 0.300 on its worst "
                         "(zoom in (x1.15)).")
    assert list(best_score_per_autoencoder(alt).columns[3:5]) == ["Mean ROC AUC under shift",
                                                                  "Mean ROC AUC, normals shifted"]


def test_family_sentence(alt):
    text = family_sentence(alt)
    assert "(1 - SSIM of baseline, validation ROC AUC 0.780) does not beat" in text
    assert text.endswith("(encoder-feature Mahalanobis of masked, 0.800).")
    assert " beats " in family_sentence(alt[alt["variant"] == "baseline"])
    assert family_sentence(alt[alt["score"] == "mse"]) == ""


def test_mse_sentence_is_markdown_with_its_reference(alt):
    pays = mse_sentence(alt)
    assert isinstance(pays, Markdown) and "pays off" in pays.data and "0.800 against 0.700" in pays.data
    assert pays.data.endswith("(@tbl-anomaly-alternatives).")
    best_mse = alt.assign(val_roc_auc=np.where(alt["score"] == "mse", 0.9, alt["val_roc_auc"]))
    assert mse_sentence(_alternatives(best_mse, "plain")).data == (
        "Looking beyond the pixel MSE does not pay off on validation: no other score beats the best pixel MSE "
        "(0.900; @tbl-anomaly-alternatives).")
    assert mse_sentence(alt[alt["score"] != "mse"]).data == ""


# -- test ------------------------------------------------------------------------------------------
def test_chosen_test_table():
    rows = [{"comparison": c, "metric": m, "value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
            for c in ("pneumonia", "bacterial", "viral")
            for m in ("roc_auc", "pr_auc", "sensitivity", "specificity", "balanced_accuracy", "tn")]
    table = chosen_test_table(pd.DataFrame(rows))
    assert list(table.columns) == ["Metric", "normal vs pneumonia", "normal vs bacterial", "normal vs viral"]
    assert len(table) == 5 and table.iloc[0, 1] == "0.500 [0.400, 0.600]"


def test_target_sentence():
    assert target_sentence(0.93).startswith("reaches the target of 0.90 and is above the 0.876")
    assert target_sentence(0.88).startswith("is below the target of 0.90 but above the 0.876")
    assert target_sentence(0.80).startswith("is below both the target of 0.90 and the 0.876")
    assert "@" not in target_sentence(0.8)  # the qmd carries the citation


def test_specificity_sentence():
    close = specificity_sentence({"value": 0.93, "ci_low": 0.90, "ci_high": 0.97}, 0.95)
    assert close == ("On test the threshold clears 93.0% of normal images (specificity 0.930 [0.900, 0.970]), "
                     "close to the nominal 95% it was set to on validation normals.")
    low = specificity_sentence({"value": 0.80, "ci_low": 0.70, "ci_high": 0.90}, 0.95)
    assert "below the nominal 95%" in low and "the test normals score higher" in low
    high = specificity_sentence({"value": 0.99, "ci_low": 0.97, "ci_high": 1.0}, 0.95)
    assert "above the nominal 95%" in high and high.endswith("score lower than the validation normals.")
    undefined = specificity_sentence({"value": 0.8, "ci_low": math.nan, "ci_high": math.nan}, 0.95)
    assert "[CI undefined]" in undefined and "below the nominal" in undefined


def test_kind_and_supervised_sentences():
    viral = kind_sentence(0.9, 0.7, "mse")
    assert viral.startswith("Viral pneumonia is the harder anomaly (ROC AUC 0.700 against 0.900")
    assert viral.endswith("reconstructed more like a normal chest.")
    assert kind_sentence(0.9, 0.7, "features").endswith("stay closer to those of normal chests.")
    assert kind_sentence(0.7, 0.9, "mse").startswith("Bacterial pneumonia is not the easier anomaly here (ROC AUC 0.700")
    assert supervised_sentence(0.95, 0.80).endswith("gives up 0.150 of it for never seeing a sick lung.")
    assert supervised_sentence(0.80, 0.85).endswith("matches or beats it without ever seeing a sick lung.")


# -- the section on the smoke entries --------------------------------------------------------------
#: Every attribute ``report/_anomaly.qmd`` reads.
QMD_NAMES = """intensity_description intensity_text train_images val_normal_images n_ae latent latent_small
latent_large knn_k depth xrv_text quantile chosen_variant resolution decode_resolution grey_levels width
chosen_latent parameters lr_text weight_decay_text batch_size epochs patience aug_text platform wall_seconds
train_seconds score_seconds bootstrap test_seconds best_fit training_table history val_neg val_pos score_name
val_roc_auc choice_text best_score_family best_variant_mean family_text alternatives_table scores ae_names
score_keys chosen_column extra test_images test_patients auc spec_text n_examples test_table threshold
hist_xlabel example_input example_reconstruction example_residual example_labels example_scores target_text
kind_text sup_text norm_discussion mse_text n_alternatives n_val se epoch_text where selection_name n_shifts
selection_text shift_table shift_spec_text reference_text""".split()


@pytest.mark.slow
def test_anomaly_section_reads_the_entries(smoke_entries):
    a = anomaly_section(smoke_entries["anomaly"], smoke_entries["binary"])
    for name in QMD_NAMES:
        getattr(a, name)
    for name in ("latent", "latent_small", "latent_large", "n_ae", "parameters", "train_images", "n_alternatives",
                 "n_val", "val_pos", "val_neg", "batch_size", "epochs", "bootstrap"):
        assert type(getattr(a, name)) is int, name
    assert a.n_val == a.val_pos + a.val_neg and a.n_alternatives == len(a.alternatives_table)
    assert a.n_alternatives == a.n_ae * len(SCORES) + len(a.extra)
    assert a.chosen_column in a.scores.columns and a.score_keys == list(SCORES)
    assert a.alternatives_table["Validation ROC AUC"].iloc[0] == pytest.approx(a.val_roc_auc)
    assert set(a.best_score_per_autoencoder["Autoencoder"]) >= set(a.ae_names)
    assert len(a.best_autoencoder_per_score) == len(SCORES)
    assert len(a.training_table) == a.n_ae and a.best_fit in a.ae_names
    assert len(a.example_scores) == a.n_examples == len(a.example_input) == len(a.example_labels)
    assert isinstance(a.mse_text, Markdown) and isinstance(a.epoch_text, Markdown)
    for name in QMD_NAMES:  # plain sentences carry no cross-reference (Quarto would break it)
        value = getattr(a, name)
        if isinstance(value, str):
            assert "@" not in value, name
    assert 0 < a.auc["value"] <= 1 and a.supervised == pytest.approx(smoke_entries["binary"].metrics["test_roc_auc"])
