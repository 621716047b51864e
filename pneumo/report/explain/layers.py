"""The Task 4 layers: Grad-CAM at each block's depth, and the last block's class-separating channels."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from pneumo.report.explain.names import _network
from pneumo.report.text import num, pct

__all__ = ["gradcam_blocks", "block_shares", "depth_text", "depth_conclusion", "class_channel_table",
           "neuron_text"]


def gradcam_blocks(regions: pd.DataFrame) -> list[str]:
    """The blocks with a Grad-CAM map (``gradcam_block<i>`` methods), input side first."""
    blocks = {m.split("_")[-1] for m in regions["method"] if str(m).startswith("gradcam_block")}
    return sorted(blocks, key=lambda b: int(b.replace("block", "")))


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
