"""Where the Task 4 attribution falls: Grad-CAM's share in the lungs, the border frame and elsewhere.

Mean shares with patient-bootstrap intervals per network (and true class), as a table and
as sentences on the lungs, the frame, the classes and shortcut learning.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from pneumo.data import CLASSES
from pneumo.explain import NETWORKS
from pneumo.metrics import mean_ci
from pneumo.report.entries import ReportEntry
from pneumo.report.explain.names import _network
from pneumo.report.tables import markdown
from pneumo.report.text import count, fmt_ci, join_words, num, pct

__all__ = ["REGIONS", "region_summary", "region_table", "class_text", "lung_text", "extra_text", "border_by_class",
           "shortcut_text", "data_text"]

#: The regions of :meth:`pneumo.explain.lungs.LungTemplate.regions`, columns of the region tables.
REGIONS = ("lungs", "border", "other")


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
