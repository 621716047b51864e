"""The six anomaly scores of an autoencoder, and the decision threshold.

Three come from the reconstruction (:func:`reconstruction_scores`: pixel MSE, SSIM, blurred
residual), three from the encoder alone (:func:`latent_scores` on the latent codes: k-NN and
Mahalanobis distance; Mahalanobis on pooled encoder features: ``features``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pneumo.anomaly.config import RECONSTRUCTION_SCORES
from pneumo.device import INFERENCE_BATCH, memory_format
from pneumo.imaging import gaussian_blur, to_model_input
from pneumo.models import ConvAutoencoder


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
                     batch_size: int = INFERENCE_BATCH) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Latent codes, pooled encoder features and reconstruction scores of uint8 (N, H, W) images.

    Parameters
    ----------
    model
        A trained autoencoder (moved to ``device``, in eval mode).
    images
        uint8 (N, H, W) at the model's resolution.
    device, batch_size
        Where and how many images at a time.

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
    ``features`` score (see :func:`pneumo.anomaly.task.run_anomaly`).

    Parameters
    ----------
    train_z
        (N_train, D) codes (or features) of the training normals.
    z
        (N, D) codes (or features) to score.
    k
        Neighbours of the k-NN score (at most N_train are used).

    Returns
    -------
    dict
        ``{"knn", "mahalanobis"}`` -> (N,) float64, higher = more anomalous.
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.neighbors import NearestNeighbors

    mean, std = train_z.mean(0), train_z.std(0) + 1e-6
    a, b = (train_z - mean) / std, (z - mean) / std
    distances, _ = NearestNeighbors(n_neighbors=min(k, len(a))).fit(a).kneighbors(b)
    maha = np.sqrt(LedoitWolf().fit(a).mahalanobis(b))
    return {"knn": distances.mean(1).astype(np.float64), "mahalanobis": maha.astype(np.float64)}


def threshold_from_normals(normal_scores: np.ndarray, quantile: float = 0.95) -> float:
    """The decision threshold: a quantile of VALIDATION normals' scores (never test).

    Parameters
    ----------
    normal_scores
        Scores of the validation normals.
    quantile
        Share of them at or below the threshold.

    Returns
    -------
    float
        The threshold; a score above it is called anomalous.
    """
    return float(np.quantile(np.asarray(normal_scores, dtype=np.float64), quantile))
