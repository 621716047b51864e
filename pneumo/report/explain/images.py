"""The Task 4 images: which were chosen, their labels, and the arrays each figure shows."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pneumo.data import CLASSES
from pneumo.explain import METHODS, NETWORKS
from pneumo.report.explain.names import SHOWN, _network

__all__ = ["missing_groups_text", "image_labels"]


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
