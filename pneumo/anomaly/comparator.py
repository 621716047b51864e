"""The comparator: torchxrayvision's pre-trained autoencoder, loaded offline, and its MSE score.

Its weights come only from torchxrayvision's local cache: nothing is downloaded, and the file
is read as plain weights (``weights_only=True``), so a file copied in by hand cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pneumo.imaging import to_model_input
from pneumo.models.xrv import XRV_RESOLUTION, XRV_SCALE, XRVWeightsUnavailable, _xrv, missing_weights

#: The pre-trained torchxrayvision autoencoder used as a comparator when its weights are cached.
XRV_AE_WEIGHTS = "101-elastic"

#: The error's former name: the autoencoder raises the DenseNet's class, for one offline-weights error.
XRVAutoencoderUnavailable = XRVWeightsUnavailable


def xrv_autoencoder_path(weights: str = XRV_AE_WEIGHTS, cache_dir: str | Path | None = None) -> Path:
    """Where torchxrayvision keeps the autoencoder weights file (whether or not it exists).

    Parameters
    ----------
    weights
        A key of ``torchxrayvision.autoencoders.model_urls``.
    cache_dir
        Folder to look in; default ``torchxrayvision.utils.get_cache_dir()``.

    Returns
    -------
    pathlib.Path
        The folder joined with the last part of the download URL.
    """
    xrv = _xrv()
    url = xrv.autoencoders.model_urls[weights]["weights_url"]
    folder = xrv.utils.get_cache_dir() if cache_dir is None else str(cache_dir)
    return Path(folder).expanduser() / Path(url).name


def load_xrv_autoencoder(weights: str = XRV_AE_WEIGHTS) -> nn.Module:
    """torchxrayvision's ResNet autoencoder, from the local cache only (no download attempt).

    The file holds a state dict: it is read here with ``weights_only=True``, so a file copied
    in by hand cannot run code, into an autoencoder built without weights.

    Parameters
    ----------
    weights
        A key of ``torchxrayvision.autoencoders.model_urls``.

    Returns
    -------
    torch.nn.Module
        The autoencoder in eval mode, on the CPU; ``ae(x)["out"]`` is its reconstruction.

    Raises
    ------
    pneumo.models.xrv.XRVWeightsUnavailable
        When the weights file is missing, is not plain weights, or does not fit the network.
    """
    path = xrv_autoencoder_path(weights)
    xrv = _xrv()
    url = xrv.autoencoders.model_urls[weights]["weights_url"]
    if not path.is_file():
        raise missing_weights(f"torchxrayvision autoencoder weights {weights!r}", path, url)
    fix = f"replace it with a fresh download of {url}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise XRVWeightsUnavailable(f"{path} is not plain weights: torch.load(weights_only=True) "
                                    f"refused it, as unpickling it could run code; {fix}") from None
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file
        raise XRVWeightsUnavailable(f"{path} cannot be read ({type(error).__name__}); {fix}") from None
    ae = getattr(xrv.autoencoders, xrv.autoencoders.model_urls[weights]["class"])()
    try:
        ae.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise XRVWeightsUnavailable(f"{path} does not hold the weights of {weights!r} "
                                    f"({type(error).__name__}); {fix}") from None
    return ae.eval()


@torch.no_grad()
def xrv_mse_scores(ae: nn.Module, images: np.ndarray, *, device: torch.device, batch_size: int = 16) -> np.ndarray:
    """Pixel MSE of torchxrayvision's autoencoder at 224 px (in our normalised units).

    Parameters
    ----------
    ae
        :func:`load_xrv_autoencoder`'s network.
    images
        uint8 (N, H, W), resized to 224 px here.
    device, batch_size
        Where and how many images at a time.

    Returns
    -------
    numpy.ndarray
        (N,) float64 mean squared residuals.
    """
    ae.to(device).eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_model_input(torch.as_tensor(images[i:i + batch_size], device=device))
        x = F.interpolate(x, size=(XRV_RESOLUTION, XRV_RESOLUTION), mode="bilinear", align_corners=False)
        rec = ae(x * XRV_SCALE)["out"] / XRV_SCALE  # (B, 1, 224, 224)
        out.append(((rec - x) ** 2).mean(dim=(1, 2, 3)).cpu())
    return torch.cat(out).double().numpy()
