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
4. choose the (variant, score) pair by *validation* ROC AUC of normal vs pneumonia, and its
   threshold as a high percentile of the *validation normals'* scores;
5. touch *test* once with that choice: ROC AUC, PR AUC, sensitivity and specificity, with
   patient-bootstrap CIs, against all pneumonia and separately against bacterial and viral;
6. publish everything as one cache entry.

Pneumonia images are never seen in training: :func:`normal_images` is the only way images
reach :func:`train_autoencoder` here, and it refuses anything that is not normal.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pneumo.config import PROFILES, ConfigError, TaskConfig, param
from pneumo.data import XrayDataset, load_dataset
from pneumo.device import autocast, configure_threads, pick_device, seed_everything
from pneumo.imaging import INTENSITY_MODES, gaussian_blur, normalise_intensity, to_model_input
from pneumo.metrics import binary_metrics, metrics_table
from pneumo.models import ConvAutoencoder, build_autoencoder, count_parameters
from pneumo.models.autoencoder import memory_format
from pneumo.results import Entry, ResultCache, cache_key
from pneumo.training import TrainResult, fit, stop_if_interrupted

log = logging.getLogger(__name__)

# Modules whose source decides the numbers (their edits invalidate entries).
CODE = ["pneumo.anomaly", "pneumo.data", "pneumo.imaging", "pneumo.models", "pneumo.training", "pneumo.metrics"]

#: Anomaly scores computed for every autoencoder; the first three use the reconstruction, the
#: others only the encoder (its code, or its pooled feature maps).
RECONSTRUCTION_SCORES = ("mse", "ssim", "blur")
LATENT_SCORES = ("knn", "mahalanobis", "features")
SCORES = RECONSTRUCTION_SCORES + LATENT_SCORES

#: The pre-trained torchxrayvision autoencoder used as a comparator when its weights are cached.
XRV_AE_WEIGHTS = "101-elastic"
XRV_SCALE = 512.0  # our normalised x -> torchxrayvision's [-1024, 1024] range
XRV_RESOLUTION = 224

#: The comparisons reported on test: name -> labels that count as positive (vs normal).
COMPARISONS = {"pneumonia": ("bacterial", "viral"), "bacterial": ("bacterial",), "viral": ("viral",)}


@dataclasses.dataclass(frozen=True)
class AnomalyConfig(TaskConfig):
    """Task 3: autoencoders trained on normal chest X-rays only flag pneumonia as anomalies."""

    profile: str = param("cpu", "smoke | cpu | gpu (auto: smoke on phantoms, else gpu with CUDA, else cpu)", choices=PROFILES)
    data: Optional[str] = param(None, "data folder in Kaggle layout; None: $PNEUMO_DATA, "
                                "data/chest_xray, else synthetic phantoms", key=False)
    decode_resolution: int = param(128, "side of the decoded images (Task 1's, so the decode cache "
                                   "is shared); shrunk to `resolution` by area averaging",
                                   interval="[8, inf)")
    resolution: int = param(64, "autoencoder input side in pixels", interval="[8, inf)")
    intensity: str = param("equalize", "per-image intensity normalisation of the autoencoder's input "
                           "(equalize: histogram equalisation; stretch: 1st-99th percentile to 0-255)",
                           choices=INTENSITY_MODES)
    width: int = param(8, "channels of the first encoder block (doubling per block)", interval="[1, inf)")
    depth: int = param(4, "down-sampling blocks of the encoder (and up-sampling blocks of the decoder)",
                       interval="[1, inf)")
    latent: int = param(64, "latent size of the baseline autoencoder", interval="[1, inf)")
    grid: str = param("reduced", "variants trained and compared on validation",
                      choices=("none", "reduced", "full"))
    noise_std: float = param(0.5, "input noise of the denoising variant (normalised units; 0.5 = 32 grey levels)",
                             interval="[0, inf)")
    mask_fraction: float = param(0.25, "share of 8x8-grid cells blanked in the masked variant's input",
                                 interval="[0, 1]")
    augment: bool = param(True, "random affine + intensity augmentation of the training normals")
    epochs: int = param(25, "maximum epochs per autoencoder", interval="[1, inf)")
    batch_size: int = param(32, "images per step", interval="[1, inf)")
    lr: float = param(2e-3, "peak AdamW learning rate (cosine decay)", interval="(0, inf)")
    weight_decay: float = param(1e-5, "AdamW weight decay", interval="[0, inf)")
    patience: int = param(5, "epochs without validation-loss improvement before stopping",
                          interval="[0, inf)")
    knn_k: int = param(5, "neighbours of the latent k-NN score", interval="[1, inf)")
    threshold_quantile: float = param(0.95, "decision threshold: this quantile of the validation normals' scores",
                                      interval="(0, 1)")
    val_fraction: float = param(0.15, "share of train patients held out for validation (as Task 1)",
                                interval="(0, 1)")
    seed: int = param(0, "seed of splits, initialisation, batches and corruption", interval="[0, inf)")
    bootstrap: int = param(1000, "patient-bootstrap resamples for confidence intervals", interval="[0, inf)")
    comparators: bool = param(True, "add torchxrayvision's pre-trained autoencoder when its weights are cached")
    device: str = param("auto", "auto | cpu | cuda | cuda:N | mps", key=False, check=pick_device)
    num_workers: Optional[int] = param(None, "image decoding processes (None: all cores)", key=False,
                                       interval="[0, inf)")
    cache: Optional[str] = param(None, "results folder (None: $PNEUMO_CACHE or results/)", key=False)
    force: bool = param(False, "recompute even when a cached entry exists", key=False)

    def validate(self) -> None:
        # The encoder halves the image `depth` times and the decoder doubles it back exactly.
        if self.resolution % 2 ** self.depth:
            raise ConfigError(
                f"AnomalyConfig.resolution {self.resolution} must be a multiple of 2**depth = "
                f"{2 ** self.depth} (depth {self.depth}); e.g. resolution "
                f"{max(1, self.resolution // 2 ** self.depth) * 2 ** self.depth}")

    PROFILES = {
        "smoke": dict(decode_resolution=64, resolution=32, width=8, depth=3, latent=16, epochs=8,
                      patience=5, batch_size=16, lr=3e-3, bootstrap=200, comparators=False),
        "cpu": {},
        "gpu": dict(decode_resolution=224, resolution=128, width=32, depth=5, latent=128,
                    grid="full", epochs=100, patience=12, batch_size=64),
    }


# -- data ----------------------------------------------------------------------------------
def shrink(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 (N, H, W) -> uint8 (N, side, side) by area averaging (antialiased bilinear otherwise)."""
    if images.shape[-1] == side:
        return images
    out = []
    for i in range(0, len(images), 512):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + 512])).float().unsqueeze(1)  # (b, 1, H, W)
        if images.shape[-1] % side == 0:
            y = F.interpolate(x, size=(side, side), mode="area")
        else:
            y = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8)[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, side, side), np.uint8)


def normal_images(images: np.ndarray, rows: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The normal images of a split: the only images an autoencoder is trained or stopped on.

    Raises
    ------
    ValueError
        When the result would hold a non-normal image (it cannot, by construction; the check
        makes the guarantee explicit).
    """
    mask = (rows["label"] == "normal").to_numpy()
    kept, kept_rows = images[mask], rows[mask].reset_index(drop=True)
    if (kept_rows["label"] != "normal").any() or (kept_rows["binary"] != 0).any():
        raise ValueError("a pneumonia image would reach the autoencoder's training data")
    return kept, kept_rows


# -- corruption of the input (denoising / masked variants) ---------------------------------
def corrupt(x: Tensor, kind: str, generator: torch.Generator, *, noise_std: float = 0.5,
            mask_fraction: float = 0.25, cells: int = 8) -> Tensor:
    """The corrupted input of a denoising or masked autoencoder (the target stays ``x``).

    Parameters
    ----------
    x
        (B, 1, H, W) normalised input.
    kind
        ``"none"``, ``"noise"`` (additive Gaussian noise of std ``noise_std``) or ``"mask"``
        (each cell of a ``cells`` x ``cells`` grid set to 0, mid-grey, with probability
        ``mask_fraction``: the network must in-paint normal anatomy from its context).
    """
    if kind == "none":
        return x
    if kind == "noise":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + noise_std * noise
    if kind == "mask":
        B, _, H, W = x.shape
        hit = torch.rand(B, 1, cells, cells, generator=generator, device=x.device) < mask_fraction
        hit = F.interpolate(hit.float(), size=(H, W), mode="nearest")  # (B, 1, H, W) in {0, 1}
        return x * (1 - hit)
    raise ValueError(f"unknown corruption {kind!r}")


# -- training ------------------------------------------------------------------------------
def train_autoencoder(
    model: ConvAutoencoder,
    train_images: np.ndarray,
    val_images: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-5,
    patience: int = 6,
    corruption: str = "none",
    noise_std: float = 0.5,
    mask_fraction: float = 0.25,
    augment: bool = True,
    device: torch.device,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train an autoencoder to reconstruct ``train_images``; keep the epoch with the lowest
    validation reconstruction loss.

    Loss: mean squared error between the output and the clean (augmented) input; the input
    fed to the network is corrupted first for the denoising and masked variants. The loop is
    :func:`pneumo.training.fit` (AdamW, cosine decay without warm-up, early stopping after
    ``patience`` epochs without a lower validation loss, Ctrl-C returns the best state so far
    with ``interrupted=True``).

    Parameters
    ----------
    train_images, val_images
        uint8 (N, H, W) at the model's resolution; callers pass normal images only
        (:func:`normal_images`).
    """
    x_val = torch.as_tensor(val_images, device=device).unsqueeze(1)  # (N_val, 1, H, W) uint8

    def batch_loss(model: nn.Module, x: Tensor, idx: Tensor, generator: torch.Generator):
        corrupted = corrupt(x, corruption, generator, noise_std=noise_std, mask_fraction=mask_fraction)
        with autocast(device):
            out = model(corrupted)["out"]  # (B, 1, H, W)
        return F.mse_loss(out.float(), x), {}

    return fit(model, train_images, batch_loss,
               lambda m: {"val_loss": float(_reconstruction_loss(m, x_val, device))},
               select_metric="val_loss", epochs=epochs, batch_size=batch_size, lr=lr,
               weight_decay=weight_decay, warmup_epochs=0, patience=patience, augment=augment,
               device=device, seed=seed, progress=progress, description=f"corruption={corruption}")


@torch.no_grad()
def _reconstruction_loss(model: nn.Module, x_uint8: Tensor, device: torch.device, batch_size: int = 256) -> float:
    """Mean squared reconstruction error over (N, 1, H, W) uint8 images, in eval mode."""
    model.eval()
    total = 0.0
    for i in range(0, x_uint8.shape[0], batch_size):
        x = to_model_input(x_uint8[i:i + batch_size].to(device)).contiguous(memory_format=memory_format(device))
        total += F.mse_loss(model(x)["out"], x, reduction="sum").item()
    return total / max(1, x_uint8[0].numel() * x_uint8.shape[0])


# -- scores --------------------------------------------------------------------------------
def ssim_map(x: Tensor, y: Tensor, *, sigma: float = 1.5, data_range: float = 4.0) -> Tensor:
    """Structural similarity (Wang et al. 2004) per pixel, Gaussian window of std ``sigma``.

    Parameters
    ----------
    x, y
        (B, 1, H, W) images in the same units; ``data_range`` is their full range (4 for our
        normalised input, -2..2).

    Returns
    -------
    Tensor
        (B, 1, H, W) SSIM in [-1, 1]; 1 where the images agree.
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = gaussian_blur(x, sigma), gaussian_blur(y, sigma)
    var_x = gaussian_blur(x * x, sigma) - mu_x**2
    var_y = gaussian_blur(y * y, sigma) - mu_y**2
    cov = gaussian_blur(x * y, sigma) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def reconstruction_scores(x: Tensor, out: Tensor, *, blur_sigma: float, margin: int,
                          quantile: float = 0.95) -> dict[str, Tensor]:
    """Anomaly scores of a batch from its reconstruction (higher = more anomalous).

    * ``mse``: mean squared residual over the image;
    * ``ssim``: 1 - mean SSIM between input and reconstruction;
    * ``blur``: the squared residual blurred with a Gaussian (std ``blur_sigma`` px), then its
      ``quantile`` over the central region (``margin`` px trimmed on every side): a compact,
      bright residual blob (a consolidation) outweighs scattered pixel noise, and the image
      border (labels, collimation) is ignored.

    Parameters
    ----------
    x, out
        (B, 1, H, W) input and reconstruction, normalised units.

    Returns
    -------
    dict
        name -> (B,) scores.
    """
    residual = (out - x) ** 2  # (B, 1, H, W)
    blurred = gaussian_blur(residual, blur_sigma)[:, 0, margin:x.shape[-2] - margin, margin:x.shape[-1] - margin]
    return {
        "mse": residual.mean(dim=(1, 2, 3)),
        "ssim": 1 - ssim_map(x, out).mean(dim=(1, 2, 3)),
        "blur": torch.quantile(blurred.flatten(1), quantile, dim=1),
    }


@torch.no_grad()
def encode_and_score(model: ConvAutoencoder, images: np.ndarray, *, device: torch.device,
                     batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Latent codes, pooled encoder features and reconstruction scores of uint8 (N, H, W) images.

    Returns
    -------
    z : numpy.ndarray
        (N, latent) float32.
    features : numpy.ndarray
        (N, F) float32, :meth:`ConvAutoencoder.encoder_features`.
    scores : dict
        ``{"mse", "ssim", "blur"}`` -> (N,) float64.
    """
    model.to(device, memory_format=memory_format(device)).eval()
    side = model.resolution
    zs, fs, parts = [], [], {k: [] for k in RECONSTRUCTION_SCORES}
    for i in range(0, len(images), batch_size):
        x = to_model_input(torch.as_tensor(images[i:i + batch_size], device=device))  # (B, 1, H, W)
        x = x.contiguous(memory_format=memory_format(device))
        result = model(x)
        zs.append(result["z"].float().cpu())
        fs.append(model.encoder_features(x).float().cpu())
        for k, v in reconstruction_scores(x, result["out"].float(), blur_sigma=side / 32,
                                          margin=side // 8).items():
            parts[k].append(v.cpu())
    z = torch.cat(zs).numpy() if zs else np.zeros((0, model.latent), np.float32)
    f = torch.cat(fs).numpy() if fs else np.zeros((0, 0), np.float32)
    return z, f, {k: torch.cat(v).double().numpy() for k, v in parts.items()}


def latent_scores(train_z: np.ndarray, z: np.ndarray, *, k: int = 5) -> dict[str, np.ndarray]:
    """Distance of latent codes to the training normals' codes (no reconstruction involved).

    Codes are standardised with the training normals' mean and std first.

    * ``knn``: mean Euclidean distance to the ``k`` nearest training normals;
    * ``mahalanobis``: Mahalanobis distance to the training normals' Gaussian (Ledoit-Wolf
      shrunk covariance, well conditioned even when the latent size approaches their number).

    Applied to pooled encoder features instead of codes, the Mahalanobis distance is the
    ``features`` score (see :func:`run_anomaly`).
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.neighbors import NearestNeighbors

    mean, std = train_z.mean(0), train_z.std(0) + 1e-6
    a, b = (train_z - mean) / std, (z - mean) / std
    distances, _ = NearestNeighbors(n_neighbors=min(k, len(a))).fit(a).kneighbors(b)
    maha = np.sqrt(LedoitWolf().fit(a).mahalanobis(b))
    return {"knn": distances.mean(1).astype(np.float64), "mahalanobis": maha.astype(np.float64)}


def threshold_from_normals(normal_scores: np.ndarray, quantile: float = 0.95) -> float:
    """The decision threshold: a quantile of VALIDATION normals' scores (never test)."""
    return float(np.quantile(np.asarray(normal_scores, dtype=np.float64), quantile))


# -- the torchxrayvision comparator --------------------------------------------------------
class XRVAutoencoderUnavailable(RuntimeError):
    """torchxrayvision's pre-trained autoencoder weights are not cached locally (offline)."""


def xrv_autoencoder_path(weights: str = XRV_AE_WEIGHTS, cache_dir: str | Path | None = None) -> Path:
    """Where torchxrayvision keeps the autoencoder weights file (whether or not it exists)."""
    from pneumo.models.xrv import _xrv

    xrv = _xrv()
    url = xrv.autoencoders.model_urls[weights]["weights_url"]
    folder = xrv.utils.get_cache_dir() if cache_dir is None else str(cache_dir)
    return Path(folder).expanduser() / Path(url).name


def load_xrv_autoencoder(weights: str = XRV_AE_WEIGHTS) -> nn.Module:
    """torchxrayvision's ResNet autoencoder, from the local cache only (no download attempt).

    The file holds a state dict: it is read here with ``weights_only=True``, so a file copied
    in by hand cannot run code, into an autoencoder built without weights.

    Raises
    ------
    XRVAutoencoderUnavailable
        When the weights file is missing, is not plain weights, or does not fit the network.
    """
    path = xrv_autoencoder_path(weights)
    if not path.is_file():
        raise XRVAutoencoderUnavailable(f"weights '{weights}' not in the local cache ({path}); "
                                        "offline, no download attempted")
    from pneumo.models.xrv import _xrv

    xrv = _xrv()
    fix = f"replace it with a fresh download of {xrv.autoencoders.model_urls[weights]['weights_url']}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise XRVAutoencoderUnavailable(f"{path} is not plain weights: torch.load(weights_only=True) "
                                        f"refused it, as unpickling it could run code; {fix}") from None
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file
        raise XRVAutoencoderUnavailable(f"{path} cannot be read ({type(error).__name__}); {fix}") from None
    ae = getattr(xrv.autoencoders, xrv.autoencoders.model_urls[weights]["class"])()
    try:
        ae.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise XRVAutoencoderUnavailable(f"{path} does not hold the weights of {weights!r} "
                                        f"({type(error).__name__}); {fix}") from None
    return ae.eval()


@torch.no_grad()
def xrv_mse_scores(ae: nn.Module, images: np.ndarray, *, device: torch.device, batch_size: int = 16) -> np.ndarray:
    """Pixel MSE of torchxrayvision's autoencoder at 224 px (in our normalised units)."""
    ae.to(device).eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_model_input(torch.as_tensor(images[i:i + batch_size], device=device))
        x = F.interpolate(x, size=(XRV_RESOLUTION, XRV_RESOLUTION), mode="bilinear", align_corners=False)
        rec = ae(x * XRV_SCALE)["out"] / XRV_SCALE  # (B, 1, 224, 224)
        out.append(((rec - x) ** 2).mean(dim=(1, 2, 3)).cpu())
    return torch.cat(out).double().numpy()


# -- the variants ----------------------------------------------------------------------------
def ae_variants(config: AnomalyConfig) -> list[tuple[str, dict[str, Any]]]:
    """Autoencoders to train, as ``(name, changes)``: one design axis changed per row.

    ``reduced``: the baseline, a 4x smaller and a 4x larger latent, a denoising and a masked
    variant, and the baseline with each other intensity normalisation; ``full`` adds
    augmentation off and a masked variant with a small latent.
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


def _variant_settings(config: AnomalyConfig, changes: dict[str, Any]) -> dict[str, Any]:
    keys = ("resolution", "intensity", "width", "depth", "latent", "noise_std", "mask_fraction", "augment", "epochs",
            "batch_size", "lr", "weight_decay", "patience", "seed")
    settings = {k: getattr(config, k) for k in keys}
    settings["corruption"] = "none"
    settings.update(changes)
    return settings


def _column(variant: str, score: str) -> str:
    return f"{variant}/{score}"


# -- the whole task ------------------------------------------------------------------------
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
    key = cache_key("anomaly", config.key_dict(), data.fingerprint, CODE)
    entry = cache.entry("anomaly", key)
    if (entry.exists and not config.force) or not compute:
        if entry.exists:
            log.info("anomaly: cached result at %s", entry.path)
        return entry

    device = pick_device(config.device)
    with cache.write("anomaly", key, reuse=not config.force) as out:
        if out is None:  # computed meanwhile by another process
            return entry
        with out.phase("data"):
            split = {s: data.subset(s) for s in ("train", "val", "test")}
            shrunk = {s: shrink(x, config.resolution) for s, (x, _) in split.items()}
            rows = {s: r for s, (_, r) in split.items()}
            autoencoders = [(name, _variant_settings(config, changes)) for name, changes in ae_variants(config)]
            # The autoencoders' inputs, per intensity normalisation: {mode: {split: uint8 (N, s, s)}}.
            inputs = {mode: {s: normalise_intensity(x, mode) for s, x in shrunk.items()}
                      for mode in dict.fromkeys(settings["intensity"] for _, settings in autoencoders)}
        columns: dict[str, dict[str, np.ndarray]] = {"val": {}, "test": {}}
        variant_rows, histories, models = [], [], {}
        for number, (name, settings) in enumerate(autoencoders, 1):
            log.info("anomaly: autoencoder %d of %d, %s (%d epochs)", number, len(autoencoders), name,
                     settings["epochs"])
            small = inputs[settings["intensity"]]
            train_x, train_rows = normal_images(small["train"], rows["train"])
            val_normal_x, _ = normal_images(small["val"], rows["val"])
            seed_everything(config.seed)
            model = build_autoencoder(settings)
            with out.phase("train"):
                result = train_autoencoder(
                    model, train_x, val_normal_x, epochs=settings["epochs"], batch_size=settings["batch_size"],
                    lr=settings["lr"], weight_decay=settings["weight_decay"], patience=settings["patience"],
                    corruption=settings["corruption"], noise_std=settings["noise_std"],
                    mask_fraction=settings["mask_fraction"], augment=settings["augment"], device=device,
                    seed=config.seed)
            stop_if_interrupted(result, cache.root, f"anomaly-{key}-{name}", settings)
            model.load_state_dict(result.best_state)
            models[name] = (model, settings)
            histories.append(result.history.assign(variant=name))
            with out.phase("score"):
                train_z, train_f, _ = encode_and_score(model, train_x, device=device)
                for s in ("val", "test"):
                    z, f, rec = encode_and_score(model, small[s], device=device)
                    values = {**rec, **latent_scores(train_z, z, k=config.knn_k),
                              "features": latent_scores(train_f, f, k=config.knn_k)["mahalanobis"]}
                    for score in SCORES:
                        columns[s][_column(name, score)] = values[score]
            for score in SCORES:
                variant_rows.append({"variant": name, "score": score, "status": "trained",
                                     "intensity": settings["intensity"],
                                     "latent": settings["latent"], "corruption": settings["corruption"],
                                     "augment": settings["augment"], "best_epoch": result.best_epoch,
                                     "epochs_run": len(result.history), "train_seconds": result.seconds,
                                     "val_loss": float(result.history["val_loss"].min()),
                                     "parameters": count_parameters(model)})
        xrv_status = _xrv_comparator(config, split, columns, variant_rows, device, out)

        with out.phase("select"):
            variants = _rank_on_validation(variant_rows, columns["val"], rows["val"])
        chosen = variants.iloc[0]
        column = _column(chosen["variant"], chosen["score"])
        log.info("anomaly: validation chooses %s", column)
        with out.phase("test"):
            val_normal = columns["val"][column][(rows["val"]["label"] == "normal").to_numpy()]
            threshold = threshold_from_normals(val_normal, config.threshold_quantile)
            test_table = _test_metrics(config, columns["test"][column], rows["test"], threshold)
            variants = _add_test_columns(config, variants, columns["test"], rows["test"])
        summary = _summary(config, chosen, threshold, test_table, data, train_rows, rows)
        model, settings = models.get(chosen["variant"], models["baseline"])
        examples, example_arrays = _examples(config, model, inputs[settings["intensity"]]["test"], rows["test"],
                                             device)
        example_arrays["threshold"] = np.array([threshold])

        out.json("params", config.to_dict())
        out.json("metrics", {**summary, "xrv_status": xrv_status,
                             "train_seconds": float(sum(h["seconds"].sum() for h in histories))})
        out.json("data_summary", data.summary())
        out.table("variants", variants)
        out.table("test_metrics", test_table)
        out.table("history", pd.concat(histories, ignore_index=True), top=True)
        out.table("scores", _score_frame(rows, columns))
        out.table("training_images", train_rows[["relpath", "patient", "label", "split"]])
        out.table("examples", examples)
        out.arrays(**example_arrays)
        out.model(model.state_dict(), {**settings, "variant": chosen["variant"], "score": chosen["score"],
                                       "threshold": threshold})
    log.info("anomaly: result at %s", entry.path)
    return entry


def _xrv_comparator(config, split, columns, variant_rows, device, out) -> str:
    """Score val/test with torchxrayvision's autoencoder when its weights are cached."""
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
        for s in ("val", "test"):
            columns[s][_column(f"xrv-ae-{XRV_AE_WEIGHTS}", "mse")] = xrv_mse_scores(ae, split[s][0], device=device)
    variant_rows.append({"variant": f"xrv-ae-{XRV_AE_WEIGHTS}", "score": "mse", "status": "pre-trained",
                         "train_seconds": 0.0, "parameters": count_parameters(ae),
                         "score_seconds": time.perf_counter() - start})
    return "used"


def _rank_on_validation(variant_rows: list[dict], val_columns: dict[str, np.ndarray],
                        val_rows: pd.DataFrame) -> pd.DataFrame:
    """Validation ROC / PR AUC of normal vs pneumonia per (variant, score); best first."""
    y = val_rows["binary"].to_numpy()
    table = pd.DataFrame(variant_rows)
    for metric in ("val_roc_auc", "val_pr_auc"):
        table[metric] = np.nan
    for i, row in table.iterrows():
        column = _column(row["variant"], row["score"])
        if column in val_columns:
            m = binary_metrics(y, val_columns[column])
            table.loc[i, ["val_roc_auc", "val_pr_auc"]] = m["roc_auc"], m["pr_auc"]
    ok = table["val_roc_auc"].notna()
    ranked = table[ok].sort_values(["val_roc_auc", "val_pr_auc"], ascending=False, kind="mergesort")
    return pd.concat([ranked, table[~ok]], ignore_index=True)


def _comparison_mask(rows: pd.DataFrame, comparison: str) -> np.ndarray:
    return rows["label"].isin(("normal", *COMPARISONS[comparison])).to_numpy()


def _test_metrics(config: AnomalyConfig, score: np.ndarray, rows: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Test metrics of the chosen score, normal vs each comparison, patient-bootstrap CIs."""
    tables = []
    metric_fn = partial(binary_metrics, threshold=threshold)
    for comparison in COMPARISONS:
        mask = _comparison_mask(rows, comparison)
        sub = rows[mask]
        table = metrics_table(metric_fn, sub["binary"].to_numpy(), score[mask], sub["patient"].to_numpy(),
                              n_boot=config.bootstrap, seed=config.seed).reset_index()
        tables.append(table.assign(comparison=comparison))
    return pd.concat(tables, ignore_index=True)[["comparison", "metric", "value", "ci_low", "ci_high"]]


def _add_test_columns(config, variants: pd.DataFrame, test_columns, rows: pd.DataFrame) -> pd.DataFrame:
    """Test ROC AUC (with CI) of every variant x score: shown for reference, never used to choose."""
    out = variants.copy()
    y, groups = rows["binary"].to_numpy(), rows["patient"].to_numpy()
    for metric in ("test_roc_auc", "test_roc_auc_ci_low", "test_roc_auc_ci_high", "test_pr_auc"):
        out[metric] = np.nan
    roc_only = lambda y_, s_, sample_weight=None: {  # noqa: E731 - the two ranking metrics only
        k: v for k, v in binary_metrics(y_, s_, sample_weight=sample_weight).items() if k in ("roc_auc", "pr_auc")}
    for i, row in out.iterrows():
        column = _column(row["variant"], row["score"])
        if column not in test_columns:
            continue
        t = metrics_table(roc_only, y, test_columns[column], groups, n_boot=config.bootstrap, seed=config.seed)
        out.loc[i, ["test_roc_auc", "test_roc_auc_ci_low", "test_roc_auc_ci_high", "test_pr_auc"]] = (
            t.loc["roc_auc", "value"], t.loc["roc_auc", "ci_low"], t.loc["roc_auc", "ci_high"],
            t.loc["pr_auc", "value"])
    return out


def _summary(config, chosen, threshold, test_table, data: XrayDataset, train_rows, rows) -> dict[str, Any]:
    t = test_table.set_index(["comparison", "metric"])["value"]
    summary = {
        "chosen_variant": chosen["variant"], "chosen_score": chosen["score"],
        "val_roc_auc": float(chosen["val_roc_auc"]), "val_pr_auc": float(chosen["val_pr_auc"]),
        "threshold": threshold, "threshold_quantile": config.threshold_quantile,
        "data_synthetic": bool(data.is_synthetic), "train_images": int(len(train_rows)),
        "val_images": int(len(rows["val"])), "val_normal_images": int((rows["val"]["label"] == "normal").sum()),
        "test_images": int(len(rows["test"])), "test_patients": int(rows["test"]["patient"].nunique()),
    }
    for comparison in COMPARISONS:
        suffix = "" if comparison == "pneumonia" else f"_{comparison}"
        for metric in ("roc_auc", "pr_auc", "sensitivity", "specificity", "balanced_accuracy"):
            value = float(t.loc[(comparison, metric)])
            if np.isfinite(value):
                summary[f"test_{metric}{suffix}"] = value
    return summary


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
