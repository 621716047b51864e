"""Task 4: what drives the decisions of the Task 1a and 1b networks, down to single channels.

The story of :func:`run_explain`:

1. read the chosen Task 1a ("binary") and 1b ("multiclass") networks from the results cache
   (computing them first when missing) and the data set they were trained on
   (:func:`pneumo.upstream.entry_dataset`, which checks that it is the same data);
2. choose test images (:func:`choose_images`): for each class, images the 1b network got
   right and images it got wrong, at random with a fixed seed (the same images for both
   networks);
3. for each network (:func:`explain_network`), in four timed phases:

   a. attribution maps of the class it predicted: Grad-CAM at every block (the last block is
      "Grad-CAM"), integrated gradients, SHAP (expected gradients);
   b. where the attribution falls: share inside a lung-field template, in the border frame,
      and elsewhere; for Grad-CAM also on every test image;
   c. sanity check 1, model-parameter randomisation: cascading, rank correlation per method;
   d. sanity check 2, deletion / insertion curves against a random pixel order;

4. layers and neurons of one network (:func:`network_neurons`): first-layer filters,
   activation maximisation and the most exciting training patches of a few channels per
   block, and the last-block channels that separate the classes;
5. publish everything as one cache entry: the per-image tables, one row per network and
   method with confidence intervals (``methods``), the maps and curves (``arrays.npz``) and
   the headline figures (``metrics.json``).

Every step returns its results as a :class:`Part` (tables, arrays, metrics); the parts are
merged, in order, only when publishing.

Nothing here chooses a model or a threshold: the networks are Task 1's, and the test images
are only looked at.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pneumo.data import BINARY_CLASSES, CLASSES, XrayDataset
from pneumo.device import configure_threads, pick_device, seed_everything
from pneumo.explain.attribution import (
    GradCAM,
    ShapGradient,
    attribute_all,
    block_layers,
    require_vgg,
)
from pneumo.explain.config import METHODS, NETWORKS, ExplainConfig
from pneumo.explain.lungs import LungTemplate, region_shares
from pneumo.explain.neurons import (
    activation_maximisation,
    channel_statistics,
    class_separating_channels,
    first_layer_filters,
    receptive_fields,
    top_patches,
)
from pneumo.explain.sanity import (
    curve_auc,
    perturbation_curves,
    randomisation_stages,
    randomised_copy,
    rank_correlation,
)
from pneumo.imaging import to_model_input
from pneumo.metrics import mean_ci
from pneumo.results import Entry, ResultCache
from pneumo.runner import task_spec
from pneumo.upstream import classifier_entries, entry_dataset, first_missing, load_classifier, upstream_keys

log = logging.getLogger(__name__)

__all__ = ["Part", "run_explain", "choose_images", "explain_network", "network_neurons"]

#: Opens a timed phase of the computation (:meth:`pneumo.results.EntryWriter.phase` or alike).
Phase = Callable[[str], ContextManager[None]]


@dataclasses.dataclass(frozen=True)
class Part:
    """What one step of the task publishes.

    Attributes
    ----------
    tables
        ``{name: frame}``; the frames of all parts with the same name are concatenated.
    arrays
        ``{name: array}`` for ``arrays.npz``.
    metrics
        ``{name: value}`` for ``metrics.json``.
    """

    tables: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


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


def _rows_for(dataset: XrayDataset, relpaths) -> np.ndarray:
    position = pd.Series(np.arange(len(dataset.table)), index=dataset.table["relpath"])
    missing = [r for r in relpaths if r not in position.index]
    if missing:
        raise KeyError(f"images not in the data set at {dataset.root}: {missing[:3]}")
    return position.loc[list(relpaths)].to_numpy()


def _as_input(images: np.ndarray, device) -> torch.Tensor:
    return to_model_input(torch.as_tensor(np.ascontiguousarray(images)).to(device))  # (N, 1, H, W)


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
    chosen = choose_images(entries["multiclass"].table("predictions"), config.per_group, seed=config.seed)
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


# -- one network ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Attributions:
    """The chosen images of one network as model input, its predicted classes and its maps."""

    x: torch.Tensor  # (N, 1, H, W)
    targets: np.ndarray  # predicted class per image
    maps: dict[str, np.ndarray]  # {method or gradcam_<block>: (N, H, W)}
    train_x: np.ndarray  # the training images, (M, H, W) uint8
    background: torch.Tensor  # the SHAP background
    part: Part


def explain_network(name: str, model: torch.nn.Module, entry: Entry, dataset: XrayDataset,
                    chosen: pd.DataFrame, config: ExplainConfig, device, phase: Phase) -> list[Part]:
    """Attributions, lung shares, randomisation test and perturbation curves of one network.

    Parameters
    ----------
    name
        The network's Task 1 name (one of :data:`~pneumo.explain.config.NETWORKS`).
    model
        The network, in eval mode on ``device`` (a VGG-style network).
    entry
        Its Task 1 entry (for the ``predictions`` table).
    dataset
        The data set it was computed on.
    chosen
        The test images (:func:`choose_images`).
    config
        The task settings.
    device
        Where the model lives.
    phase
        Opens a timed phase (``out.phase`` of the entry being written).

    Returns
    -------
    list of Part
        The four steps' results, in order: attributions (table ``chosen`` with the network's
        predictions), lung shares (``regions``, ``test_gradcam_regions``), randomisation test
        (``randomisation``) and perturbation curves (``perturbation``).
    """
    with phase(f"{name}_attributions"):
        predictions = entry.table("predictions")
        attributions = _attributions(name, model, predictions, dataset, chosen, config, device)
    with phase(f"{name}_lungs"):
        template = LungTemplate(quantile=config.lung_quantile).fit(attributions.train_x)
        lungs = _lung_shares(name, model, template, attributions.maps, dataset, predictions, chosen,
                             config, device)
    with phase(f"{name}_randomisation"):
        randomisation = _randomisation(name, model, attributions, chosen, config)
    with phase(f"{name}_perturbation"):
        reference = _as_input(np.rint(template.mean_image_).astype(np.uint8)[None], device)
        perturbation = _perturbation(name, model, attributions, reference, chosen, config)
    return [attributions.part, lungs, randomisation, perturbation]


def _attributions(name, model, predictions, dataset, chosen, config, device) -> _Attributions:
    """Attribution maps of the predicted class on the chosen images, and the predictions shown."""
    classes = BINARY_CLASSES if name == "binary" else CLASSES
    test = predictions[predictions["split"] == "test"].set_index("relpath").loc[chosen["relpath"]]
    targets = test["predicted"].astype(int).to_numpy()
    proba = test[[f"p_{c}" for c in classes]].to_numpy()
    shown = chosen.copy()
    shown[f"{name}_predicted"] = [classes[t] for t in targets]
    shown[f"{name}_p_predicted"] = proba[np.arange(len(targets)), targets]
    shown[f"{name}_correct"] = (test["target"].to_numpy() == targets)

    images = dataset.images[_rows_for(dataset, chosen["relpath"])]  # (N, H, W) uint8
    x = _as_input(images, device)
    train_x, _ = dataset.subset("train")
    rng = np.random.default_rng(config.seed)
    background = _as_input(train_x[np.sort(rng.choice(len(train_x), min(config.shap_background, len(train_x)),
                                                   replace=False))], device)
    shap = ShapGradient(config.shap_samples, random_state=config.seed).fit(model, background)
    maps = attribute_all(model, x, targets, ig_steps=config.ig_steps, shap=shap,
                         methods=("gradcam_blocks", "integrated_gradients", "shap"))
    maps = {k: v.float().cpu().numpy() for k, v in maps.items()}
    arrays = {f"{name}_images": images, f"{name}_targets": targets,
              **{f"{name}_{method}": m.astype(np.float32) for method, m in maps.items()}}
    return _Attributions(x=x, targets=targets, maps=maps, train_x=train_x, background=background,
                         part=Part(tables={"chosen": shown}, arrays=arrays))


def _lung_shares(name, model, template, maps, dataset, predictions, chosen, config, device) -> Part:
    """Shares of each map inside the lung fields, in the border and elsewhere, and the template."""
    regions = template.regions()
    rows = []
    for method, m in maps.items():
        shares = region_shares(m, regions)
        for i in range(len(chosen)):
            rows.append({"network": name, "method": method, "relpath": chosen["relpath"].iloc[i],
                         "patient": chosen["patient"].iloc[i], "label": chosen["label"].iloc[i],
                         "outcome": chosen["outcome"].iloc[i],
                         **{region: float(v[i]) for region, v in shares.items()}})
    tables = {"regions": pd.DataFrame(rows)}
    if config.all_test_gradcam:
        tables["test_gradcam_regions"] = _all_test_gradcam(name, model, dataset, predictions, regions, device)
    arrays = {f"{name}_lung_mask": template.mask_, f"{name}_border_mask": template.border_,
              f"{name}_mean_image": template.mean_image_.astype(np.float32)}
    metrics = {f"{name}_lung_area": float(template.mask_.mean()),
               f"{name}_border_area": float(template.border_.mean())}
    return Part(tables=tables, arrays=arrays, metrics=metrics)


def _all_test_gradcam(name, model, dataset, predictions, regions, device, batch_size: int = 64) -> pd.DataFrame:
    """Grad-CAM (last block, predicted class) region shares for every test image."""
    test_x, test_rows = dataset.subset("test")
    pred = predictions[predictions["split"] == "test"].set_index("relpath").loc[test_rows["relpath"]]
    targets = pred["predicted"].astype(int).to_numpy()
    layers = block_layers(model)
    last = next(reversed(layers))
    shares = {r: [] for r in regions}
    with GradCAM(model, {last: layers[last]}) as cam:
        for i in range(0, len(test_x), batch_size):
            m = cam(_as_input(test_x[i:i + batch_size], device), targets[i:i + batch_size])[last]
            for r, v in region_shares(m.cpu().numpy(), regions).items():
                shares[r].append(v)
    frame = test_rows[["relpath", "patient", "label"]].copy()
    frame.insert(0, "network", name)
    frame["correct"] = pred["target"].to_numpy() == targets
    for r, v in shares.items():
        frame[r] = np.concatenate(v)
    return frame


def _randomisation(name, model, attributions: _Attributions, chosen, config) -> Part:
    """Cascading parameter randomisation: rank correlation of each method's maps per stage."""
    x, targets, maps = attributions.x, attributions.targets, attributions.maps
    n = len(chosen) if config.sanity_images <= 0 else min(config.sanity_images, len(chosen))
    # Spread the images over the groups (the chosen table is ordered by class and outcome).
    pick = np.unique(np.linspace(0, len(chosen) - 1, n).round().astype(int))
    stages = randomisation_stages(model)
    rows, arrays = [], {}
    for s in tqdm(range(1, len(stages) + 1), desc=f"{name}: randomisation stages"):
        twin = randomised_copy(model, s, random_state=config.seed + s)
        twin_shap = ShapGradient(config.shap_samples, random_state=config.seed).fit(twin, attributions.background)
        random_maps = attribute_all(twin, x[pick], targets[pick], ig_steps=config.ig_steps, shap=twin_shap)
        for method in METHODS:
            rm = random_maps[method].float().cpu().numpy()
            rho = rank_correlation(maps[method][pick], rm)
            for j, i in enumerate(pick):
                rows.append({"network": name, "method": method, "stage": s,
                             "randomised": "+".join(stages[:s]) if s < len(stages) else "all layers",
                             "relpath": chosen["relpath"].iloc[i], "patient": chosen["patient"].iloc[i],
                             "rho": float(rho[j])})
            if s == len(stages):
                arrays[f"{name}_random_{method}"] = rm.astype(np.float32)
        del twin
    arrays[f"{name}_random_index"] = pick
    return Part(tables={"randomisation": pd.DataFrame(rows)}, arrays=arrays)


def _perturbation(name, model, attributions: _Attributions, reference, chosen, config) -> Part:
    """Deletion / insertion curves of each method's pixel order and of random orders."""
    x, targets, maps = attributions.x, attributions.targets, attributions.maps
    rows, curves = [], {}
    for i in tqdm(range(len(chosen)), desc=f"{name}: deletion / insertion"):
        for method in (*METHODS, "random"):
            if method == "random":
                runs = [perturbation_curves(model, x[i:i + 1], int(targets[i]), None, reference,
                                            steps=config.perturbation_steps, random_state=config.seed + r)
                        for r in range(max(1, config.random_orders))]
                c = {k: np.mean([run[k] for run in runs], 0) for k in ("deletion", "insertion")}
            else:
                c = perturbation_curves(model, x[i:i + 1], int(targets[i]), maps[method][i], reference,
                                        steps=config.perturbation_steps, random_state=config.seed)
            for kind in ("deletion", "insertion"):
                curves.setdefault(f"{name}_curve_{method}_{kind}", []).append(c[kind])
            rows.append({"network": name, "method": method, "relpath": chosen["relpath"].iloc[i],
                         "patient": chosen["patient"].iloc[i],
                         "deletion_auc": float(curve_auc(c["deletion"])[0]),
                         "insertion_auc": float(curve_auc(c["insertion"])[0])})
    return Part(tables={"perturbation": pd.DataFrame(rows)},
                arrays={k: np.stack(v).astype(np.float32) for k, v in curves.items()})


# -- layers and neurons --------------------------------------------------------------------------
def network_neurons(model: torch.nn.Module, dataset: XrayDataset, config: ExplainConfig, device) -> Part:
    """Filters, feature visualisation, top patches and class-separating channels of one network.

    Parameters
    ----------
    model
        The network (:attr:`~pneumo.explain.config.ExplainConfig.neuron_network`), in eval mode.
    dataset
        The data set it was computed on; ``config.patch_images`` training images are scanned.
    config
        The task settings.
    device
        Where the model lives.

    Returns
    -------
    Part
        Tables ``channels`` (the strongest channels per block) and ``class_channels``; arrays
        ``filters``, ``maxact_<block>``, ``patches_<block>`` and ``class_channel_patches``.
    """
    train_x, train_rows = dataset.subset("train")
    rng = np.random.default_rng(config.seed)
    take = np.sort(rng.choice(len(train_x), min(config.patch_images, len(train_x)), replace=False))
    images, labels = train_x[take], train_rows["target"].to_numpy()[take]
    stats = channel_statistics(model, images, device=device)
    fields = receptive_fields(model)
    side = images.shape[1]
    arrays = {"filters": first_layer_filters(model).astype(np.float32)}
    rows = []
    for b, (block, s) in enumerate(stats.items()):
        field, stride = fields[block]
        grid = side // 2**b
        # The channels with the strongest typical response (mean over images of their maximum).
        strength = s["max"].mean(0)
        channels = np.argsort(-strength, kind="stable")[:config.neuron_channels]
        arrays[f"maxact_{block}"] = activation_maximisation(
            model, block, channels.tolist(), size=side, steps=config.maxact_steps,
            random_state=config.seed, device=device)
        patches = [top_patches(images, s, int(c), grid=grid, field=field, stride=stride, k=config.top_patches)[0]
                   for c in channels]
        arrays[f"patches_{block}"] = np.stack(patches)
        for c in channels:
            rows.append({"block": block, "channel": int(c), "channels_in_block": int(s["max"].shape[1]),
                         "mean_max_activation": float(strength[c]), "receptive_field": field, "stride": stride})
    separating, arrays["class_channel_patches"] = _class_channels(images, labels, stats, fields, config)
    return Part(tables={"channels": pd.DataFrame(rows), "class_channels": separating}, arrays=arrays,
                metrics={"neuron_network": config.neuron_network, "patch_images": int(len(images))})


def _class_channels(images, labels, stats, fields, config) -> tuple[pd.DataFrame, np.ndarray]:
    """The last-block channels that separate the classes, and their most exciting patches."""
    last = list(stats)[-1]
    field, stride = fields[last]
    grid = images.shape[1] // 2**(len(stats) - 1)
    separating = class_separating_channels(stats[last]["mean"], labels, CLASSES, k=config.class_channels)
    separating.insert(0, "block", last)
    patches = np.stack([
        top_patches(images, stats[last], int(c), grid=grid, field=field, stride=stride, k=config.top_patches)[0]
        for c in separating["channel"]]) if len(separating) else np.zeros((0, 0, 0, 0), np.uint8)
    # Class mix of the most exciting images of each separating channel (do they come from the class?).
    top_labels = [labels[np.argsort(-stats[last]["max"][:, int(c)], kind="stable")[:config.top_patches]]
                  for c in separating["channel"]]
    separating["top_patch_share_of_class"] = [float(np.mean(t == CLASSES.index(cls)))
                                              for t, cls in zip(top_labels, separating["class"])]
    return separating, patches


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
