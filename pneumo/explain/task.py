"""Task 4: what drives the decisions of the Task 1a and 1b networks, down to single channels.

The story of :func:`run_explain`:

1. read the chosen Task 1a ("binary") and 1b ("multiclass") networks from the results cache
   (computing them first when missing) and the data set they were trained on
   (:func:`pneumo.upstream.entry_dataset`, which checks that it is the same data);
2. choose test images (:func:`choose_images`): for each class, images the 1b network got
   right and images it got wrong, at random with a fixed seed (the same images for both
   networks);
3. for each network (:func:`~pneumo.explain.parts.explain_network`), in four timed phases:

   a. attribution maps of the class it predicted: Grad-CAM at every block (the last block is
      "Grad-CAM"), integrated gradients, SHAP (expected gradients);
   b. where the attribution falls: share inside a lung-field template, in the border frame,
      and elsewhere; for Grad-CAM also on every test image;
   c. sanity check 1, model-parameter randomisation: cascading, rank correlation per method;
   d. sanity check 2, deletion / insertion curves against a random pixel order;

4. layers and neurons of one network (:func:`~pneumo.explain.parts.network_neurons`):
   first-layer filters, activation maximisation and the most exciting training patches of a
   few channels per block, and the last-block channels that separate the classes;
5. publish everything as one cache entry: the per-image tables, one row per network and
   method with confidence intervals (``methods``), the maps and curves (``arrays.npz``) and
   the headline figures (``metrics.json``).

Every step returns its results as a :class:`~pneumo.explain.parts.Part` (tables, arrays,
metrics), computed in :mod:`pneumo.explain.parts`; the parts are merged, in order, only when
publishing.

Nothing here chooses a model or a threshold: the networks are Task 1's, and the test images
are only looked at.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np
import pandas as pd

from pneumo.data import CLASSES, XrayDataset
from pneumo.device import configure_threads, pick_device, seed_everything
from pneumo.explain.attribution import require_vgg
from pneumo.explain.config import METHODS, NETWORKS, ExplainConfig
from pneumo.explain.parts import Part, Phase, explain_network, network_neurons
from pneumo.metrics import mean_ci
from pneumo.results import Entry, ResultCache
from pneumo.runner import task_spec
from pneumo.upstream import classifier_entries, entry_dataset, first_missing, load_classifier, upstream_keys

log = logging.getLogger(__name__)

__all__ = ["run_explain", "choose_images"]


def _merge(parts: Iterable[Part]) -> tuple[dict[str, list[pd.DataFrame]], dict[str, np.ndarray], dict[str, Any]]:
    """The parts' tables (frames listed per name), arrays and metrics, in the order of the parts."""
    tables: dict[str, list[pd.DataFrame]] = {}
    arrays: dict[str, np.ndarray] = {}
    metrics: dict[str, Any] = {}
    for part in parts:
        for name, frame in part.tables.items():
            tables.setdefault(name, []).append(frame)
        arrays.update(part.arrays)
        metrics.update(part.metrics)
    return tables, arrays, metrics


def _summary_row(frame: pd.DataFrame, column: str, config: ExplainConfig) -> dict[str, float]:
    value, low, high = mean_ci(frame[column], frame["patient"], n_boot=config.bootstrap, seed=config.seed)
    return {"value": value, "ci_low": low, "ci_high": high, "n": int(frame[column].notna().sum())}


# -- choosing the test images --------------------------------------------------------------------
def choose_images(predictions: pd.DataFrame, per_group: int, *, seed: int = 0) -> pd.DataFrame:
    """Test images per true class and outcome (correct / misclassified), chosen at random.

    Parameters
    ----------
    predictions
        The Task 1b ``predictions`` table.
    per_group
        Images per (class, outcome); fewer when a group is smaller. No patient appears twice.
    seed
        Seed of the random choice.

    Returns
    -------
    pandas.DataFrame
        ``relpath, patient, label, outcome`` rows, ordered by class then outcome.
    """
    test = predictions[predictions["split"] == "test"].copy()
    test["outcome"] = np.where(test["target"] == test["predicted"], "correct", "misclassified")
    rng = np.random.default_rng(seed)
    parts, used = [], set()
    for label in CLASSES:
        for outcome in ("correct", "misclassified"):
            group = test[(test["label"] == label) & (test["outcome"] == outcome) & ~test["patient"].isin(used)]
            group = group.sample(frac=1.0, random_state=int(rng.integers(2**31))).drop_duplicates("patient")
            parts.append(group.head(per_group))
            used.update(parts[-1]["patient"])
    chosen = pd.concat(parts, ignore_index=True)
    return chosen[["relpath", "patient", "label", "outcome"]]


# -- the task ------------------------------------------------------------------------------------
def run_explain(config: ExplainConfig, *, compute: bool = True) -> Entry:
    """Run Task 4 end to end (or return its cached entry).

    Parameters
    ----------
    config
        An :class:`~pneumo.explain.config.ExplainConfig`.
    compute
        False only looks the entry up: the returned entry may not exist (also when the Task 1
        networks are not computed yet).

    Returns
    -------
    Entry
        The task's cache entry; ``entry.metrics`` holds the headline figures.

    Raises
    ------
    RuntimeError
        When the data found are not the data the Task 1 networks were evaluated on.
    """
    configure_threads()
    cache = ResultCache(config.cache, writable=compute)
    entries = classifier_entries(config.profile, data=config.data, cache=config.cache, device=config.device,
                                 num_workers=config.num_workers, compute=compute)
    missing = first_missing(entries)
    if missing is not None:
        return missing  # upstream not computed yet (compute=False): nothing to look up
    # This task's data folder and cache: the entries were looked up with them, so they hold their data.
    datasets = {name: entry_dataset(e, config.num_workers, data=config.data, cache=str(cache.root))
                for name, e in entries.items()}
    fingerprint = "+".join(sorted({d.fingerprint for d in datasets.values()}))
    entry = cache.lookup("explain", {**config.key_dict(), **upstream_keys(entries)}, fingerprint,
                         task_spec("explain").code)
    if (entry.exists and not config.force) or not compute:
        return entry
    key = entry.key

    device = pick_device(config.device)
    seed_everything(config.seed)
    chosen = choose_images(entries["multiclass"].table("network_predictions"), config.per_group, seed=config.seed)
    log.info("explain: %d test images chosen", len(chosen))
    with cache.write("explain", key, reuse=not config.force) as out:
        if out is None:  # computed meanwhile by another process
            return entry
        parts = _compute(config, entries, datasets, chosen, device, out.phase)
        _publish(out, parts, config, entries, datasets, chosen)
    log.info("explain: result at %s", entry.path)
    return entry


def _compute(config: ExplainConfig, entries: dict[str, Entry], datasets: dict[str, XrayDataset],
             chosen: pd.DataFrame, device, phase: Phase) -> list[Part]:
    """Both networks' explanations, then the layers and neurons of one: the parts, in order."""
    parts: list[Part] = []
    for name in NETWORKS:
        model, _ = load_classifier(entries[name], device)
        require_vgg(model)
        if name == config.neuron_network:
            neuron_model = model
        parts += explain_network(name, model, entries[name], datasets[name], chosen, config, device, phase)
    with phase("neurons"):
        parts.append(network_neurons(neuron_model, datasets[config.neuron_network], config, device))
    return parts


def _publish(out, parts: list[Part], config: ExplainConfig, entries: dict[str, Entry],
             datasets: dict[str, XrayDataset], chosen: pd.DataFrame) -> None:
    """Write the merged parts, the method table and the headline figures into the entry."""
    tables, arrays, metrics = _merge(parts)
    chosen_table = pd.concat(tables.pop("chosen"), axis=1)
    chosen_table = chosen_table.loc[:, ~chosen_table.columns.duplicated()]
    out.table("images", chosen_table)
    frames = {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
    for table_name, frame in frames.items():
        out.table(table_name, frame)
    methods = _method_table(frames["regions"], frames["randomisation"], frames["perturbation"], config)
    out.table("methods", methods)
    out.arrays(**arrays)
    out.json("params", {**config.to_dict(), **upstream_keys(entries)})
    out.json("metrics", {**metrics, **_headline(methods, frames.get("test_gradcam_regions")),
                         "images": int(len(chosen)),
                         "data_synthetic": bool(datasets["multiclass"].is_synthetic),
                         "resolution": int(datasets["multiclass"].resolution)})


def _headline(methods: pd.DataFrame, test_gradcam: pd.DataFrame | None) -> dict[str, float]:
    """Headline figures for ``metrics.json``: means over the chosen (and all test) images."""
    metrics = {}
    for row in methods.itertuples():
        for column in ("rho_all", "deletion_auc", "insertion_auc", "lungs", "border"):
            value = getattr(row, column, float("nan"))
            if np.isfinite(value):
                metrics[f"{row.network}_{row.method}_{column}"] = float(value)
    if test_gradcam is not None:
        for network, part in test_gradcam.groupby("network"):
            metrics[f"{network}_test_gradcam_lungs"] = float(part["lungs"].mean())
            metrics[f"{network}_test_gradcam_border"] = float(part["border"].mean())
    return metrics


def _method_table(regions: pd.DataFrame, randomisation: pd.DataFrame, perturbation: pd.DataFrame,
                  config: ExplainConfig) -> pd.DataFrame:
    """One row per network and method: the sanity-check and lung-share figures with 95% CIs."""
    rows = []
    for network in NETWORKS:
        full = randomisation[(randomisation["network"] == network)
                             & (randomisation["stage"] == randomisation["stage"].max())]
        top = randomisation[(randomisation["network"] == network) & (randomisation["stage"] == 1)]
        for method in (*METHODS, "random"):
            row: dict[str, Any] = {"network": network, "method": method}
            p = perturbation[(perturbation["network"] == network) & (perturbation["method"] == method)]
            for column in ("deletion_auc", "insertion_auc"):
                for k, v in _summary_row(p, column, config).items():
                    row[f"{column}_{k}" if k != "value" else column] = v
            if method != "random":
                for label, frame in (("rho_head", top), ("rho_all", full)):
                    f = frame[frame["method"] == method]
                    for k, v in _summary_row(f, "rho", config).items():
                        row[f"{label}_{k}" if k != "value" else label] = v
                r = regions[(regions["network"] == network) & (regions["method"] == method)]
                for region in ("lungs", "border"):
                    for k, v in _summary_row(r, region, config).items():
                        row[f"{region}_{k}" if k != "value" else region] = v
            rows.append(row)
    return pd.DataFrame(rows)
