"""Task 3: anomaly detection with convolutional autoencoders trained on normal lungs only.

The story of :func:`run_anomaly`:

1. load the decoded data set (the same patient-grouped train / validation / test splits as
   Task 1), shrink the images to the autoencoder's resolution and equalise each image's
   histogram (so that exposure, which varies between normal films, is not an anomaly);
2. train each autoencoder variant (latent size, denoising, masking, intensity normalisation)
   on the NORMAL *train*
   images only, early-stopped on the reconstruction loss of the NORMAL *validation* images;
3. score every validation and test image with every anomaly score: three from the
   reconstruction (pixel MSE, SSIM, blurred residual) and three that do not reconstruct at
   all (k-NN and Mahalanobis distance to the training normals in the latent space, and the
   Mahalanobis distance of pooled encoder feature maps);
4. score the validation images again under every acquisition shift of :mod:`pneumo.shift`
   (exposure, sharpness, framing, a black border), so that a pair whose normal films turn
   into anomalies on another machine shows it (:mod:`~pneumo.anomaly.robustness`);
5. choose the (variant, score) pair on *validation*: by its mean ROC AUC of normal vs pneumonia
   when only the normal films are shifted (``selection="normals"``, the default), when every
   film is (``"shift"``), or by its plain ROC AUC, and its threshold as a high percentile of
   the *validation normals'* scores;
6. touch *test* once with that choice: ROC AUC, PR AUC, sensitivity and specificity, with
   patient-bootstrap CIs, against all pneumonia and separately against bacterial and viral;
7. publish everything as one cache entry.

Pneumonia images are never seen in training: :func:`normal_images` is the only way images
reach :func:`train_autoencoder` here, and it refuses anything that is not normal.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd
import torch

from pneumo.anomaly.comparator import XRV_AE_WEIGHTS, XRVAutoencoderUnavailable, load_xrv_autoencoder, xrv_mse_scores
from pneumo.anomaly.config import SCORES, AnomalyConfig
from pneumo.anomaly.data import normal_images, shrink
from pneumo.anomaly.evaluation import add_test_columns, comparison_metrics, headline_metrics, rank_on_validation
from pneumo.anomaly.robustness import shift_summary, shift_table, shifted_images
from pneumo.anomaly.scores import encode_and_score, latent_scores, threshold_from_normals
from pneumo.anomaly.train import train_autoencoder
from pneumo.anomaly.variants import ae_variants, variant_column, variant_settings
from pneumo.data import XrayDataset, load_dataset
from pneumo.device import configure_threads, pick_device, seed_everything
from pneumo.imaging import normalise_intensity, to_model_input
from pneumo.models import ConvAutoencoder, build_autoencoder, count_parameters
from pneumo.pool import map_in_workers
from pneumo.results import Entry, ResultCache
from pneumo.runner import task_spec
from pneumo.training import TrainResult, stop_if_interrupted
from pneumo.training.augment import jittered_copies

log = logging.getLogger(__name__)


def run_anomaly(config: AnomalyConfig, *, compute: bool = True) -> Entry:
    """Run Task 3 end to end (or return its cached entry).

    Parameters
    ----------
    config
        The task config.
    compute
        False only looks the entry up: the returned entry may not exist.

    Returns
    -------
    Entry
        The task's cache entry; ``entry.metrics`` holds the headline test figures, tables
        ``variants`` (every variant x score, chosen first), ``test_metrics``, ``scores``
        (per-image scores of every variant x score on val and test), ``history``,
        ``training_images``; arrays hold example inputs, reconstructions and residuals.
    """
    configure_threads()
    cache = ResultCache(config.cache, writable=compute)
    data = load_dataset(config.data, resolution=config.decode_resolution, val_fraction=config.val_fraction,
                        seed=config.seed, cache_dir=cache.root, num_workers=config.num_workers)
    entry = cache.lookup("anomaly", config.key_dict(), data.fingerprint, task_spec("anomaly").code)
    if (entry.exists and not config.force) or not compute:
        return entry
    key = entry.key

    device = pick_device(config.device)
    with cache.write("anomaly", key, reuse=not config.force) as out:
        if out is None:  # computed meanwhile by another process
            return entry
        _compute(config, data, cache, key, device, out)
    log.info("anomaly: result at %s", entry.path)
    return entry


class _Inputs(NamedTuple):
    """The task's data, ready for the autoencoders."""

    split: dict[str, tuple[np.ndarray, pd.DataFrame]]  # split -> decoded images and rows
    rows: dict[str, pd.DataFrame]  # split -> rows
    autoencoders: list[tuple[str, dict[str, Any]]]  # (variant, settings)
    inputs: dict[str, dict[str, np.ndarray]]  # intensity mode -> split -> uint8 (N, s, s)
    val_shifted: dict[str, np.ndarray]  # shift name -> uint8 (N_val, s, s), before normalisation


class _Trained(NamedTuple):
    """What training and scoring every variant produced."""

    columns: dict[str, dict[str, np.ndarray]]  # "val" / "test" -> column -> scores
    shifted_columns: dict[str, dict[str, np.ndarray]]  # shift name -> column -> validation scores
    variant_rows: list[dict[str, Any]]  # one per (variant, score)
    histories: list[pd.DataFrame]
    models: dict[str, tuple[ConvAutoencoder, dict[str, Any]]]  # variant -> (model, settings)
    train_rows: pd.DataFrame  # the training normals' rows


def _compute(config: AnomalyConfig, data: XrayDataset, cache: ResultCache, key: str, device: torch.device,
             out) -> None:
    """Steps 1-6 of the story above, written into the new entry ``out``."""
    with out.phase("data"):
        prepared = _prepare(config, data)
    rows = prepared.rows
    trained = _train_and_score_all(config, prepared, cache, key, device, out)
    xrv_status = _xrv_comparator(config, prepared.split, trained, device, out)

    with out.phase("select"):
        pairs = [(row["variant"], row["score"]) for row in trained.variant_rows]
        shifts = shift_table(pairs, trained.shifted_columns, rows["val"], config.threshold_quantile)
        variants = rank_on_validation(trained.variant_rows, trained.columns["val"], rows["val"],
                                      shift_summary(shifts), config.selection)
    chosen = variants.iloc[0]
    column = variant_column(chosen["variant"], chosen["score"])
    log.info("anomaly: validation chooses %s (selection %s)", column, config.selection)
    with out.phase("test"):
        val_normal = trained.columns["val"][column][(rows["val"]["label"] == "normal").to_numpy()]
        threshold = threshold_from_normals(val_normal, config.threshold_quantile)
        test_table = comparison_metrics(config, trained.columns["test"][column], rows["test"], threshold)
        variants = add_test_columns(config, variants, trained.columns["test"], rows["test"])
    _publish(config, data, prepared, trained, variants, shifts, chosen, threshold, test_table, xrv_status,
             device, out)


def _prepare(config: AnomalyConfig, data: XrayDataset) -> _Inputs:
    """Split, shrink and intensity-normalise the images; list the variants' settings."""
    split = {s: data.subset(s) for s in ("train", "val", "test")}
    shrunk = {s: shrink(x, config.resolution) for s, (x, _) in split.items()}
    rows = {s: r for s, (_, r) in split.items()}
    autoencoders = [(name, variant_settings(config, changes)) for name, changes in ae_variants(config)]
    # The autoencoders' inputs, per intensity normalisation: {mode: {split: uint8 (N, s, s)}}.
    inputs = {mode: {s: normalise_intensity(x, mode) for s, x in shrunk.items()}
              for mode in dict.fromkeys(settings["intensity"] for _, settings in autoencoders)}
    # Shifts act on the shrunk pixels, before each autoencoder's own normalisation.
    val_shifted = {name: x for name, x in shifted_images(shrunk["val"], seed=config.seed).items() if name != "none"}
    return _Inputs(split, rows, autoencoders, inputs, val_shifted)


def _train_and_score_all(config: AnomalyConfig, prepared: _Inputs, cache: ResultCache, key: str,
                         device: torch.device, out) -> _Trained:
    """Train every variant on the normal train images, then score validation and test with it."""
    rows, autoencoders = prepared.rows, prepared.autoencoders
    columns: dict[str, dict[str, np.ndarray]] = {"val": {}, "test": {}}
    # The unshifted row of the benchmark is validation itself (the same dict, filled once).
    shifted_columns = {"none": columns["val"], **{name: {} for name in prepared.val_shifted}}
    variant_rows, histories, models = [], [], {}
    jobs = []
    for name, settings in autoencoders:
        small = prepared.inputs[settings["intensity"]]
        train_x, train_rows = normal_images(small["train"], rows["train"])
        val_normal_x, _ = normal_images(small["val"], rows["val"])
        jobs.append({"name": name, "settings": settings, "train_x": train_x, "val_normal_x": val_normal_x,
                     "seed": config.seed, "interrupted_as": (str(cache.root), f"anomaly-{key}-{name}")})
    with out.phase("train"):
        # One after another here, or several at once in worker processes (train_workers).
        results = map_in_workers(_train_job, jobs, workers=config.train_workers, device=config.device)
    for (name, settings), job, result in zip(autoencoders, jobs, results):
        small, train_x = prepared.inputs[settings["intensity"]], job["train_x"]
        model = build_autoencoder(settings)
        model.load_state_dict(result.best_state)
        models[name] = (model, settings)
        histories.append(result.history.assign(variant=name))
        scorer = _scorer(config, model, _reference(config, train_x), device)
        with out.phase("score"):
            for s in ("val", "test"):
                _store(columns[s], name, scorer(small[s]))
        with out.phase("shift"):
            for shift, images in prepared.val_shifted.items():
                _store(shifted_columns[shift], name, scorer(normalise_intensity(images, settings["intensity"])))
        variant_rows += _variant_rows(name, settings, result, model)
    return _Trained(columns, shifted_columns, variant_rows, histories, models, train_rows)


def _train_job(name: str, settings: dict[str, Any], train_x: np.ndarray, val_normal_x: np.ndarray, seed: int,
               interrupted_as: tuple[str, str], device: str) -> TrainResult:
    """One autoencoder, :func:`~pneumo.anomaly.train.train_autoencoder` with a variant's settings
    (a :func:`pneumo.pool.map_in_workers` job; the best weights come back on the CPU).

    After Ctrl-C its best weights so far go to ``<interrupted_as[0]>/interrupted/<interrupted_as[1]>.pt``
    and KeyboardInterrupt stops the task (:func:`~pneumo.training.stop_if_interrupted`).
    """
    log.info("anomaly: autoencoder %s (%d epochs) on %s", name, settings["epochs"], device)
    seed_everything(seed)
    model = build_autoencoder(settings)
    result = train_autoencoder(
        model, train_x, val_normal_x, epochs=settings["epochs"], batch_size=settings["batch_size"],
        lr=settings["lr"], weight_decay=settings["weight_decay"], patience=settings["patience"],
        corruption=settings["corruption"], noise_std=settings["noise_std"],
        mask_fraction=settings["mask_fraction"], augment=settings["augment"], device=pick_device(device),
        seed=seed)
    stop_if_interrupted(result, Path(interrupted_as[0]), interrupted_as[1], settings)
    return result


def _reference(config: AnomalyConfig, train_x: np.ndarray) -> np.ndarray:
    """The normal reference of the code and feature scores: the training normals and
    ``reference_copies`` jittered copies of them (uint8 (N * (1 + copies), s, s))."""
    if not config.reference_copies:
        return train_x
    return np.concatenate([train_x, jittered_copies(train_x, config.reference_copies, seed=config.seed)])


def _scorer(config: AnomalyConfig, model: ConvAutoencoder, train_x: np.ndarray,
            device: torch.device) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The six scores of one trained variant, as a function of normalised uint8 (N, s, s) images.

    The latent and feature scores measure distances to the normal reference ``train_x`` (the
    training normals, :func:`_reference`), encoded once here.
    """
    train_z, train_f, _ = encode_and_score(model, train_x, device=device)

    def scores(images: np.ndarray) -> dict[str, np.ndarray]:
        z, f, rec = encode_and_score(model, images, device=device)
        return {**rec, **latent_scores(train_z, z, k=config.knn_k),
                "features": latent_scores(train_f, f, k=config.knn_k)["mahalanobis"]}

    return scores


def _store(columns: dict[str, np.ndarray], name: str, values: dict[str, np.ndarray]) -> None:
    """One variant's ``{score: (N,) values}`` into a ``{column: values}`` dict."""
    for score in SCORES:
        columns[variant_column(name, score)] = values[score]


def _variant_rows(name: str, settings: dict[str, Any], result: TrainResult,
                  model: ConvAutoencoder) -> list[dict[str, Any]]:
    """The ``variants`` table's rows of one trained variant, one per score."""
    return [{"variant": name, "score": score, "status": "trained",
             "intensity": settings["intensity"],
             "latent": settings["latent"], "corruption": settings["corruption"],
             "augment": settings["augment"], "best_epoch": result.best_epoch,
             "epochs_run": len(result.history), "train_seconds": result.seconds,
             "val_loss": float(result.history["val_loss"].min()),
             "parameters": count_parameters(model)}
            for score in SCORES]


def _publish(config: AnomalyConfig, data: XrayDataset, prepared: _Inputs, trained: _Trained,
             variants: pd.DataFrame, shifts: pd.DataFrame, chosen: pd.Series, threshold: float, test_table: pd.DataFrame,
             xrv_status: str, device: torch.device, out) -> None:
    """Write the entry's metrics, tables, example arrays and the chosen model."""
    rows, histories, train_rows = prepared.rows, trained.histories, trained.train_rows
    summary = headline_metrics(config, chosen, threshold, test_table, data, train_rows, rows)
    model, settings = trained.models.get(chosen["variant"], trained.models["baseline"])
    examples, example_arrays = _examples(config, model, prepared.inputs[settings["intensity"]]["test"],
                                         rows["test"], device)
    example_arrays["threshold"] = np.array([threshold])

    out.json("params", config.to_dict())
    out.json("metrics", {**summary, "xrv_status": xrv_status,
                         "train_seconds": float(sum(h["seconds"].sum() for h in histories))})
    out.json("data_summary", data.summary())
    out.table("variants", variants)
    out.table("test_metrics", test_table)
    out.table("val_shifts", shifts)
    out.table("history", pd.concat(histories, ignore_index=True), top=True)
    out.table("scores", _score_frame(rows, trained.columns))
    out.table("training_images", train_rows[["relpath", "patient", "label", "split"]])
    out.table("examples", examples)
    out.arrays(**example_arrays)
    out.model(model.state_dict(), {**settings, "variant": chosen["variant"], "score": chosen["score"],
                                   "threshold": threshold})


def _xrv_comparator(config: AnomalyConfig, split, trained: _Trained, device: torch.device, out) -> str:
    """Score val/test, and val under every shift, with torchxrayvision's autoencoder when its
    weights are cached."""
    columns, variant_rows = trained.columns, trained.variant_rows
    if not config.comparators:
        return "not requested"
    try:
        ae = load_xrv_autoencoder()
    except XRVAutoencoderUnavailable as error:
        log.warning("xrv autoencoder skipped: %s", error)
        variant_rows.append({"variant": f"xrv-ae-{XRV_AE_WEIGHTS}", "score": "mse",
                             "status": f"skipped: {error}"})
        return f"skipped: {error}"
    with out.phase("xrv"):
        start = time.perf_counter()
        column = variant_column(f"xrv-ae-{XRV_AE_WEIGHTS}", "mse")
        for s in ("val", "test"):
            columns[s][column] = xrv_mse_scores(ae, split[s][0], device=device)
        # Its own input size: the shifts act on the decoded images (they are relative to the side).
        for shift, images in shifted_images(split["val"][0], seed=config.seed).items():
            if shift != "none":
                trained.shifted_columns[shift][column] = xrv_mse_scores(ae, images, device=device)
    variant_rows.append({"variant": f"xrv-ae-{XRV_AE_WEIGHTS}", "score": "mse", "status": "pre-trained",
                         "train_seconds": 0.0, "parameters": count_parameters(ae),
                         "score_seconds": time.perf_counter() - start})
    return "used"


def _examples(config, model: ConvAutoencoder, images: np.ndarray, rows: pd.DataFrame, device,
              per_class: int = 2) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Random test examples per class (seeded, not picked by score): input, reconstruction, residual."""
    rng = np.random.default_rng(config.seed)
    picks = []
    for label in ("normal", "bacterial", "viral"):
        idx = np.flatnonzero(rows["label"].to_numpy() == label)
        picks += list(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    picks = np.array(picks, dtype=np.int64)
    with torch.no_grad():
        model.to(device).eval()
        x = to_model_input(torch.as_tensor(images[picks], device=device))
        rec = model(x)["out"].float()
    residual = ((rec - x) ** 2)[:, 0].cpu().numpy()
    table = rows.iloc[picks][["relpath", "patient", "label"]].reset_index(drop=True)
    return table, {"example_input": images[picks], "example_reconstruction": rec[:, 0].cpu().numpy(),
                   "example_residual": residual}


def _score_frame(rows: dict[str, pd.DataFrame], columns: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    frames = []
    for s in ("val", "test"):
        frame = rows[s][["relpath", "patient", "label", "binary"]].copy()
        frame.insert(0, "split", s)
        frame = pd.concat([frame, pd.DataFrame(columns[s])], axis=1)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
