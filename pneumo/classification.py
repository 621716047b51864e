"""Task 1: CNN classification of chest X-rays (1a binary, 1b three classes).

The story of :func:`run_classification`:

1. load the decoded data set (patient-grouped train / validation / test splits);
2. train each variant of the grid on *train*, compare them on *validation* only;
3. retrain the winner at the full epoch budget when the grid was screened at a smaller one;
4. score the chosen model on validation films under controlled shifts (:mod:`pneumo.shift`:
   exposure, sharpness, framing, border) and choose the 1a decision threshold by the rule
   whose cuts hold best there;
5. train the chosen variant with ``seeds`` seeds; the reported classifier averages their
   probabilities (the seed ensemble, which holds up best under the shifts);
6. touch *test* once, with the reported classifier and with each seed network: metrics with
   patient-bootstrap CIs, per-image predictions, curves;
7. publish everything as one cache entry.

Every trained variant is its own cache entry, so an interrupted grid resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from functools import partial
from typing import Any, Optional

import numpy as np
import pandas as pd

from pneumo.config import ConfigError, TaskConfig, param
from pneumo.data import BINARY_CLASSES, CLASSES, XrayDataset, load_dataset
from pneumo.device import configure_threads, pick_device, seed_everything
from pneumo.metrics import (
    binary_metrics,
    choose_threshold,
    confusion,
    metrics_table,
    multiclass_metrics,
    viral_given_pneumonia,
)
from pneumo.models import INTENSITY_MODES, architecture_table, build_model, count_parameters
from pneumo.pool import map_in_workers
from pneumo.results import Entry, ResultCache
from pneumo.runner import task_spec
from pneumo.shift import (SELECTION_CRITERIA, THRESHOLD_RULES_UNDER_SHIFT, multiclass_shift_metrics,
                          robustness_summary, score_under_shifts, threshold_under_shift)
from pneumo.training import predict_proba, stop_if_interrupted, train_classifier
from pneumo.upstream import load_classifier

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class ClassifierConfig(TaskConfig):
    """Shared fields of the Task 1 configs (each task's config stays flat)."""

    resolution: int = param(128, "input side in pixels", interval="[8, inf)")
    width: int = param(16, "channels of the first block (doubling per block)", interval="[1, inf)")
    depth: int = param(4, "number of convolution blocks", interval="[1, inf)")
    convs_per_block: int = param(2, "3x3 convolutions per block", interval="[1, inf)")
    dropout: float = param(0.3, "dropout before the classifier head", interval="[0, 1)")
    intensity: str = param("stretch", "per-image input normalisation, the network's first layer "
                           "(stretch: each image's 1st-99th percentile to the full range; none)",
                           choices=INTENSITY_MODES)
    epochs: int = param(12, "maximum epochs of the final model", interval="[1, inf)")
    grid: str = param("reduced", "variants compared on validation", choices=("none", "reduced", "full"))
    train_workers: int = param(1, "grid variants trained at once in worker processes, spread over every "
                               "visible GPU (1: one after another here)", key=False, interval="[1, inf)")
    grid_epochs: int = param(4, "epochs per grid variant (the winner is retrained for `epochs`)",
                             interval="[1, inf)")
    batch_size: int = param(64, "images per step", interval="[1, inf)")
    lr: float = param(2e-3, "peak AdamW learning rate", interval="(0, inf)")
    weight_decay: float = param(1e-4, "AdamW weight decay", interval="[0, inf)")
    warmup_epochs: float = param(1.0, "linear warm-up before cosine decay", interval="[0, inf)")
    patience: int = param(4, "epochs without validation improvement before stopping", interval="[0, inf)")
    balance: str = param("weights", "class imbalance: loss weights, resampling or none",
                         choices=("weights", "sampling", "none"))
    augment: bool = param(True, "random affine + intensity augmentation on the device")
    border_mask: float = param(0.12, "black out a random border frame up to this share of the side on half "
                               "the training images, with or without augment (0: off)", interval="[0, 0.5)")
    label_smoothing: float = param(0.0, "cross-entropy label smoothing", interval="[0, 1)")
    mixup: float = param(0.0, "mixup's alpha: blend each training batch with a shuffled copy of itself, images "
                         "and labels, by a Beta(alpha, alpha) weight (0: off)", interval="[0, inf)")
    seeds: int = param(1, "training seeds of the chosen variant; with several, the reported classifier averages "
                       "their probabilities (the seed ensemble), the first is the network later tasks study, "
                       "and the report gives the spread of their figures", interval="[1, inf)")
    selection: str = param("plain", "rank the grid's variants on validation as it is (plain, which the "
                           "training pool's easy films saturate), or by their mean validation ROC AUC "
                           "over the shifted copies of the validation films (shift; not yet the default: "
                           "measured on real data only through benchmarks/bench_screen.py)",
                           choices=tuple(SELECTION_CRITERIA))
    val_fraction: float = param(0.15, "share of train patients held out for validation", interval="(0, 1)")
    comparators: bool = param(True, "add the torchxrayvision DenseNet-121 when its weights are cached")
    threshold_rule: str = param("shift", "1a decision threshold: the rule that holds best on shifted "
                                "validation films (shift), or that rule (1b passes it to its 1a)",
                                choices=("shift", *THRESHOLD_RULES_UNDER_SHIFT))

    def validate(self) -> None:
        # Each block halves the image: fewer pixels than 2**depth leave nothing to pool.
        if self.resolution < 2 ** self.depth:
            raise ConfigError(
                f"{type(self).__name__}.resolution {self.resolution} is too small for depth "
                f"{self.depth}: each block halves the image, so it needs at least "
                f"2**{self.depth} = {2 ** self.depth} pixels; raise resolution or lower depth")


_SMOKE = dict(resolution=64, width=8, depth=3, epochs=6, grid_epochs=2, grid="reduced", lr=3e-3,
              batch_size=32, bootstrap=200, patience=4, warmup_epochs=0.5, comparators=False)
# A laptop's cores train this network about 7x faster at 64 px than at 128 px (cache-sized
# activations), with the same carve-out test figures (see the README's benchmark). Two grid
# variants at a time on one core each train ~10-15% more images/s on 2 cores than one on both
# (small convolutions scale poorly over threads); 8 epochs keep the report near 30 minutes.
# Three seeds: their ensemble kept a balanced accuracy of 0.98 on the worst of the validation
# shifts, where single networks fell to 0.93-0.97 and any two seeds to 0.93-0.97 (README).
_CPU = dict(resolution=64, epochs=8, train_workers=2, seeds=3)
_GPU = dict(resolution=224, width=32, depth=5, epochs=40, grid_epochs=40, grid="full",
            batch_size=64, patience=8, warmup_epochs=2.0, train_workers=4, seeds=3)


@dataclasses.dataclass(frozen=True)
class BinaryConfig(ClassifierConfig):
    """Task 1a: normal vs pneumonia, VGG-style CNN trained from scratch."""

    PROFILES = {"smoke": _SMOKE, "cpu": _CPU, "gpu": _GPU}


@dataclasses.dataclass(frozen=True)
class MulticlassConfig(ClassifierConfig):
    """Task 1b: normal / bacterial / viral, starting from the Task 1a network."""

    init: str = param("binary", "start from the Task 1a network or from scratch",
                      choices=("binary", "scratch"))
    epochs: int = param(10, "maximum epochs of the final model", interval="[1, inf)")
    lr: float = param(1e-3, "peak AdamW learning rate (lower: fine-tuning 1a)", interval="(0, inf)")
    label_smoothing: float = param(0.05, "cross-entropy label smoothing", interval="[0, 1)")

    # One seed at `cpu`: 1b's seed ensemble matched its networks (accuracy 0.849 against
    # 0.841-0.853; worst shifted balanced accuracy 0.718 against 0.700-0.721) for 6 more minutes.
    PROFILES = {"smoke": _SMOKE, "cpu": {**_CPU, "seeds": 1}, "gpu": {**_GPU, "epochs": 30}}


# -- the grid --------------------------------------------------------------------------------
# One factor at a time around the configured baseline: each row changes one design choice.
def grid_variants(config: ClassifierConfig) -> list[tuple[str, dict[str, Any]]]:
    """The variants to compare on validation, as ``(name, field changes)``.

    ``reduced`` covers each design axis once (balancing, augmentation, input normalisation,
    width, resolution);
    ``full`` adds a second point on the width/depth/resolution axes. 1b inherits 1a's
    architecture and the training choices 1a's grid made (balancing, augmentation, input
    normalisation), so its ``reduced`` grid measures what 1a's could not, the initialisation;
    its ``full`` grid measures those choices again for three classes. The
    torchxrayvision transfer comparator joins 1a's grid when ``comparators`` is set (it is
    skipped, with the reason, when its weights are not cached).
    """
    if config.grid == "none":
        return [("baseline", {})]
    variants = [("baseline", {})]
    if isinstance(config, MulticlassConfig) and config.init == "binary":
        # 1b inherits 1a's architecture and choices; what is left to measure is the initialisation.
        variants += [("init=scratch", {"init": "scratch"})]
        if config.grid == "reduced":
            return variants
    other_balance = [b for b in ("weights", "sampling", "none") if b != config.balance]
    variants += [(f"balance={b}", {"balance": b}) for b in other_balance]
    variants += [(f"augment={not config.augment}", {"augment": not config.augment})]
    variants += [(f"intensity={m}", {"intensity": m}) for m in INTENSITY_MODES if m != config.intensity]
    if isinstance(config, MulticlassConfig):
        return variants
    low_res = max(32, (config.resolution * 3 // 4) // 16 * 16)
    variants += [(f"width={config.width * 3 // 2}", {"width": config.width * 3 // 2})]
    variants += [(f"resolution={low_res}", {"resolution": low_res})]
    if config.grid == "full":
        high_res = config.resolution * 5 // 4 // 16 * 16
        variants += [(f"depth={config.depth - 1}", {"depth": config.depth - 1})]
        variants += [(f"width={config.width * 2}", {"width": config.width * 2})]
        variants += [(f"resolution={high_res}", {"resolution": high_res})]
    if config.comparators:
        variants += [("xrv-densenet121", {"arch": "xrv-densenet121", "resolution": 224})]
    return variants


def variant_kind(task: str) -> str:
    """The cache folder of a task's trained variants (grid, final and seed networks), e.g.
    ``"binary-variant"``."""
    return f"{task}-variant"


def _task_name(config: ClassifierConfig) -> str:
    return "binary" if isinstance(config, BinaryConfig) else "multiclass"


def _targets(table: pd.DataFrame, task: str) -> np.ndarray:
    return table["binary" if task == "binary" else "target"].to_numpy()


def _select_score(task: str, targets: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Validation metrics used to compare variants."""
    if task == "binary":
        m = binary_metrics(targets, proba[:, 1], threshold=choose_threshold(targets, proba[:, 1]))
    else:
        m = multiclass_metrics(targets, proba, class_names=CLASSES)
    return {k: m[k] for k in ("roc_auc", "balanced_accuracy", "accuracy")}


def _validation_under_shift(task: str, predict, images: np.ndarray, targets: np.ndarray, *,
                            seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A predictor's validation figures under the shift benchmark (:mod:`pneumo.shift`).

    ``predict`` maps uint8 (N, H, W) images to (N, classes) probabilities.

    Returns the per-shift table (1a: ``roc_auc``; 1b: :func:`~pneumo.shift.multiclass_shift_metrics`)
    and its summary: ``val_shift_roc_auc_mean`` (the grid's ``shift`` selection criterion),
    ``val_shift_roc_auc_worst`` and ``val_shift_worst`` (that shift's name).
    """
    if task == "binary":
        def metrics(y, proba):  # proba: (N, 2)
            return {"roc_auc": float(binary_metrics(y, proba[:, 1])["roc_auc"])}
    else:
        metrics = multiclass_shift_metrics
    table, _ = score_under_shifts(predict, images, targets, metrics, seed=seed)
    summary = robustness_summary(table, "roc_auc")
    return table, {"val_shift_roc_auc_mean": summary["mean"], "val_shift_roc_auc_worst": summary["worst"],
                   "val_shift_worst": summary["worst_shift"]}


# -- one trained variant -------------------------------------------------------------------
def train_variant(
    config: ClassifierConfig,
    data: XrayDataset,
    *,
    changes: dict[str, Any],
    epochs: int,
    cache: ResultCache,
    init_state: Optional[dict] = None,
    init_key: str = "",
) -> Entry:
    """Train one variant on *train*, score it on *validation*; cached by its settings.

    Parameters
    ----------
    config
        The task config; ``changes`` are applied on top (``arch`` selects the comparator).
    data
        Decoded data set at the variant's resolution.
    init_state, init_key
        Optional starting weights (Task 1b from Task 1a) and a string naming them for the key.
    """
    task = _task_name(config)
    arch = changes.get("arch", "vgg")
    settings = {**config.replace(**{k: v for k, v in changes.items() if k != "arch"}).key_dict(),
                "arch": arch, "epochs": epochs, "init": init_key}
    # Fields that choose among variants or set the test threshold do not change a variant.
    for unused in ("grid", "grid_epochs", "bootstrap", "comparators", "profile", "selection", "threshold_rule",
                   "seeds"):
        settings.pop(unused, None)
    entry = cache.lookup(variant_kind(task), settings, data.fingerprint, task_spec(task).code)
    if entry.exists and not config.force:
        return entry
    key = entry.key

    device = pick_device(config.device)
    seed_everything(config.seed)
    num_classes = 2 if task == "binary" else 3
    model = build_model({**settings, "num_classes": num_classes})
    if init_state is not None:
        # Task 1b starts from 1a: every layer but the classifier head carries over.
        body = {k: v for k, v in init_state.items() if not k.startswith("head.")}
        missing, _ = model.load_state_dict(body, strict=False)
        log.info("initialised from Task 1a (new layers: %s)", missing)

    train_x, train_rows = data.subset("train")
    val_x, val_rows = data.subset("val")
    with cache.write(variant_kind(task), key, reuse=not config.force) as out:
        if out is None:  # trained meanwhile by another process
            return entry
        with out.phase("train"):
            result = train_classifier(
                model, train_x, _targets(train_rows, task), val_x, _targets(val_rows, task),
                num_classes=num_classes, epochs=epochs, batch_size=settings["batch_size"],
                lr=settings["lr"], weight_decay=settings["weight_decay"],
                warmup_epochs=settings["warmup_epochs"], patience=settings["patience"],
                balance=settings["balance"], augment=settings["augment"],
                border_mask=settings["border_mask"],
                label_smoothing=settings["label_smoothing"], mixup=settings["mixup"], device=device,
                seed=config.seed,
            )
        stop_if_interrupted(result, cache.root, f"{variant_kind(task)}-{key}", settings)
        model.load_state_dict(result.best_state)
        with out.phase("validate"):
            val_proba = predict_proba(model, val_x, device=device)
        with out.phase("shift"):
            shifts, under_shift = _validation_under_shift(
                task, lambda x: predict_proba(model, x, device=device), val_x, _targets(val_rows, task),
                seed=config.seed)
        out.json("params", settings)
        out.json("metrics", {**_select_score(task, _targets(val_rows, task), val_proba), **under_shift,
                             "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                             "stopped_early": result.stopped_early,
                             "train_seconds": result.seconds,
                             "parameters": count_parameters(model)})
        out.table("history", result.history, top=True)
        out.table("val_shifts", shifts)
        out.arrays(val_proba=val_proba)
        out.model(result.best_state, {**settings, "num_classes": num_classes})
    return entry


# -- the whole task ------------------------------------------------------------------------
def run_classification(config: ClassifierConfig, *, compute: bool = True) -> Entry:
    """Run Task 1a or 1b end to end (or return its cached entry).

    Parameters
    ----------
    config
        A :class:`BinaryConfig` or :class:`MulticlassConfig`.
    compute
        False only looks the entry up: the returned entry may not exist.

    Returns
    -------
    Entry
        The task's cache entry; ``entry.metrics`` holds the headline test figures.
    """
    configure_threads()
    task = _task_name(config)
    cache = ResultCache(config.cache, writable=compute)
    data = _load_like(config, cache)

    init_state, init_key = None, ""
    if isinstance(config, MulticlassConfig) and config.init == "binary":
        binary_entry = run_classification(binary_config_for(config), compute=compute)
        if not binary_entry.exists:
            return binary_entry  # upstream not computed yet (compute=False): 1b's key needs it
        chosen = binary_entry.load_model()
        # 1b inherits 1a's chosen architecture, resolution and training choices (1a's screen
        # measured them), then improves on it.
        inherit = {k: chosen["config"][k] for k in ("width", "depth", "convs_per_block", "resolution",
                                                    "balance", "augment")}
        inherit["intensity"] = chosen["config"].get("intensity", "none")
        if chosen["config"].get("arch", "vgg") == "vgg":
            config = config.replace(**inherit)
            # Named by 1a's network (its variant entry), not by 1a's task entry, whose key also
            # holds what does not change the network (seeds, bootstrap, threshold rule).
            init_state, init_key = chosen["state_dict"], f"{variant_kind('binary')}/{binary_entry.metrics['variant_entry']}"
            if config.resolution != data.resolution:
                data = _load_like(config, cache)

    entry = cache.lookup(task, {**config.key_dict(), "init": init_key}, data.fingerprint, task_spec(task).code)
    if (entry.exists and not config.force) or not compute:
        return entry
    key = entry.key

    with cache.write(task, key, reuse=not config.force) as out:
        if out is None:  # computed meanwhile by another process
            return entry
        with out.phase("grid"):
            grid = _run_grid(config, data, cache, init_state, init_key)
        winner = grid.iloc[0]
        log.info("%s: validation chooses %s", task, winner["variant"])
        changes = _changes_of(config, winner["variant"])
        final_data = data if changes.get("resolution", config.resolution) == data.resolution \
            else _load_like(config.replace(resolution=changes["resolution"]), cache)
        with out.phase("final_training"):
            # With several workers the seed networks train side by side.
            _train_in_workers(config, [(changes, config.seed + i) for i in range(config.seeds)], config.epochs,
                              init_state, init_key)
            # Seed config.seed + i trains the i-th network; the data split always keeps config.seed.
            members = [train_variant(config.replace(seed=config.seed + i), final_data, changes=changes,
                                     epochs=config.epochs, cache=cache, **_init_for(changes, init_state, init_key))
                       for i in range(config.seeds)]
        final = members[0]
        with out.phase("test"):
            summary = _evaluate(config, members, final_data, out)
        out.json("params", {**config.to_dict(), "init_entry": init_key})
        out.json("metrics", {**summary, "chosen_variant": winner["variant"],
                             "data_synthetic": final_data.is_synthetic})
        out.json("data_summary", final_data.summary())
        out.table("data_summary", final_data.summary_table().reset_index())
        out.table("grid", grid)
        out.table("history", final.table("history"), top=True)
        saved = final.load_model()
        out.model(saved["state_dict"], saved["config"], task=task)
        model = build_model(saved["config"])
        out.table("architecture", architecture_table(
            model, input_shape=(1, 1, saved["config"]["resolution"], saved["config"]["resolution"])))
    log.info("%s: result at %s", task, entry.path)
    return entry


def binary_config_for(config: MulticlassConfig) -> BinaryConfig:
    """The Task 1a config sharing 1b's data, model and training settings.

    1b's own defaults for ``epochs``, ``lr`` and ``label_smoothing`` differ from 1a's on
    purpose (it fine-tunes), and so may its ``seeds``, so 1a keeps its profile's values for those.
    """
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(BinaryConfig)}
    defaults = BinaryConfig.create(config.profile)
    for name in ("epochs", "lr", "label_smoothing", "seeds"):
        shared[name] = getattr(defaults, name)
    return BinaryConfig(**shared)


def _load_like(config: ClassifierConfig, cache: ResultCache) -> XrayDataset:
    """The decoded data set at the config's resolution and split settings.

    Task 1a also uses pneumonia images whose name gives no subtype; 1b cannot.
    """
    return load_dataset(config.data, resolution=config.resolution, val_fraction=config.val_fraction,
                        seed=config.seed, cache_dir=cache.root, num_workers=config.num_workers,
                        subtypes=isinstance(config, MulticlassConfig))


def _changes_of(config: ClassifierConfig, variant: str) -> dict[str, Any]:
    return dict(grid_variants(config))[variant]


def _init_for(changes: dict[str, Any], init_state, init_key) -> dict[str, Any]:
    """Starting weights for a variant: 1a's, unless it trains from scratch or is a comparator."""
    if changes.get("init") == "scratch" or changes.get("arch", "vgg") != "vgg":
        return {"init_state": None, "init_key": ""}
    return {"init_state": init_state, "init_key": init_key}


def _run_grid(config, data, cache, init_state, init_key) -> pd.DataFrame:
    """Train every variant at the screening budget; rank them on validation."""
    from pneumo.models.xrv import XRVWeightsUnavailable

    rows = []
    variants = grid_variants(config)
    screen_epochs = config.epochs if len(variants) == 1 else min(config.grid_epochs, config.epochs)
    datasets = {data.resolution: data}
    for resolution in {changes.get("resolution", config.resolution) for _, changes in variants} - {data.resolution}:
        datasets[resolution] = _load_like(config.replace(resolution=resolution), cache)
    _train_in_workers(config, [(changes, config.seed) for _, changes in variants], screen_epochs,
                      init_state, init_key)
    for number, (name, changes) in enumerate(variants, 1):
        log.info("%s grid: variant %d of %d, %s (%d epochs)", type(config).__name__.removesuffix("Config").lower(),
                 number, len(variants), name, screen_epochs)
        resolution = changes.get("resolution", config.resolution)
        try:
            entry = train_variant(config, datasets[resolution], changes=changes, epochs=screen_epochs,
                                  cache=cache, **_init_for(changes, init_state, init_key))
        except XRVWeightsUnavailable as error:
            log.warning("variant %s skipped: %s", name, error)
            rows.append({"variant": name, "status": f"skipped: {error}"})
            continue
        m = entry.metrics
        rows.append({"variant": name, "status": "trained", "val_roc_auc": m["roc_auc"],
                     "val_balanced_accuracy": m["balanced_accuracy"], "val_accuracy": m["accuracy"],
                     "val_shift_roc_auc_mean": m["val_shift_roc_auc_mean"],
                     "val_shift_roc_auc_worst": m["val_shift_roc_auc_worst"],
                     "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
                     "train_seconds": m["train_seconds"], "parameters": m["parameters"]})
    grid = pd.DataFrame(rows)
    trained = grid[grid["status"] == "trained"].sort_values(
        grid_ranking(config.selection), ascending=False, kind="stable")
    return pd.concat([trained, grid[grid["status"] != "trained"]], ignore_index=True)


def _train_in_workers(config: ClassifierConfig, runs: list[tuple[dict[str, Any], int]], epochs: int,
                      init_state, init_key: str) -> None:
    """Train ``runs``, ``(changes, training seed)`` pairs, at once in ``train_workers`` worker
    processes into the cache; the code after it trains them one by one and finds each there.
    Nothing happens with one worker or one run (the data split always keeps ``config.seed``)."""
    if config.train_workers <= 1 or len(runs) <= 1:
        return
    map_in_workers(_train_variant_job, [
        {"config": config, "changes": changes, "seed": seed, "epochs": epochs,
         **_init_for(changes, init_state, init_key)}
        for changes, seed in runs], workers=config.train_workers, device=config.device)


def _train_variant_job(config: ClassifierConfig, changes: dict[str, Any], seed: int, epochs: int, init_state,
                       init_key: str, device: str) -> None:
    """One variant in a worker process (:func:`pneumo.pool.map_in_workers`): train it into the cache."""
    from pneumo.models.xrv import XRVWeightsUnavailable

    config, cache = config.replace(device=device), ResultCache(config.cache)
    data = _load_like(config.replace(resolution=changes.get("resolution", config.resolution)), cache)
    try:
        train_variant(config.replace(seed=seed), data, changes=changes, epochs=epochs, cache=cache,
                      init_state=init_state, init_key=init_key)
    except XRVWeightsUnavailable:
        pass  # the grid's own loop skips it, with the reason


def grid_ranking(selection: str) -> list[str]:
    """The grid table's columns that rank its variants, most important first (ties keep the
    grid's order, which lists the baseline first)."""
    return list(dict.fromkeys([SELECTION_CRITERIA[selection], "val_roc_auc", "val_balanced_accuracy"]))


@dataclasses.dataclass
class _Scored:
    """A classifier's figures, not yet written: ``summary`` (``metrics.json`` keys), ``tables``
    (name -> table), curve ``arrays`` and per-image ``predictions`` on validation and test."""

    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    arrays: dict[str, np.ndarray]
    predictions: pd.DataFrame


def _score(config: ClassifierConfig, predict, data: XrayDataset) -> _Scored:
    """Score a classifier on validation under shift, choose 1a's threshold there, then touch
    *test* once: metrics with patient-bootstrap CIs, confusion matrix, curves, predictions.

    ``predict`` maps uint8 (N, H, W) images to (N, classes) probabilities: one network, or the
    seed ensemble's mean.
    """
    task = _task_name(config)
    val_x, val_rows = data.subset("val")
    test_x, test_rows = data.subset("test")
    val_proba, test_proba = predict(val_x), predict(test_x)  # (N, classes)
    y_val, y_test = _targets(val_rows, task), _targets(test_rows, task)
    groups = test_rows["patient"].to_numpy()
    classes = BINARY_CLASSES if task == "binary" else CLASSES

    summary: dict[str, Any] = {}
    tables: dict[str, pd.DataFrame] = {}
    arrays: dict[str, np.ndarray] = {}
    if task == "binary":
        threshold, rule, shifts, rules = threshold_under_shift(lambda x: predict(x)[:, 1], val_x, y_val,
                                                               rule=config.threshold_rule, seed=config.seed)
        tables["threshold_rules"] = rules
        log.info("binary: threshold %.3f by rule %s (%s)", threshold, rule, THRESHOLD_RULES_UNDER_SHIFT[rule])
        table = metrics_table(partial(binary_metrics, threshold=threshold), y_test, test_proba[:, 1], groups,
                              n_boot=config.bootstrap, seed=config.seed).reset_index()
        val_predicted = (val_proba[:, 1] >= threshold).astype(int)
        predicted = (test_proba[:, 1] >= threshold).astype(int)
        summary.update(threshold=threshold, threshold_rule=rule)
        _curves(arrays, "test", y_test, test_proba[:, 1])
        _curves(arrays, "val", y_val, val_proba[:, 1])
    else:
        shifts = _validation_under_shift(task, predict, val_x, y_val, seed=config.seed)[0]
        table = metrics_table(partial(multiclass_metrics, class_names=CLASSES), y_test, test_proba, groups,
                              n_boot=config.bootstrap, seed=config.seed).reset_index()
        val_predicted, predicted = val_proba.argmax(1), test_proba.argmax(1)
        for c, name in enumerate(CLASSES):
            _curves(arrays, f"test_{name}", (y_test == c).astype(int), test_proba[:, c])
        # Induced figures: bacterial vs viral among pneumonia images, and sick vs healthy.
        sick = y_test > 0
        p_viral = viral_given_pneumonia(test_proba[sick])  # (n_sick,)
        bv = metrics_table(binary_metrics, (y_test[sick] == 2).astype(int),
                           p_viral, groups[sick], n_boot=config.bootstrap, seed=config.seed).reset_index()
        _curves(arrays, "test_bacterial_vs_viral", (y_test[sick] == 2).astype(int), p_viral)
        p_sick = 1 - test_proba[:, 0]
        induced = metrics_table(binary_metrics, (y_test > 0).astype(int),
                                p_sick, groups, n_boot=config.bootstrap, seed=config.seed).reset_index()
        _curves(arrays, "test_induced_binary", (y_test > 0).astype(int), p_sick)
        tables.update(bacterial_vs_viral=bv, induced_binary=induced)
        summary["bacterial_vs_viral_roc_auc"] = float(bv.set_index("metric").loc["roc_auc", "value"])
        summary["induced_binary_roc_auc"] = float(induced.set_index("metric").loc["roc_auc", "value"])
        summary["induced_binary_accuracy"] = float(induced.set_index("metric").loc["accuracy", "value"])

    tables["val_shifts"] = shifts
    summary["val_shift_roc_auc_mean"] = robustness_summary(shifts, "roc_auc")["mean"]
    summary["val_shift_balanced_accuracy_worst"] = robustness_summary(shifts, "balanced_accuracy")["worst"]
    tables["test_metrics"] = table
    cm = confusion(y_test, predicted, len(classes))
    tables["confusion"] = pd.DataFrame(cm, index=classes, columns=classes).rename_axis("true").reset_index()
    predictions = pd.concat([_prediction_frame(val_rows, val_proba, classes, "val"),
                             _prediction_frame(test_rows, test_proba, classes, "test")], ignore_index=True)
    predictions["predicted"] = np.concatenate([val_predicted, predicted])
    values = table.set_index("metric")["value"]
    summary.update({f"test_{k}": float(v) for k, v in values.items() if np.isfinite(v)})
    summary.update({"test_images": int(len(y_test)), "test_patients": int(len(set(groups))),
                    "train_images": int((data.table["split"] == "train").sum()), "val_images": int(len(y_val))})
    return _Scored(summary, tables, arrays, predictions)


def _evaluate(config: ClassifierConfig, members: list[Entry], data: XrayDataset, out) -> dict[str, Any]:
    """Score the reported classifier, and each seed network, once on *test*; write them.

    The reported classifier is the one network when there is one seed, else the seed
    ensemble, which averages the members' probabilities: on validation under shift it keeps
    its balanced accuracy better than any one network (see the README's benchmark). The
    first member is the saved network that Tasks 1b, 2 and 4 build on; its own figures are
    the ``network_*`` tables.

    Returns
    -------
    dict
        The task's ``metrics.json``: the reported classifier's figures and, with several
        seeds, :func:`seed_spread` of the ``seeds`` table (also written).
    """
    task = _task_name(config)
    device = pick_device(config.device)
    networks = [load_classifier(member, device)[0] for member in members]

    # Each network scores each (shifted) image set once; the ensemble reuses the members' scores.
    memo: dict[tuple[int, bytes], np.ndarray] = {}

    def network_proba(i: int, images: np.ndarray) -> np.ndarray:  # (N, H, W) uint8 -> (N, classes)
        key = (i, hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16).digest())
        if key not in memo:
            memo[key] = predict_proba(networks[i], images, device=device)
        return memo[key]

    def predictor(members: list[int]):
        return lambda images: np.mean([network_proba(i, images) for i in members], axis=0)

    scored = [_score(config, predictor([i]), data) for i in range(len(networks))]
    reported = scored[0] if len(networks) == 1 else _score(config, predictor(list(range(len(networks)))), data)
    for name, table in reported.tables.items():
        out.table(name, table)
    out.table("predictions", reported.predictions)
    out.arrays(**reported.arrays)
    out.table("network_test_metrics", scored[0].tables["test_metrics"])
    out.table("network_predictions", scored[0].predictions)

    summary = {**reported.summary, "ensemble_members": len(networks),
               "parameters": count_parameters(networks[0]), "train_seconds": members[0].metrics["train_seconds"],
               "train_seconds_all_seeds": float(sum(m.metrics["train_seconds"] for m in members)),
               "best_epoch": members[0].metrics["best_epoch"], "variant_entry": members[0].path.name}
    if len(networks) > 1:
        figures = [*SEED_FIGURES[task], "val_shift_roc_auc_mean", "val_shift_balanced_accuracy_worst"]
        rows = [{"member": f"seed {config.seed + i}", "seed": config.seed + i, **{f: s.summary[f] for f in figures}}
                for i, s in enumerate(scored)]
        rows.append({"member": f"ensemble of {len(networks)} (reported)", "seed": np.nan,
                     **{f: reported.summary[f] for f in figures}})
        seeds = pd.DataFrame(rows)
        out.table("seeds", seeds)
        summary.update(seed_spread(seeds))
    return summary


#: The test figures of each seed network and of the seed ensemble (``metrics.json`` keys).
SEED_FIGURES = {
    "binary": ("test_roc_auc", "test_accuracy", "test_sensitivity", "test_specificity", "threshold"),
    "multiclass": ("test_accuracy", "test_balanced_accuracy", "test_roc_auc", "bacterial_vs_viral_roc_auc"),
}


def seed_spread(seeds: pd.DataFrame) -> dict[str, float]:
    """Mean, standard deviation and range over the seed networks (not the ensemble) of each
    figure of a ``seeds`` table, and the ensemble's figures: ``seeds_{figure}_mean`` / ``_sd`` /
    ``_min`` / ``_max``, ``ensemble_{figure}`` and ``seeds`` (how many)."""
    members, ensemble = seeds[seeds["seed"].notna()], seeds[seeds["seed"].isna()].iloc[0]
    spread: dict[str, float] = {"seeds": int(len(members))}
    for figure in [c for c in seeds.columns if c not in ("member", "seed")]:
        values = members[figure].astype(float)
        spread.update({f"seeds_{figure}_mean": float(values.mean()), f"seeds_{figure}_sd": float(values.std(ddof=1)),
                       f"seeds_{figure}_min": float(values.min()), f"seeds_{figure}_max": float(values.max()),
                       f"ensemble_{figure}": float(ensemble[figure])})
    return spread


def _prediction_frame(rows: pd.DataFrame, proba: np.ndarray, classes, split: str) -> pd.DataFrame:
    frame = rows[["relpath", "patient", "label"]].copy()
    frame.insert(0, "split", split)
    frame["target"] = rows["binary" if len(classes) == 2 else "target"].to_numpy()
    for c, name in enumerate(classes):
        frame[f"p_{name}"] = proba[:, c]
    return frame


def _curves(arrays: dict, prefix: str, y: np.ndarray, score: np.ndarray) -> None:
    from sklearn.metrics import precision_recall_curve, roc_curve

    if len(np.unique(y)) < 2:
        return
    fpr, tpr, _ = roc_curve(y, score)
    precision, recall, _ = precision_recall_curve(y, score)
    arrays.update({f"{prefix}_fpr": fpr, f"{prefix}_tpr": tpr,
                   f"{prefix}_precision": precision, f"{prefix}_recall": recall})
