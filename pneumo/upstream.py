"""The Task 1 networks as inputs of later tasks (embeddings, explanations).

Tasks 2 and 4 read the chosen Task 1a and 1b models from the results cache; when an entry is
missing they compute it first, through the same cache and with the same profile, so that the
report, a task script and a test all end up with the same networks. A later task's cache
key includes the Task 1 entry keys (:func:`upstream_keys`): retraining Task 1 invalidates
everything computed from it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from pneumo.data import XrayDataset, load_dataset
from pneumo.results import Entry, ResultCache

log = logging.getLogger(__name__)

#: The Task 1 entries later tasks use, by task name.
CLASSIFIER_TASKS = ("binary", "multiclass")


def classifier_entries(
    profile: str,
    *,
    data: str | None = None,
    cache: str | None = None,
    device: str = "auto",
    num_workers: int | None = None,
    compute: bool = True,
) -> dict[str, Entry]:
    """The Task 1a and 1b entries of a profile, computing them when missing.

    A missing entry is computed as ``python tasks/<name>.py`` would through the report: its
    script runs through papermill (:func:`pneumo.runner.run_task`) and the entry keeps the
    executed notebook.

    Parameters
    ----------
    profile
        Compute profile of the Task 1 configs (``"smoke"``, ``"cpu"``, ``"gpu"``).
    data, cache, device, num_workers
        As in every task config; they do not change the Task 1 keys except ``data``.
    compute
        False only looks the entries up (they may not exist).

    Returns
    -------
    dict
        ``{"binary": Entry, "multiclass": Entry}``.
    """
    from pneumo.runner import lookup_task, run_task

    shared = dict(data=data, cache=cache, device=device, num_workers=num_workers)
    if not compute:
        return {name: lookup_task(name, profile, **shared) for name in CLASSIFIER_TASKS}
    entries = {}
    for name in CLASSIFIER_TASKS:
        # As a direct run: the task script through papermill, so the entry has its notebook.
        entries[name] = run_task(name, profile, **shared)
        log.info("%s network: %s", name, entries[name].path)
    return entries


def first_missing(entries: dict[str, Entry]) -> Entry | None:
    """The first upstream entry that is not computed yet, or None when all are.

    The one rule for a lookup (``compute=False``) whose upstream is missing: the task returns
    this entry, which does not exist, so the caller sees "not computed" without a key.
    """
    return next((entry for entry in entries.values() if not entry.exists), None)


def upstream_keys(entries: dict[str, Entry]) -> dict[str, str]:
    """``{"binary_entry": key, ...}``: the part of a later task's cache key that names its inputs."""
    return {f"{name}_entry": entry.path.name for name, entry in entries.items()}


def load_classifier(entry: Entry, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The chosen network of a Task 1 entry, in eval mode on ``device``, and its config.

    The ``state_dict`` is read with ``weights_only=True``; the config (architecture,
    resolution, number of classes) comes from the same file.
    """
    from pneumo.models import build_model

    saved = entry.load_model()
    config = dict(saved["config"])
    model = build_model(config)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), config


def entry_dataset(entry: Entry, num_workers: int | None = None, *, data: str | None = None,
                  cache: str | None = None) -> XrayDataset:
    """The decoded data set a Task 1 entry was computed on, at its model's resolution.

    Uses the entry's split settings (``val_fraction``, ``seed``), so its train / val / test
    rows are exactly the network's; the decode cache makes this quick. Pneumonia images whose
    name gives no subtype are left out (as for Task 1b), so that the 1a and 1b data sets list
    the same images; the fingerprint covers them either way.

    Parameters
    ----------
    entry
        A Task 1 entry.
    num_workers
        Decoding processes (None: the entry's setting, else all cores).
    data, cache
        The calling task's data folder and results folder; None falls back to the entry's
        own (which are None when Task 1 ran through ``$PNEUMO_DATA`` / ``$PNEUMO_CACHE``).

    Raises
    ------
    RuntimeError
        When the images found are not the ones the network was evaluated on (another data
        folder, or files changed since): results would silently mix data sets otherwise.
    """
    params = entry.params
    resolution = int(entry.load_model()["config"]["resolution"])
    dataset = load_dataset(data if data is not None else params.get("data"), resolution=resolution,
                           val_fraction=params["val_fraction"], seed=params["seed"],
                           cache_dir=ResultCache(cache if cache is not None else params.get("cache")).root,
                           num_workers=num_workers if num_workers is not None else params.get("num_workers"))
    expected = entry.json("data_summary").get("fingerprint")
    if expected and dataset.fingerprint != expected:
        raise RuntimeError(
            f"the data found at {dataset.root} (fingerprint {dataset.fingerprint}) are not the data "
            f"the Task 1 network in {entry.path} was evaluated on (fingerprint {expected}); pass the "
            "same data folder (--data or $PNEUMO_DATA) as that run")
    return dataset
