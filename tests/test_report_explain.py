"""The Task 4 report section: sentence and table helpers on tiny tables, and the section on
the session's smoke entries."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.display import Markdown

from pneumo.data import CLASSES
from pneumo.explain import METHODS, NETWORKS
from pneumo.report import explain as rx
from pneumo.report.explain import builder as rx_builder
from pneumo.report.explain import images as rx_images
from pneumo.report.section import Section

QMD = Path(__file__).resolve().parents[1] / "report" / "_explain.qmd"


def _text(value) -> str:
    return value.data if isinstance(value, Markdown) else value


# -- names and the chosen images -------------------------------------------------------------------
def test_method_names_read_inside_a_sentence():
    assert rx.method_name("integrated_gradients") == "integrated gradients"
    assert rx.method_name("gradcam") == "Grad-CAM"
    assert rx.method_name("shap") == "SHAP"
    assert rx.method_name("random") == "random order"
    assert rx.method_list([]) == "none of the methods"
    assert rx.method_list(["gradcam", "shap"]) == "Grad-CAM and SHAP"
    assert rx.method_list(list(METHODS)) == "Grad-CAM, integrated gradients and SHAP"


def _images(groups) -> pd.DataFrame:
    return pd.DataFrame([{"label": label, "outcome": outcome, "binary_predicted": "pneumonia",
                          "multiclass_predicted": "viral"} for label, outcome in groups])


def test_missing_groups_text_follows_the_groups():
    every = [(c, o) for c in CLASSES for o in ("correct", "misclassified")]
    assert rx.missing_groups_text(_images(every)) == "Every class has images in both groups."
    one = rx.missing_groups_text(_images(every[:-1]))
    assert one == "The test split holds no viral misclassified image, so that group is missing."
    two = rx.missing_groups_text(_images(every[1:-1]))
    assert "no normal correct and no viral misclassified image" in two and "those groups are missing" in two


def test_image_labels_and_first_per_group():
    images = _images([("normal", "correct"), ("normal", "correct"), ("viral", "misclassified"),
                      ("viral", "correct")])
    assert rx.image_labels(images)[0] == "true: normal\n1a: pneumonia\n1b: viral"
    assert rx_images._first_per_group(images).tolist() == [0, 2, 3]
    assert rx_images._first_per_group(images, "correct").tolist() == [0, 3]


def test_gradcam_blocks_are_ordered_by_depth():
    regions = pd.DataFrame({"method": ["gradcam", "gradcam_block10", "gradcam_block2", "shap", "gradcam_block1"]})
    assert rx.gradcam_blocks(regions) == ["block1", "block2", "block10"]


# -- sanity checks ---------------------------------------------------------------------------------
def _methods(deletion: dict, insertion: dict, rho_all=0.3, rho_head=0.8) -> pd.DataFrame:
    """A ``methods`` table: per network the given curve AUCs (random: 0.5 / 0.5)."""
    rows = []
    for net in NETWORKS:
        for method in (*METHODS, "random"):
            row = {"network": net, "method": method,
                   "deletion_auc": 0.5 if method == "random" else deletion[method],
                   "insertion_auc": 0.5 if method == "random" else insertion[method]}
            if method != "random":
                row.update(rho_all=rho_all, rho_head=rho_head, lungs=0.4, border=0.1)
            for col in ("deletion_auc", "insertion_auc", "rho_all", "rho_head", "lungs", "border"):
                if col in row:
                    row[f"{col}_ci_low"], row[f"{col}_ci_high"] = row[col] - 0.05, row[col] + 0.05
            rows.append(row)
    return pd.DataFrame(rows)


def test_method_table_dashes_what_the_random_order_lacks():
    table = rx.method_table(_methods(dict.fromkeys(METHODS, 0.3), dict.fromkeys(METHODS, 0.7)))
    assert len(table) == 2 * (len(METHODS) + 1)
    rnd = table[table["Method"] == "random order"].iloc[0]
    assert rnd["ρ, all random"] == "–" and rnd["In lungs"] == "–"
    assert rnd["Deletion AUC ↓"] == "0.500 [0.450, 0.550]"
    first = table.iloc[0]
    assert first["Network"] == "1a" and first["Method"] == "Grad-CAM" and first["In lungs"] == "40.0% [35.0%, 45.0%]"


def test_beat_text_covers_every_count():
    good, bad = 0.3, 0.7
    all_beat = _methods(dict.fromkeys(METHODS, good), dict.fromkeys(METHODS, bad))
    beat = {net: rx.beats_random(all_beat, net) for net in NETWORKS}
    assert beat["binary"] == list(METHODS)
    assert rx.beat_text(beat).startswith(
        "For network 1a, Grad-CAM, integrated gradients and SHAP beat the random order on both curves.")

    none = {net: [] for net in NETWORKS}
    assert "For network 1b, none of the methods beat the random order on both curves." in rx.beat_text(none)

    one = _methods({"gradcam": good, "integrated_gradients": bad, "shap": good},
                   {"gradcam": bad, "integrated_gradients": bad, "shap": 0.4})  # SHAP: insertion below random
    beat = {net: rx.beats_random(one, net) for net in NETWORKS}
    assert beat["multiclass"] == ["gradcam"]
    assert "Grad-CAM beats the random order on both curves; integrated gradients and SHAP do not." in rx.beat_text(beat)

    two = {net: ["gradcam", "shap"] for net in NETWORKS}
    assert "Grad-CAM and SHAP beat the random order on both curves; integrated gradients does not." in rx.beat_text(two)


def test_pass_text_follows_both_criteria():
    rho = {net: {"gradcam": 0.1, "integrated_gradients": 0.6, "shap": 0.2} for net in NETWORKS}
    beat = {"binary": ["gradcam", "shap"], "multiclass": ["gradcam"]}
    passes = rx.passing_methods(rho, beat)
    assert passes == ["gradcam"]  # IG: ρ too high; SHAP: not better than random for 1b
    assert rx.pass_text(passes).endswith("Grad-CAM passes; integrated gradients and SHAP do not.")
    assert rx.pass_text(list(METHODS)).endswith("Grad-CAM, integrated gradients and SHAP pass.")
    assert rx.pass_text(["gradcam", "shap"]).endswith("pass; integrated gradients does not.")
    assert rx.pass_text([]).startswith("No method passes both criteria")


def test_randomisation_text_cites_the_table_only_when_the_orders_differ():
    same = {net: {"gradcam": 0.1, "integrated_gradients": 0.4, "shap": 0.2} for net in NETWORKS}
    text = rx.randomisation_text(same)
    assert isinstance(text, Markdown)
    assert _text(text) == ("After every layer is re-initialised, the maps of integrated gradients stay closest to "
                           "the trained network's (network 1b: ρ = 0.40), those of Grad-CAM change most (ρ = 0.10); "
                           "network 1a gives the same order.")
    other = {**same, "binary": {"gradcam": 0.5, "integrated_gradients": 0.4, "shap": 0.2}}
    assert _text(rx.randomisation_text(other)).endswith("network 1a gives a different order (@tbl-explain-methods).")


def test_head_text_both_branches():
    sticky = {"binary": {"gradcam": 0.2, "integrated_gradients": 0.9, "shap": 0.7},
              "multiclass": {"gradcam": 0.6, "integrated_gradients": 0.8, "shap": 0.4}}
    text = rx.head_text(sticky)
    assert isinstance(text, Markdown)
    assert "leaves the maps of integrated gradients largely unchanged" in _text(text)
    assert "@adebayo2018" in _text(text)
    loose = {net: dict.fromkeys(METHODS, 0.1) for net in NETWORKS}
    assert _text(rx.head_text(loose)).endswith("(ρ at most 0.5), so all three depend on the decision layer.")


# -- regions ---------------------------------------------------------------------------------------
def _test_regions(border: dict[str, float], lungs: float = 0.3) -> pd.DataFrame:
    """Every-test-image Grad-CAM shares: 4 patients per class, 2 images each, constant per class
    up to a small spread."""
    rows = []
    for net in NETWORKS:
        for c, label in enumerate(CLASSES):
            for p in range(4):
                for k in range(2):
                    b = border[label] + 0.01 * (p - 1.5)
                    rows.append({"network": net, "label": label, "patient": f"{label}{p}", "relpath": f"{label}{p}_{k}",
                                 "lungs": lungs + 0.01 * c, "border": b, "other": 1 - lungs - 0.01 * c - b})
    return pd.DataFrame(rows)


def test_region_summary_and_table():
    frame = _test_regions({"normal": 0.1, "bacterial": 0.2, "viral": 0.3})
    summary = rx.region_summary(frame, by_class=True, n_boot=200, seed=0)
    assert len(summary) == len(NETWORKS) * (len(CLASSES) + 1) * len(rx.REGIONS)
    row = summary.set_index(["network", "label", "region"]).loc[("binary", "viral", "border")]
    assert row["value"] == pytest.approx(0.3) and row["ci_low"] <= 0.3 <= row["ci_high"] and row["images"] == 8
    everything = summary[(summary["label"] == "all") & (summary["region"] == "border")]
    assert everything["value"].tolist() == pytest.approx([0.2, 0.2]) and (everything["images"] == 24).all()
    table = rx.region_table(summary)
    assert table.columns.tolist() == ["Network", "True class", "Images", "In lungs", "In border", "Elsewhere"]
    assert table["True class"].tolist() == [*CLASSES, "all", *CLASSES, "all"]
    assert table["Images"].iloc[3] == "24" and table["In border"].iloc[2].startswith("30.0% [")
    # a class without images has no row; the chosen-images variant has one row per network
    chosen = rx.region_summary(frame[frame["label"] != "viral"], by_class=False, all_label="all (chosen)", n_boot=50)
    assert rx.region_table(chosen)["True class"].tolist() == ["all (chosen)"] * len(NETWORKS)


def test_class_text():
    assert rx.class_text(None).startswith("Grad-CAM was computed on the chosen images only")
    frame = _test_regions({"normal": 0.4, "bacterial": 0.2, "viral": 0.1})
    summary = rx.region_summary(frame, by_class=True, n_boot=50)
    text = rx.class_text(summary)
    assert text.startswith("Network 1a attends least to the lungs on normal images (30.0% of its Grad-CAM mass "
                           "inside the template) and most to the border on normal images (40.0%).")
    assert "Network 1b" in text


def test_lung_and_extra_text():
    share = {"binary": {"lungs": 0.4, "border": 0.3, "other": 0.3},
             "multiclass": {"lungs": 0.2, "border": 0.1, "other": 0.7}}
    text = rx.lung_text(share, lung_area=0.2, border_area=0.25)
    assert ("Network 1a puts 40.0% of its Grad-CAM mass inside the lung template, 2.0 times the template's share "
            "of the image (20.0%), and 30.0% in the border frame, 1.2 times the frame's area share (25.0%).") in text
    assert "and 10.0% in the border frame, less than the frame's area share (25.0%)." in text
    assert rx.extra_text(share).startswith("For network 1a, 30.0% falls elsewhere in the image")


def test_shortcut_text_branches():
    inside = {net: {"lungs": 0.7, "border": 0.05, "other": 0.25} for net in NETWORKS}
    text = rx.shortcut_text(inside, 0.25, {})
    assert isinstance(text, Markdown)
    assert _text(text) == ("Neither network puts more of its Grad-CAM mass on the border frame (film edges, "
                           "collimation, markers, text) than a uniform map would. Most of the mass lies inside the "
                           "lung template, so the networks mostly look where the disease is.")

    one = {"binary": {"lungs": 0.3, "border": 0.4, "other": 0.3},
           "multiclass": {"lungs": 0.6, "border": 0.1, "other": 0.3}}
    text = _text(rx.shortcut_text(one, 0.25, {}))
    assert text.startswith("Network 1a attends to the border frame more than a uniform map would.")
    assert "most of the mass lies outside the lung template: 70.0% for network 1a and 40.0% for network 1b" in text
    assert "[@zech2018; @degrave2021]" in text

    both = {net: {"lungs": 0.3, "border": 0.4, "other": 0.3} for net in NETWORKS}
    assert _text(rx.shortcut_text(both, 0.25, {})).startswith("Networks 1a and 1b attend to the border frame")

    clear = rx.border_by_class(rx.region_summary(_test_regions({"normal": 0.05, "bacterial": 0.3, "viral": 0.4}),
                                                 by_class=True, n_boot=200))
    assert set(clear) == set(NETWORKS) and set(clear["binary"]) == set(CLASSES)
    text = _text(rx.shortcut_text(inside, 0.25, clear))
    assert ("On pneumonia images the border frame receives more of the mass than on normal images (network 1a: "
            "30.0% bacterial and 40.0% viral against 5.0% normal; network 1b:") in text
    assert "non-overlapping 95% intervals" in text

    overlapping = rx.border_by_class(rx.region_summary(_test_regions({"normal": 0.2, "bacterial": 0.2, "viral": 0.21}),
                                                       by_class=True, n_boot=200))
    assert _text(rx.shortcut_text(inside, 0.25, overlapping)).endswith(
        "The share on the border frame does not differ clearly between normal and pneumonia images, so the frame "
        "is not a class cue on its own.")
    assert rx.border_by_class(None) == {}


# -- depth and neurons -----------------------------------------------------------------------------
def _block_regions(first_lungs: float, last_lungs: float) -> pd.DataFrame:
    rows = []
    for net in NETWORKS:
        for block, lungs in (("block1", first_lungs), ("block2", 0.5), ("block3", last_lungs)):
            for i in range(2):
                rows.append({"network": net, "method": f"gradcam_{block}", "lungs": lungs + 0.01 * i, "border": 0.1})
        rows.append({"network": net, "method": "gradcam", "lungs": 0.9, "border": 0.0})
    return pd.DataFrame(rows)


def test_block_shares_and_depth_text():
    regions = _block_regions(0.1, 0.6)
    shares = rx.block_shares(regions)
    assert shares.columns.tolist() == ["network", "block", "lungs", "border"]
    assert len(shares) == 2 * 3 and shares["lungs"].iloc[0] == pytest.approx(0.105)
    blocks = rx.gradcam_blocks(regions)
    assert rx.depth_text(shares, blocks).startswith(
        "For network 1a the lung share goes from 10.5% at block1 to 60.5% at block3, and the border share "
        "from 10.0% to 10.0%.")
    assert rx.depth_conclusion(shares, blocks).startswith("Across depth the attribution moves towards the lungs")
    falling = rx.block_shares(_block_regions(0.6, 0.1))
    assert rx.depth_conclusion(falling, blocks).startswith("The lung share does not grow steadily with depth")


def test_class_channels_table_and_text():
    channels = pd.DataFrame({"class": ["normal", "normal", "viral"], "channel": [3, 5, 7], "rank": [1, 2, 1],
                             "d": [1.25, 0.8, 2.5], "mean_in": [0.4, 0.3, 0.9], "mean_out": [0.2, 0.2, 0.1],
                             "top_patch_share_of_class": [0.5, 1.0, 0.75]})
    table = rx.class_channel_table(channels)
    assert table["Cohen's d"].tolist() == ["1.25", "0.80", "2.50"]
    assert table["Top patches from the class"].tolist() == ["50%", "100%", "75%"]
    assert rx.neuron_text(channels) == ("The strongest separating channel per class reaches d = 1.2 for normal, "
                                        "d = 2.5 for viral; normal has the least distinctive channel.")
    assert rx.neuron_text(channels.iloc[:0]) == "No last-block channel separates a class from the others."


def test_data_text_and_phases():
    assert rx.data_text(True).startswith("On the synthetic phantoms")
    assert rx.data_text(False).startswith("The Kaggle images come from one hospital")
    phases = {"binary_attributions": 1, "multiclass_attributions": 2, "binary_randomisation": 3, "neurons": 4}
    times = rx_builder._phase_seconds({"wall_s": 10, "phases_s": phases})
    assert times == {"wall": 10.0, "attributions": 3.0, "randomisation": 3.0, "perturbation": 0.0, "neurons": 4.0}


# -- the section on the smoke entries --------------------------------------------------------------
def _qmd_names() -> set[str]:
    return set(re.findall(r"\bx\.(\w+)", QMD.read_text(encoding="utf-8")))


def _check_section(x: Section) -> None:
    missing = _qmd_names() - set(vars(x))
    assert not missing, f"_explain.qmd reads attributes the section lacks: {sorted(missing)}"
    for name in ("missing_text", "stages", "beat_text", "pass_text", "region_source", "lung_text", "extra_text",
                 "class_text", "depth_text", "depth_conclusion", "neuron_text", "data_text", "neuron_network",
                 "where", "platform", "binary_entry", "multiclass_entry"):
        value = getattr(x, name)
        assert isinstance(value, str) and value.strip() and "nan" not in value.split(), name
        assert "@" not in value, f"{name} carries a reference but is a plain string"
    for name in ("rand_text", "head_text", "shortcut_text"):
        assert isinstance(getattr(x, name), Markdown), name
    for name in ("n", "per_group", "ig_steps", "shap_background", "shap_samples", "perturbation_steps",
                 "random_orders", "neuron_channels", "maxact_steps", "patch_images", "resolution", "last_grid",
                 "sanity_n", "field_first", "field_last"):
        assert isinstance(getattr(x, name), int) and getattr(x, name) > 0, name
    for name in ("method_table", "region_table", "class_table", "block_shares", "randomisation"):
        assert isinstance(getattr(x, name), pd.DataFrame) and len(getattr(x, name)), name
    assert set(x.enrichment) == set(NETWORKS) and all(np.isfinite(v) for v in x.enrichment.values())
    assert x.best_deletion["multiclass"] in {rx.method_name(m) for m in METHODS}
    assert 0 < x.lung_area < 1 and 0 < x.border_area < 1
    # figure inputs line up: one row label per image, one map per network and method
    assert len(x.overlay_labels) == len(x.overlay_images) > 0
    assert {net: set(maps) for net, maps in x.overlay_maps.items()} == {net: set(METHODS) for net in NETWORKS}
    assert all(m.shape[0] == len(x.overlay_images) for maps in x.overlay_maps.values() for m in maps.values())
    assert all(set(maps) == set(x.blocks) for maps in x.depth_maps.values())
    assert len(x.random_labels) == len(x.random_images) == len(x.random_maps["gradcam"])
    assert set(x.maxact) == set(x.patches) == set(x.channels)
    assert x.lung_mask.shape == x.mean_image.shape == x.border_mask.shape


def test_explain_section_on_smoke_entries(smoke_entries):
    x = rx.explain_section(smoke_entries["explain"], smoke_entries["binary"], smoke_entries["multiclass"])
    _check_section(x)
    assert x.synthetic and x.data_text == rx.data_text(True)
    assert x.region_source == "every test image"
    assert x.binary_entry == smoke_entries["binary"].path.name


class _ChosenOnly:
    """The smoke entry as if Grad-CAM had not been run on every test image."""

    def __init__(self, entry):
        self._entry = entry

    def __getattr__(self, name):
        return getattr(self._entry, name)

    def has_table(self, name: str) -> bool:
        return name != "test_gradcam_regions" and self._entry.has_table(name)


def test_explain_section_without_every_test_image(smoke_entries):
    x = rx.explain_section(_ChosenOnly(smoke_entries["explain"]), smoke_entries["binary"], smoke_entries["multiclass"])
    _check_section(x)
    assert x.region_source == "the chosen test images"
    assert x.region_table["True class"].tolist() == ["all (chosen)"] * len(NETWORKS)
    assert x.class_text.startswith("Grad-CAM was computed on the chosen images only")
