"""The autoencoder variants Task 3 trains, their full settings, and the name of a (variant, score) column."""

from __future__ import annotations

from typing import Any

from pneumo.anomaly.config import AnomalyConfig
from pneumo.imaging import INTENSITY_MODES


def ae_variants(config: AnomalyConfig) -> list[tuple[str, dict[str, Any]]]:
    """Autoencoders to train, as ``(name, changes)``: one design axis changed per row.

    ``reduced``: the baseline, a 4x smaller and a 4x larger latent, a denoising and a masked
    variant, and the baseline with each other intensity normalisation; ``full`` adds
    augmentation off and a masked variant with a small latent.

    Parameters
    ----------
    config
        The task config (``grid``, ``latent``, ``intensity``, ``augment``).

    Returns
    -------
    list of (str, dict)
        Variant name and its changes to the baseline settings (:func:`variant_settings`);
        the baseline comes first, with no changes.
    """
    small, large = max(2, config.latent // 4), config.latent * 4
    variants = [("baseline", {})]
    if config.grid == "none":
        return variants
    variants += [(f"latent={small}", {"latent": small}), (f"latent={large}", {"latent": large}),
                 ("denoising", {"corruption": "noise"}), ("masked", {"corruption": "mask"})]
    variants += [(f"intensity={mode}", {"intensity": mode}) for mode in INTENSITY_MODES if mode != config.intensity]
    if config.grid == "full":
        variants += [(f"augment={not config.augment}", {"augment": not config.augment}),
                     (f"masked, latent={small}", {"corruption": "mask", "latent": small})]
    return variants


def variant_settings(config: AnomalyConfig, changes: dict[str, Any]) -> dict[str, Any]:
    """The full settings of one variant: the config's model and training values, then ``changes``.

    Parameters
    ----------
    config
        The task config.
    changes
        A variant's changes, from :func:`ae_variants`.

    Returns
    -------
    dict
        Model shape, intensity, corruption (``"none"`` unless changed) and training settings;
        also the config saved with the chosen model.
    """
    keys = ("resolution", "intensity", "width", "depth", "latent", "noise_std", "mask_fraction", "augment", "epochs",
            "batch_size", "lr", "weight_decay", "patience", "seed")
    settings = {k: getattr(config, k) for k in keys}
    settings["corruption"] = "none"
    settings.update(changes)
    return settings


def variant_column(variant: str, score: str) -> str:
    """The name of a (variant, score) pair's column in the score tables: ``variant/score``.

    Parameters
    ----------
    variant, score
        Variant name (:func:`ae_variants`, or the comparator's) and score name.

    Returns
    -------
    str
        The column name.
    """
    return f"{variant}/{score}"
