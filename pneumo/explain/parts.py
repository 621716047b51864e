"""Task 4's computations, each giving a :class:`Part`: one network's explanations, its neurons.

:func:`explain_network` gives a network's attribution maps on the chosen test images, where
they fall (lung fields, border), the parameter-randomisation test and the deletion /
insertion curves; :func:`network_neurons` gives the first-layer filters, activation
maximisation, top training patches and class-separating channels of one network.
:func:`pneumo.explain.task.run_explain` runs them and publishes the parts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ContextManager

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pneumo.data import BINARY_CLASSES, CLASSES, XrayDataset
from pneumo.explain.attribution import GradCAM, ShapGradient, attribute_all, block_layers
from pneumo.explain.config import METHODS, ExplainConfig
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
from pneumo.results import Entry

__all__ = ["Part", "Phase", "explain_network", "network_neurons"]

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


def _rows_for(dataset: XrayDataset, relpaths) -> np.ndarray:
    position = pd.Series(np.arange(len(dataset.table)), index=dataset.table["relpath"])
    missing = [r for r in relpaths if r not in position.index]
    if missing:
        raise KeyError(f"images not in the data set at {dataset.root}: {missing[:3]}")
    return position.loc[list(relpaths)].to_numpy()


def _as_input(images: np.ndarray, device) -> torch.Tensor:
    return to_model_input(torch.as_tensor(np.ascontiguousarray(images)).to(device))  # (N, 1, H, W)


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
        Its Task 1 entry (for the network's own ``network_predictions`` table).
    dataset
        The data set it was computed on.
    chosen
        The test images (:func:`~pneumo.explain.task.choose_images`).
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
        predictions = entry.table("network_predictions")  # the explained network's own
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
