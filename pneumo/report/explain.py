"""Task 4 (explanations): what ``report/_explain.qmd`` shows, computed from the cache entries.

:func:`explain_section` reads the Task 4 entry (and the Task 1 entries it explains) and
returns the numbers, display tables, figure inputs and sentences of the section. The
sentence helpers below take small tables, so each branch of a conditional sentence can be
tested on its own.

Sentences that carry a citation or a cross-reference are returned as Markdown
(:func:`pneumo.report.tables.markdown`) so that Quarto resolves them.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pneumo.data import CLASSES
from pneumo.explain import METHOD_NAMES, METHODS, NETWORKS
from pneumo.metrics import mean_ci
from pneumo.plots.explain import NETWORK_LABELS
from pneumo.report.entries import ReportEntry, platform_text, task_entry, where
from pneumo.report.section import Section
from pneumo.report.tables import markdown
from pneumo.report.text import count, fmt_ci, join_words, num, pct

log = logging.getLogger(__name__)

__all__ = ["explain_section", "method_name", "method_list", "missing_groups_text", "image_labels",
           "gradcam_blocks", "method_table", "beats_random", "beat_text", "passing_methods", "pass_text",
           "randomisation_text", "head_text", "region_summary", "region_table", "class_text", "lung_text",
           "extra_text", "shortcut_text", "border_by_class", "block_shares", "depth_text", "depth_conclusion",
           "class_channel_table", "neuron_text", "data_text"]

#: The regions of :meth:`pneumo.explain.lungs.LungTemplate.regions`, columns of the region tables.
REGIONS = ("lungs", "border", "other")
#: The network whose images, lung template and randomised maps the figures show (the task
#: chooses the images by this network's outcome).
SHOWN = "multiclass"
#: A map "depends on the weights" when its rank correlation with the trained maps is below this.
RHO_CUTOFF = 0.5
_NUMBER_WORDS = ("no", "one", "both", "all three", "all four", "all five")


# -- names ---------------------------------------------------------------------------------------
def method_name(method: str) -> str:
    """A method's name as it reads inside a sentence: ``"integrated gradients"``, ``"Grad-CAM"``.

    :data:`pneumo.explain.METHOD_NAMES` starts each name with a capital; names that are not
    acronyms or proper names (no capital after the first letter) are lowered.
    """
    name = METHOD_NAMES.get(method, method)
    return name if any(c.isupper() for c in name[1:]) else name[:1].lower() + name[1:]


def method_list(methods: Sequence[str]) -> str:
    """``"Grad-CAM, integrated gradients and SHAP"``; ``"none of the methods"`` when empty."""
    return join_words([method_name(m) for m in methods]) if methods else "none of the methods"


def _network(name: str) -> str:
    return NETWORK_LABELS.get(name, name)


# -- the chosen images ---------------------------------------------------------------------------
def missing_groups_text(images: pd.DataFrame) -> str:
    """Which (class, outcome) groups have no chosen image, as a sentence.

    Parameters
    ----------
    images
        The entry's ``images`` table (``label``, ``outcome`` per chosen image).
    """
    present = set(zip(images["label"], images["outcome"]))
    missing = [f"{label} {outcome}" for label in CLASSES for outcome in ("correct", "misclassified")
               if (label, outcome) not in present]
    if not missing:
        return "Every class has images in both groups."
    which = "that group is" if len(missing) == 1 else "those groups are"
    return f"The test split holds no {' and no '.join(missing)} image, so {which} missing."


def image_labels(images: pd.DataFrame) -> list[str]:
    """Figure row labels: the true class and each network's prediction, one line each."""
    return ["\n".join([f"true: {row['label']}",
                       *(f"{_network(net)}: {row[f'{net}_predicted']}" for net in NETWORKS)])
            for _, row in images.iterrows()]


def _first_per_group(images: pd.DataFrame, outcome: str | None = None) -> np.ndarray:
    """Positions of the first image of every (class, outcome) group (only ``outcome`` if given)."""
    first = ~images.duplicated(["label", "outcome"]).to_numpy()
    if outcome is not None:
        first &= (images["outcome"] == outcome).to_numpy()
    return np.flatnonzero(first)


def gradcam_blocks(regions: pd.DataFrame) -> list[str]:
    """The blocks with a Grad-CAM map (``gradcam_block<i>`` methods), input side first."""
    blocks = {m.split("_")[-1] for m in regions["method"] if str(m).startswith("gradcam_block")}
    return sorted(blocks, key=lambda b: int(b.replace("block", "")))


# -- sanity checks -------------------------------------------------------------------------------
def _ci_cell(row: pd.Series, column: str, *, percent: bool = False) -> str:
    return fmt_ci({"value": row[column], "ci_low": row[f"{column}_ci_low"], "ci_high": row[f"{column}_ci_high"]},
                  3, percent=percent)


def method_table(methods: pd.DataFrame) -> pd.DataFrame:
    """The method comparison as a display table (one row per network and method).

    Parameters
    ----------
    methods
        The entry's ``methods`` table: ``network, method`` and, per figure, the value with
        ``_ci_low`` / ``_ci_high`` columns (``rho_head``, ``rho_all``, ``deletion_auc``,
        ``insertion_auc``, ``lungs``, ``border``; the random order has only the curves).
    """
    rows = []
    for _, row in methods.iterrows():
        sane = row["method"] != "random"  # the random order has no map to correlate or locate
        rows.append({
            "Network": _network(row["network"]), "Method": method_name(row["method"]),
            "ρ, head random": _ci_cell(row, "rho_head") if sane else "–",
            "ρ, all random": _ci_cell(row, "rho_all") if sane else "–",
            "Deletion AUC ↓": _ci_cell(row, "deletion_auc"),
            "Insertion AUC ↑": _ci_cell(row, "insertion_auc"),
            "In lungs": _ci_cell(row, "lungs", percent=True) if sane else "–",
            "In border": _ci_cell(row, "border", percent=True) if sane else "–",
        })
    return pd.DataFrame(rows)


def beats_random(methods: pd.DataFrame, network: str) -> list[str]:
    """Methods whose mean deletion AUC is below and insertion AUC above the random order's."""
    m = methods.set_index(["network", "method"])
    rnd = m.loc[(network, "random")]
    return [k for k in METHODS if m.loc[(network, k), "deletion_auc"] < rnd["deletion_auc"]
            and m.loc[(network, k), "insertion_auc"] > rnd["insertion_auc"]]


def beat_text(beat: Mapping[str, Sequence[str]]) -> str:
    """Per network, which methods beat the random order on both curves (and which do not)."""
    sentences = []
    for net, winners in beat.items():
        text = (f"For network {_network(net)}, {method_list(winners)} "
                f"{'beats' if len(winners) == 1 else 'beat'} the random order on both curves")
        losers = [m for m in METHODS if m not in winners]
        if winners and losers:
            text += f"; {method_list(losers)} {'does' if len(losers) == 1 else 'do'} not."
        else:
            text += "."
        sentences.append(text)
    return " ".join(sentences)


def passing_methods(rho_all: Mapping[str, Mapping[str, float]], beat: Mapping[str, Sequence[str]]) -> list[str]:
    """Methods with ρ below :data:`RHO_CUTOFF` after full randomisation that also beat the random
    order, for every network."""
    return [m for m in METHODS if all(rho_all[net][m] < RHO_CUTOFF and m in beat[net] for net in rho_all)]


def pass_text(passes: Sequence[str]) -> str:
    """Which methods pass both sanity checks, as a sentence."""
    criteria = (f"ρ below {RHO_CUTOFF} after every layer is re-initialised, and both curves better than "
                "the random order, for both networks")
    if not passes:
        return f"No method passes both criteria ({criteria}), so every map here should be read with caution."
    fails = [m for m in METHODS if m not in passes]
    text = f"By both criteria ({criteria}) {method_list(passes)} {'passes' if len(passes) == 1 else 'pass'}"
    return text + (f"; {method_list(fails)} {'does' if len(fails) == 1 else 'do'} not." if fails else ".")


def randomisation_text(rho_all: Mapping[str, Mapping[str, float]], main: str = SHOWN):
    """Which method's maps survive full randomisation best and worst (Markdown: it may cite a table).

    Parameters
    ----------
    rho_all
        ``{network: {method: mean ρ after every layer is re-initialised}}``.
    main
        The network whose numbers are quoted; the others are compared with its order.
    """
    def order(net):
        return max(METHODS, key=lambda m: rho_all[net][m]), min(METHODS, key=lambda m: rho_all[net][m])

    most, least = order(main)
    others = [net for net in rho_all if net != main]
    same = all(order(net) == (most, least) for net in others)
    return markdown(
        f"After every layer is re-initialised, the maps of {method_name(most)} stay closest to the trained "
        f"network's (network {_network(main)}: ρ = {num(rho_all[main][most], 2)}), those of "
        f"{method_name(least)} change most (ρ = {num(rho_all[main][least], 2)}); "
        f"network {join_words([_network(n) for n in others])} gives "
        + ("the same order." if same else "a different order (@tbl-explain-methods)."))


def head_text(rho_head: Mapping[str, Mapping[str, float]]):
    """What re-initialising only the classifier head does to the maps (Markdown: it cites)."""
    sticky = [m for m in METHODS if min(rho_head[net][m] for net in rho_head) > RHO_CUTOFF]
    if sticky:
        return markdown(
            f"Re-initialising only the classifier head leaves the maps of {method_list(sticky)} largely "
            f"unchanged (ρ above {RHO_CUTOFF} for both networks): they mostly reflect the image and the "
            "convolutional features rather than which class is explained, the behaviour @adebayo2018 warn "
            "about for gradient-times-input methods.")
    return markdown(
        "Already re-initialising only the classifier head changes every method's maps substantially "
        f"(ρ at most {RHO_CUTOFF}), so {_NUMBER_WORDS[min(len(METHODS), len(_NUMBER_WORDS) - 1)]} depend "
        "on the decision layer.")


def _by_network(methods: pd.DataFrame, column: str) -> dict[str, dict[str, float]]:
    m = methods.set_index(["network", "method"])
    return {net: {k: float(m.loc[(net, k), column]) for k in METHODS} for net in NETWORKS}


# -- where the attribution falls -----------------------------------------------------------------
def region_summary(frame: pd.DataFrame, *, by_class: bool, all_label: str = "all", n_boot: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """Mean share of each region with its 95% patient-bootstrap interval, per network (and class).

    Parameters
    ----------
    frame
        One row per image and network: ``network``, ``label``, ``patient`` and the
        :data:`REGIONS` shares.
    by_class
        Also one group per true class (in :data:`pneumo.data.CLASSES` order) before each
        network's row over all images.
    all_label
        The ``label`` of the all-images rows.

    Returns
    -------
    pandas.DataFrame
        ``network, label, images, region, value, ci_low, ci_high`` (long: one row per region).
    """
    rows = []
    for net in NETWORKS:
        part = frame[frame["network"] == net]
        groups = [(label, part[part["label"] == label]) for label in CLASSES] if by_class else []
        for label, group in [*groups, (all_label, part)]:
            if not len(group):
                continue
            for region in REGIONS:
                value, low, high = mean_ci(group[region], group["patient"], n_boot=n_boot, seed=seed)
                rows.append({"network": net, "label": label, "images": len(group), "region": region,
                             "value": value, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["network", "label", "images", "region", "value", "ci_low", "ci_high"])


def region_table(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`region_summary` as a display table: one row per network and class."""
    names = {"lungs": "In lungs", "border": "In border", "other": "Elsewhere"}
    rows = []
    for (net, label), part in summary.groupby(["network", "label"], sort=False):
        row = {"Network": _network(net), "True class": label, "Images": count(part["images"].iloc[0])}
        for _, r in part.iterrows():
            row[names[r["region"]]] = fmt_ci(r, 3, percent=True)
        rows.append(row)
    return pd.DataFrame(rows, columns=["Network", "True class", "Images", *names.values()])


def _shares(summary: pd.DataFrame, label: str) -> dict[str, dict[str, float]]:
    """``{network: {region: mean share}}`` of the rows with ``label``."""
    part = summary[summary["label"] == label]
    return {net: dict(zip(g["region"], g["value"].astype(float))) for net, g in part.groupby("network", sort=False)}


def class_text(summary: pd.DataFrame | None) -> str:
    """Per network, the class whose images get the least lung and the most border mass.

    ``summary``: :func:`region_summary` by class, or None when Grad-CAM ran on the chosen
    images only.
    """
    if summary is None:
        return "Grad-CAM was computed on the chosen images only, too few to compare the classes."
    sentences = []
    for net, part in summary[summary["label"].isin(CLASSES)].groupby("network", sort=False):
        share = part.pivot(index="label", columns="region", values="value")
        sentences.append(
            f"Network {_network(net)} attends least to the lungs on {share['lungs'].idxmin()} images "
            f"({pct(share['lungs'].min())} of its Grad-CAM mass inside the template) and most to the border "
            f"on {share['border'].idxmax()} images ({pct(share['border'].max())}).")
    return " ".join(sentences)


def lung_text(share: Mapping[str, Mapping[str, float]], lung_area: float, border_area: float) -> str:
    """Per network, the Grad-CAM mass in the lungs and in the frame against their area shares."""
    sentences = []
    for net, s in share.items():
        ratio = s["border"] / border_area
        frame = (f"{num(ratio, 1)} times the frame's area share ({pct(border_area)})." if ratio >= 1
                 else f"less than the frame's area share ({pct(border_area)}).")
        sentences.append(
            f"Network {_network(net)} puts {pct(s['lungs'])} of its Grad-CAM mass inside the lung template, "
            f"{num(s['lungs'] / lung_area, 1)} times the template's share of the image ({pct(lung_area)}), "
            f"and {pct(s['border'])} in the border frame, {frame}")
    return " ".join(sentences)


def extra_text(share: Mapping[str, Mapping[str, float]]) -> str:
    """Per network, the Grad-CAM mass outside both the lungs and the frame."""
    return " ".join(f"For network {_network(net)}, {pct(s['other'])} falls elsewhere in the image "
                    "(mediastinum and heart, shoulders, diaphragm and abdomen)." for net, s in share.items())


def border_by_class(summary: pd.DataFrame | None) -> dict[str, dict[str, tuple[float, float, float]]]:
    """``{network: {class: (mean, low, high)}}`` of the border share (empty without per-class rows)."""
    if summary is None:
        return {}
    part = summary[(summary["region"] == "border") & summary["label"].isin(CLASSES)]
    return {net: {r["label"]: (r["value"], r["ci_low"], r["ci_high"]) for _, r in g.iterrows()}
            for net, g in part.groupby("network", sort=False)}


def _border_sentence(border: Mapping[str, Mapping[str, tuple[float, float, float]]]) -> str:
    """Whether the frame gets more mass on pneumonia images, with non-overlapping intervals."""
    normal, sick = CLASSES[0], CLASSES[1:]
    clear = [net for net, by in border.items() if set(CLASSES) <= set(by)
             and all(by[c][1] > by[normal][2] for c in sick)]
    if clear:
        per_net = "; ".join(
            f"network {_network(net)}: {join_words(f'{pct(border[net][c][0])} {c}' for c in sick)} against "
            f"{pct(border[net][normal][0])} {normal}" for net in clear)
        return (" On pneumonia images the border frame receives more of the mass than on normal images ("
                f"{per_net}, with non-overlapping 95% intervals): part of what the networks call pneumonia "
                "sits at the image edges, where there is no lung at all, a cue worth removing (by cropping or "
                "masking the frame) before trusting the accuracy of Task 1.")
    if border:
        return (" The share on the border frame does not differ clearly between normal and pneumonia images, "
                "so the frame is not a class cue on its own.")
    return ""


def shortcut_text(share: Mapping[str, Mapping[str, float]], border_area: float,
                  border: Mapping[str, Mapping[str, tuple[float, float, float]]]):
    """What the region shares say about shortcuts (Markdown: it cites).

    Parameters
    ----------
    share
        ``{network: {region: mean Grad-CAM share}}``.
    border_area
        The frame's share of the image (what a uniform map puts there).
    border
        :func:`border_by_class`.
    """
    framed = [net for net, s in share.items() if s["border"] / border_area >= 1]
    if framed:
        text = (f"{'Network' if len(framed) == 1 else 'Networks'} {join_words(_network(n) for n in framed)} "
                f"{'attends' if len(framed) == 1 else 'attend'} to the border frame more than a uniform map "
                "would. The frame holds no lung; what is there is the film edge, collimation, the side marker "
                "and text.")
    else:
        text = ("Neither network puts more of its Grad-CAM mass on the border frame (film edges, collimation, "
                "markers, text) than a uniform map would.")
    outside = {net: 1 - s["lungs"] for net, s in share.items()}
    if max(outside.values()) > 0.5:
        text += (" Yet most of the mass lies outside the lung template: "
                 + " and ".join(f"{pct(v)} for network {_network(net)}" for net, v in outside.items())
                 + ", on the mediastinum, the shoulders and neck, the diaphragm and abdomen and the frame. The "
                 "networks therefore use more than the lungs, which is where shortcut learning shows up "
                 "[@zech2018; @degrave2021]: body size and shape, positioning and exposure may differ between "
                 "the hospital's normal and pneumonia images and can be learned instead of the disease.")
    else:
        text += " Most of the mass lies inside the lung template, so the networks mostly look where the disease is."
    return markdown(text + _border_sentence(border))


# -- Grad-CAM across depth -----------------------------------------------------------------------
def block_shares(regions: pd.DataFrame) -> pd.DataFrame:
    """Mean lung and border share of Grad-CAM per network and block (``network, block, lungs, border``)."""
    cams = regions[regions["method"].str.startswith("gradcam_block")]
    return (cams.assign(block=cams["method"].str.replace("gradcam_", "", regex=False))
            .groupby(["network", "block"], sort=False)[["lungs", "border"]].mean().reset_index())


def depth_text(shares: pd.DataFrame, blocks: Sequence[str]) -> str:
    """Per network, the lung and border shares at the first and the last block."""
    s = shares.set_index(["network", "block"])
    first, last = blocks[0], blocks[-1]
    return " ".join(
        f"For network {_network(net)} the lung share goes from {pct(s.loc[(net, first), 'lungs'])} at {first} "
        f"to {pct(s.loc[(net, last), 'lungs'])} at {last}, and the border share from "
        f"{pct(s.loc[(net, first), 'border'])} to {pct(s.loc[(net, last), 'border'])}."
        for net in shares["network"].unique())


def depth_conclusion(shares: pd.DataFrame, blocks: Sequence[str]) -> str:
    """Whether the lung share grows from the first to the last block for every network."""
    s = shares.set_index(["network", "block"])
    rises = all(s.loc[(net, blocks[-1]), "lungs"] > s.loc[(net, blocks[0]), "lungs"]
                for net in shares["network"].unique())
    if rises:
        return ("Across depth the attribution moves towards the lungs, as expected of a network that builds "
                "lung-level features from edges.")
    return "The lung share does not grow steadily with depth, so the deeper features are not simply lung detectors."


# -- layers and neurons --------------------------------------------------------------------------
def class_channel_table(class_channels: pd.DataFrame) -> pd.DataFrame:
    """The class-separating channels as a display table."""
    return pd.DataFrame({
        "Class": class_channels["class"], "Channel": class_channels["channel"].astype(int),
        "Cohen's d": [num(v, 2) for v in class_channels["d"]],
        "Mean activation, class": [num(v, 2) for v in class_channels["mean_in"]],
        "Mean activation, others": [num(v, 2) for v in class_channels["mean_out"]],
        "Top patches from the class": [pct(v, 0) for v in class_channels["top_patch_share_of_class"]],
    })


def neuron_text(class_channels: pd.DataFrame) -> str:
    """The effect size of the best separating channel per class, and the least distinctive class."""
    top = class_channels[class_channels["rank"] == 1].set_index("class")
    if not len(top):
        return "No last-block channel separates a class from the others."
    return ("The strongest separating channel per class reaches "
            + ", ".join(f"d = {num(top.loc[c, 'd'], 1)} for {c}" for c in top.index)
            + f"; {top['d'].idxmin()} has the least distinctive channel.")


def data_text(synthetic: bool) -> str:
    """What the shares mean for the data at hand (phantoms or the Kaggle images)."""
    if synthetic:
        return ("On the synthetic phantoms the lesion is painted into the lung fields by construction, so these "
                "numbers show what the methods do when the signal is known to lie in the lungs; they say "
                "nothing about shortcuts in the real data.")
    return ("The Kaggle images come from one hospital, and normal and pneumonia images differ in more than the "
            "lungs (age and size of the children, positioning, exposure, markers). The lung template is coarse: "
            "it is the same for every child, so a small or off-centre chest puts part of its own lungs outside "
            "it and part of the body inside it. The shares are therefore a rough measure, good for comparing "
            "methods, networks and classes, not for single images.")


# -- the section ---------------------------------------------------------------------------------
def _phase_seconds(run: Mapping[str, Any]) -> dict[str, float]:
    """Wall time of the whole task and of each kind of phase (summed over the networks)."""
    phases = run.get("phases_s", {})

    def total(suffix):
        return float(sum(v for k, v in phases.items() if k.endswith(suffix)))

    return {"wall": float(run["wall_s"]), "attributions": total("_attributions"),
            "randomisation": total("_randomisation"), "perturbation": total("_perturbation"),
            "neurons": float(phases.get("neurons", 0.0))}


def _figure_inputs(arrays: Mapping[str, np.ndarray], images: pd.DataFrame, blocks: Sequence[str],
                   channels: pd.DataFrame) -> dict[str, Any]:
    """The arrays each figure shows, by the section attribute names."""
    labels = image_labels(images)
    first, correct = _first_per_group(images), _first_per_group(images, "correct")
    shown = arrays[f"{SHOWN}_images"]
    rand = np.asarray(arrays[f"{SHOWN}_random_index"])
    chan = {b: g["channel"].astype(int).tolist() for b, g in channels.groupby("block", sort=False)}
    return dict(
        overlay_images=shown[first], overlay_labels=[labels[i] for i in first],
        overlay_maps={net: {m: arrays[f"{net}_{m}"][first] for m in METHODS} for net in NETWORKS},
        depth_images=shown[correct], depth_labels=[labels[i] for i in correct],
        depth_maps={net: {b: arrays[f"{net}_gradcam_{b}"][correct] for b in blocks} for net in NETWORKS},
        random_images=shown[rand], random_labels=[labels[i] for i in rand],
        random_trained={m: arrays[f"{SHOWN}_{m}"][rand] for m in METHODS},
        random_maps={m: arrays[f"{SHOWN}_random_{m}"] for m in METHODS},
        curves={net: {m: {k: arrays[f"{net}_curve_{m}_{k}"] for k in ("deletion", "insertion")}
                      for m in (*METHODS, "random")} for net in NETWORKS},
        mean_image=arrays[f"{SHOWN}_mean_image"], lung_mask=arrays[f"{SHOWN}_lung_mask"],
        border_mask=arrays[f"{SHOWN}_border_mask"], template_images=[shown[i] for i in first[:3]],
        filters=arrays["filters"], channels=chan,
        maxact={b: arrays[f"maxact_{b}"] for b in chan}, patches={b: arrays[f"patches_{b}"] for b in chan},
        class_patches=arrays["class_channel_patches"],
    )


def _check_upstream(explain: ReportEntry, upstream: Mapping[str, ReportEntry]) -> None:
    """Warn when the Task 4 entry explains other networks than the report's Task 1 entries."""
    params = explain.params
    for name, entry in upstream.items():
        key = params.get(f"{name}_entry")
        if key is not None and key != entry.path.name:
            log.warning("explain entry %s explains %s entry %s, but the report shows %s",
                        where(explain), name, key, where(entry))


def _sanity(methods: pd.DataFrame) -> dict[str, Any]:
    """The randomisation and deletion/insertion results: table, sentences, best methods."""
    rho_all, rho_head = _by_network(methods, "rho_all"), _by_network(methods, "rho_head")
    beat = {net: beats_random(methods, net) for net in NETWORKS}
    passes = passing_methods(rho_all, beat)
    m = methods.set_index(["network", "method"])
    return dict(
        method_table=method_table(methods), beat=beat, beat_text=beat_text(beat),
        passes=passes, pass_text=pass_text(passes),
        rand_text=randomisation_text(rho_all), head_text=head_text(rho_head),
        best_deletion={net: method_name(min(METHODS, key=lambda k: m.loc[(net, k), "deletion_auc"]))
                       for net in NETWORKS},
        best_insertion={net: method_name(max(METHODS, key=lambda k: m.loc[(net, k), "insertion_auc"]))
                        for net in NETWORKS},
    )


def _regions(explain: ReportEntry, lung_area: float, border_area: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Where Grad-CAM falls: on every test image when the entry has them, else on the chosen ones."""
    if explain.has_table("test_gradcam_regions"):
        summary = region_summary(explain.table("test_gradcam_regions"), by_class=True, n_boot=n_boot, seed=seed)
        share, by_class, source = _shares(summary, "all"), summary, "every test image"
    else:
        regions = explain.table("regions")
        summary = region_summary(regions[regions["method"] == "gradcam"], by_class=False,
                                 all_label="all (chosen)", n_boot=n_boot, seed=seed)
        share, by_class, source = _shares(summary, "all (chosen)"), None, "the chosen test images"
    border = border_by_class(by_class)
    return dict(
        region_summary=summary, region_table=region_table(summary), region_source=source, share=share,
        enrichment={net: s["lungs"] / lung_area for net, s in share.items()},
        lung_text=lung_text(share, lung_area, border_area), extra_text=extra_text(share),
        class_text=class_text(by_class), border_by_class=border,
        shortcut_text=shortcut_text(share, border_area, border),
    )


def explain_section(explain: ReportEntry | None = None, binary: ReportEntry | None = None,
                    multiclass: ReportEntry | None = None) -> Section:
    """Everything the Task 4 section shows: attribution maps, sanity checks, lung shares, neurons.

    Parameters
    ----------
    explain
        The Task 4 entry; None: ``task_entry("explain")``.
    binary, multiclass
        The Task 1a / 1b entries (None: ``task_entry``): the data kind (phantoms or real
        images) is read from Task 1a, and a warning is logged when the Task 4 entry explains
        other networks than these.

    Returns
    -------
    Section
        Numbers (``n``, ``resolution``, ``lung_area``, ``enrichment``, times, settings),
        display tables (``method_table``, ``region_table``, ``class_table``), sentences
        (``rand_text``, ``shortcut_text``, ...; Markdown where they cite) and the inputs of
        every figure (``overlay_images``, ``overlay_maps``, ``curves``, ...).
    """
    explain = explain or task_entry("explain")
    binary = binary or task_entry("binary")
    multiclass = multiclass or task_entry("multiclass")
    _check_upstream(explain, {"binary": binary, "multiclass": multiclass})
    params, metrics = explain.params, explain.metrics
    images, regions = explain.table("images"), explain.table("regions")
    randomisation, channels = explain.table("randomisation"), explain.table("channels")
    class_channels = explain.table("class_channels")
    blocks = gradcam_blocks(regions)
    resolution = int(metrics["resolution"])
    lung_area, border_area = float(metrics[f"{SHOWN}_lung_area"]), float(metrics[f"{SHOWN}_border_area"])
    shares = block_shares(regions)
    fields = channels.drop_duplicates("block")["receptive_field"].astype(int)
    times = _phase_seconds(explain.run)
    synthetic = bool(binary.metrics["data_synthetic"])
    return Section(
        entry=explain, where=where(explain), platform=platform_text(explain),
        binary_entry=str(params["binary_entry"]), multiclass_entry=str(params["multiclass_entry"]),
        synthetic=synthetic, data_text=data_text(synthetic),
        # settings quoted in the text
        per_group=int(params["per_group"]), ig_steps=int(params["ig_steps"]),
        shap_background=int(params["shap_background"]), shap_samples=int(params["shap_samples"]),
        perturbation_steps=int(params["perturbation_steps"]), random_orders=int(params["random_orders"]),
        lung_quantile=float(params["lung_quantile"]), neuron_channels=int(params["neuron_channels"]),
        maxact_steps=int(params["maxact_steps"]), patch_images=int(metrics["patch_images"]),
        # the chosen images
        n=len(images), images=images, missing_text=missing_groups_text(images), resolution=resolution,
        blocks=blocks, depth=len(blocks), last_grid=resolution // 2 ** (len(blocks) - 1),
        lung_area=lung_area, border_area=border_area,
        # sanity checks
        randomisation=randomisation,
        sanity_n=int(randomisation.groupby("network")["relpath"].nunique().max()),
        stages=" → ".join(randomisation.drop_duplicates("stage").sort_values("stage")["randomised"].astype(str)),
        **_sanity(explain.table("methods")),
        # where the attribution falls
        **_regions(explain, lung_area, border_area, int(params["bootstrap"]), int(params["seed"])),
        block_shares=shares, depth_text=depth_text(shares, blocks), depth_conclusion=depth_conclusion(shares, blocks),
        # layers and neurons
        neuron_network=_network(metrics["neuron_network"]), field_first=int(fields.iloc[0]),
        field_last=int(fields.iloc[-1]), class_channels=class_channels,
        class_table=class_channel_table(class_channels), neuron_text=neuron_text(class_channels),
        **_figure_inputs(explain.arrays(), images, blocks, channels),
        # time
        wall_s=times["wall"], attribution_s=times["attributions"], randomisation_s=times["randomisation"],
        perturbation_s=times["perturbation"], neurons_s=times["neurons"],
    )
