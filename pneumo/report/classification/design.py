"""The chosen Task 1 model's design and training, in words.

Its loss and class balance, augmentation, grey-level handling and architecture note (1a),
where its weights started (1b), and how its training curve ended.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import pandas as pd

from pneumo.report.classification.grid import _variant_named, init_sentence
from pneumo.report.tables import markdown
from pneumo.report.text import capitalise, num, plural

__all__ = ["BALANCE_TEXT", "intensity_sentence", "curve_sentence", "start_sentence"]

#: How each ``balance`` setting handles the class imbalance (for the design prose).
BALANCE_TEXT = {
    "weights": ("class-weighted cross-entropy, each class weighted by the inverse of its "
                "training frequency (normalised so that the mean weight per image is 1)"),
    "sampling": ("plain cross-entropy on class-balanced batches: every epoch draws as many "
                 "images as the training set holds, with replacement, each class equally likely"),
    "none": "plain cross-entropy, with no correction for the class imbalance",
}

#: Short names of the ``balance`` settings, for a sentence that only names the choice.
_BALANCE_SHORT = {"weights": "class-weighted cross-entropy", "sampling": "class-balanced sampling",
                  "none": "no correction"}


def _loss_sentence(config: Mapping[str, Any]) -> str:
    """The training loss of the chosen model, capitalised, without a final full stop."""
    smoothing = f" with label smoothing {config['label_smoothing']:g}" if config["label_smoothing"] else ""
    mixup = (f", on batches blended by mixup (each with a shuffled copy of itself, images and labels alike, by "
             f"a weight drawn from Beta({config['mixup']:g}, {config['mixup']:g}))"
             if config.get("mixup") else "")
    return capitalise(BALANCE_TEXT[config["balance"]] + smoothing + mixup)


def _augmentation_sentence(augment: bool, border_mask: float = 0.0) -> str:
    """The augmentation of the chosen 1a model, with the ranges :func:`pneumo.training.augment_batch` uses."""
    border = (f"half of the images get a black border frame of random width, up to {100 * border_mask:.0f}% "
              "of the side, so that the film's border cannot stand in for its lungs (see the validation under "
              "shift below)")
    if not augment:
        return ("The chosen model is trained without random jitter; " + border + "." if border_mask else
                "The chosen model is trained without augmentation.")
    from pneumo.training import augment_batch

    aug = {k: v.default for k, v in inspect.signature(augment_batch).parameters.items()
           if v.default is not inspect.Parameter.empty}
    return (f"Training batches are augmented on the device: random rotation (±{aug['max_rotation_deg']:.0f}°), "
            f"zoom ({aug['scale_range'][0]:.2f}–{aug['scale_range'][1]:.2f}), "
            f"shift (±{100 * aug['max_translate']:.0f}% of the side), gamma, "
            f"contrast (±{100 * aug['max_contrast']:.0f}%) and brightness (±{100 * aug['max_brightness']:.0f}%) "
            "jitter" + ("; " + border if border_mask else "")
            + ". There are no horizontal flips: a mirrored chest "
            "is anatomically implausible, and side markers would flip with it.")


def intensity_sentence(stretch: bool, measured: bool) -> str:
    """What the 1a network does with grey levels; ``measured``: the grid compared both modes."""
    if stretch:
        return ("Its first layer stretches each image's contrast, linearly and without learnt parameters: the "
                "image's 1st percentile of grey levels goes to black and its 99th to white, so that neither the "
                "exposure nor the contrast of a film can inform the decision.")
    if measured:
        return ("It reads the grey levels as they are; the per-image contrast stretch measured in the grid "
                "was not chosen.")
    return "It reads the grey levels as they are."


def _design_note(arch: str) -> str:
    """Markdown (printed as is) when the grid chose the pre-trained comparator; '' for the VGG network."""
    if arch == "vgg":
        return ""
    return (f"*The grid chose the pre-trained comparator `{arch}` [@cohen2022] over the from-scratch network, "
            "so the model evaluated below is that network (its layers are in the table); the next paragraph "
            "describes the from-scratch network it was compared with.*\n")


def curve_sentence(history: pd.DataFrame, max_epochs: int, patience: int) -> str:
    """How training ended, and whether validation loss shows over-fitting (no final full stop)."""
    epochs_run = len(history)
    low_epoch = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    rise = float(history["val_loss"].iloc[-1] - history["val_loss"].min())
    head = (f"Training stopped early after epoch {epochs_run}, {plural(patience, 'epoch')} without a better "
            f"validation ROC AUC" if epochs_run < max_epochs else f"Training ran all {epochs_run} epochs")
    if rise > 0.05 * history["val_loss"].min() and low_epoch < epochs_run:
        return head + (f"; validation loss was lowest at epoch {low_epoch} and then rose by {num(rise)} "
                       "while training loss kept falling, the usual sign of over-fitting, which early stopping "
                       "and keeping the best epoch's weights guard against.")
    return head + ("; validation loss did not rise markedly towards the end, so there is little sign of "
                   "over-fitting within this budget.")


def start_sentence(from_1a: bool, inherits: bool):
    """Markdown: where the chosen 1b model's weights started (it may refer to @tbl-grid-multiclass)."""
    if from_1a:
        text = ("The chosen model starts from the Task 1a network: every layer except the final linear "
                "layer is copied from it, and the new three-way output layer starts from random weights.")
    elif inherits:
        text = ("The chosen model starts from random weights (the grid preferred training from scratch "
                "to starting from the Task 1a network; see @tbl-grid-multiclass).")
    else:
        text = ("The chosen model starts from random weights: the Task 1a model could not be reused "
                "(it is not the VGG network), so 1b trains its own from scratch.")
    return markdown(text)


def _binary_design(r: Mapping[str, Any], changes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The chosen 1a model's design: architecture facts, grey levels, loss and augmentation."""
    config = r["config"]
    intensity_measured = any("intensity" in changes.get(v, {}) for v in r["grid"]["variant"])
    return {
        "is_vgg": config.get("arch", "vgg") == "vgg",
        "design_note": _design_note(config.get("arch", "vgg")),
        "intensity_text": intensity_sentence(config.get("intensity", "none") == "stretch", intensity_measured),
        "last_channels": int(config["width"] * 2 ** (config["depth"] - 1)),
        "side_out": int(config["resolution"] // 2 ** config["depth"]),
        "loss_text": _loss_sentence(config),
        "balance_text": BALANCE_TEXT[config["balance"]],
        "augmentation_text": _augmentation_sentence(bool(config["augment"]), float(config.get("border_mask", 0.0))),
    }


def _multiclass_design(r: Mapping[str, Any], binary_config: Mapping[str, Any],
                       changes: Mapping[str, Mapping[str, Any]], se: float) -> dict[str, Any]:
    """The chosen 1b model's design: its start (and that start's measured effect), against 1a's settings."""
    config, trained = r["config"], r["trained"].set_index("variant")
    init_entry = str(r["params"].get("init_entry") or "")
    warm, scratch = _variant_named(changes, {}), _variant_named(changes, {"init": "scratch"})
    measured = warm in trained.index and scratch in trained.index
    tail = (". Label smoothing keeps the network from becoming over-confident on a distinction whose "
            "labels are themselves uncertain." if config["label_smoothing"] else ".")
    same_arch = all(config.get(k) == binary_config.get(k) for k in ("width", "depth", "convs_per_block", "resolution"))
    return {
        "init_entry": init_entry or "(none)",
        "start_text": start_sentence(bool(config.get("init")), bool(init_entry)),
        "init_text": init_sentence(float(trained.loc[warm, "val_roc_auc"]) if measured else None,
                                   float(trained.loc[scratch, "val_roc_auc"]) if measured else None, se),
        "network_text": "the Task 1a architecture" if same_arch else "a VGG-style network",
        "intensity_text": ("each image's contrast stretched by the first layer (1st percentile to black, "
                           "99th to white)" if config.get("intensity", "none") == "stretch"
                           else "read with their grey levels as they are"),
        "loss_text": _loss_sentence(config) + tail,
        "binary_lr": f"{binary_config['lr']:g}",
        "augmentation_text": ("on" if config["augment"] else "off") + (
            ", as in the chosen Task 1a model." if config["augment"] == binary_config["augment"] else
            ", unlike in the chosen Task 1a model."),
    }
