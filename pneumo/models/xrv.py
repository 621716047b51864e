"""Transfer-learning comparator: torchxrayvision's DenseNet-121 pre-trained on chest X-rays.

torchxrayvision downloads its weights on first use.  This study runs offline, so we look
for the file where torchxrayvision would (``torchxrayvision.utils.get_cache_dir()``,
``~/.torchxrayvision/models_data/`` by default) and fail fast with
:class:`XRVWeightsUnavailable` instead of letting the library attempt a download.

Its DenseNet weight files are pickled whole networks, which ``torch.load`` can only read with
``weights_only=False``, and unpickling can run code. So a file is loaded only when its SHA-256 is
the published file's (:data:`PINNED_SHA256`), from the very bytes that were checked, into a
network built without weights (so torchxrayvision never unpickles the file itself).

Input convention: the wrapper takes *our* normalised input (B, 1, H, W) from
:func:`pneumo.imaging.to_model_input`, i.e. ``x = (p/255 - 0.5) / 0.25`` for pixel
``p``.  torchxrayvision expects ``(2 p/255 - 1) * 1024`` in [-1024, 1024], which is
exactly ``512 * x``, and 224 x 224 pixels.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "densenet121-res224-all"
XRV_SCALE = 512.0  # our normalised x -> torchxrayvision's [-1024, 1024] range
XRV_RESOLUTION = 224
XRV_EMBEDDING_DIM = 1024

#: SHA-256 of the published weight files (torchxrayvision's v1 release) that may be loaded;
#: ``densenet121-res224-all`` is ``nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-
#: tw-lr001-rot45-tr15-sc15-seed0-best.pt``, 28,382,008 bytes.
PINNED_SHA256 = {
    "densenet121-res224-all": "56524913dd16a906422e8d8b66a7a5c46be1d82eb7ac012d8103776f1aa68899",
}


class XRVWeightsUnavailable(RuntimeError):
    """Pre-trained torchxrayvision weights cannot be had: not in the local cache (and we are
    offline), or not safe or fit to load. Raised for the DenseNet here and for Task 3's
    autoencoder comparator (:func:`pneumo.anomaly.comparator.load_xrv_autoencoder`)."""


def missing_weights(what: str, path: Path, url: str, alternative: str = "") -> XRVWeightsUnavailable:
    """The error for a weights file that is not in the local cache, naming the file and the fix.

    Parameters
    ----------
    what
        The weights, as the message's subject (e.g. ``"torchxrayvision weights '...'"``).
    path
        Where the file should be.
    url
        Where it can be downloaded from, on a machine with internet.
    alternative
        Another way to get it, appended after the ``wget`` command.

    Returns
    -------
    XRVWeightsUnavailable
        The error, to raise.
    """
    return XRVWeightsUnavailable(
        f"{what} not found: missing file {path.name!r} in cache folder {str(path.parent)!r}. They "
        f"cannot be downloaded here (offline). On a machine with internet run `wget {url}`{alternative} "
        f"and copy the file to {str(path)!r}.")


def _xrv() -> ModuleType:
    """Import torchxrayvision lazily.

    It is slow to import and calls ``warnings.filterwarnings("ignore")`` at import time,
    which would silence every warning in the process; ``catch_warnings`` undoes that.
    """
    with warnings.catch_warnings():
        import torchxrayvision

    return torchxrayvision


def xrv_weights_path(weights: str = DEFAULT_WEIGHTS, cache_dir: str | Path | None = None) -> Path:
    """Where torchxrayvision looks for the weights file named ``weights``.

    Parameters
    ----------
    weights
        A key of ``torchxrayvision.models.model_urls`` such as ``'densenet121-res224-all'``.
    cache_dir
        Folder to look in; default ``torchxrayvision.utils.get_cache_dir()``
        (``~/.torchxrayvision/models_data/``), the library's own convention.

    Returns
    -------
    pathlib.Path
        The file path, whether or not the file exists (the file name is the last part
        of the download URL, as in ``torchxrayvision.models.get_weights``).
    """
    xrv = _xrv()
    if weights not in xrv.models.model_urls:
        known = sorted(k for k in xrv.models.model_urls if k.startswith("densenet"))
        raise ValueError(f"unknown torchxrayvision weights {weights!r}; known DenseNet weights: {known}")
    url = xrv.models.model_urls[weights]["weights_url"]
    folder = xrv.utils.get_cache_dir() if cache_dir is None else str(cache_dir)
    return Path(folder).expanduser() / Path(url).name


class XRVDenseNet(nn.Module):
    """DenseNet-121 backbone from torchxrayvision with a fresh linear head, returning logits.

    Parameters
    ----------
    net
        A loaded ``torchxrayvision.models.DenseNet`` whose ``classifier`` is replaced here
        by ``Linear(1024, num_classes)``.
    num_classes
        Number of output logits.

    Notes
    -----
    We call the backbone's ``features`` Sequential directly rather than its ``forward``:
    that skips the library's operating-point normalisation (``op_threshs``), its sigmoid,
    and its resize/normalisation checks that ``print`` to stdout.
    """

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        net.classifier = nn.Linear(XRV_EMBEDDING_DIM, num_classes)
        net.op_threshs = None  # no sigmoid + op_norm: forward returns raw logits
        net.apply_sigmoid = False
        self.net = net
        self.num_classes = num_classes

    @property
    def head(self) -> nn.Linear:
        """The trainable classification layer (``net.classifier``)."""
        return self.net.classifier

    @property
    def embedding_dim(self) -> int:
        return XRV_EMBEDDING_DIM

    def features(self, x: Tensor) -> Tensor:
        """(B, 1024) pooled DenseNet features for our normalised input (B, 1, H, W)."""
        x = x * XRV_SCALE  # (B, 1, H, W) in [-1024, 1024]
        if x.shape[-2:] != (XRV_RESOLUTION, XRV_RESOLUTION):
            # The same resize torchxrayvision's fix_resolution does, without the print.
            x = F.interpolate(x, size=(XRV_RESOLUTION, XRV_RESOLUTION), mode="bilinear", antialias=True)
        f = self.net.features(x)  # (B, 1024, 7, 7)
        f = F.relu(f)
        return torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)  # (B, 1024)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes)."""
        return self.net.classifier(self.features(x))


def load_xrv_densenet(
    num_classes: int, weights: str = DEFAULT_WEIGHTS, cache_dir: str | Path | None = None
) -> XRVDenseNet:
    """Load the pre-trained torchxrayvision DenseNet-121 with a new ``num_classes`` head.

    Parameters
    ----------
    num_classes
        Outputs of the new linear head.
    weights
        torchxrayvision weights name, default ``'densenet121-res224-all'``.
    cache_dir
        Folder holding the weights file; default torchxrayvision's cache folder.

    Returns
    -------
    XRVDenseNet
        Takes our normalised (B, 1, H, W) input; ``forward`` gives logits,
        ``features`` the (B, 1024) embedding.

    Raises
    ------
    XRVWeightsUnavailable
        If the weights file is absent (no download is attempted), or is not the published file
        (its SHA-256 differs from :data:`PINNED_SHA256`, or none is pinned for ``weights``):
        such a file is never unpickled.
    """
    path = xrv_weights_path(weights, cache_dir)
    xrv = _xrv()
    url = xrv.models.model_urls[weights]["weights_url"]
    if not path.is_file():
        raise missing_weights(f"torchxrayvision weights {weights!r}", path, url,
                              f" (or create xrv.models.DenseNet(weights={weights!r}) once)")
    if weights not in PINNED_SHA256:
        raise XRVWeightsUnavailable(
            f"no SHA-256 is pinned for torchxrayvision weights {weights!r}, so {path} is not "
            "loaded (it is a pickle, which can run code); add the published file's hash to "
            "pneumo.models.xrv.PINNED_SHA256")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != PINNED_SHA256[weights]:
        raise XRVWeightsUnavailable(
            f"{path} is not the published torchxrayvision file for {weights!r} (SHA-256 "
            f"{digest[:16]}..., expected {PINNED_SHA256[weights][:16]}...), so it is not loaded: "
            f"unpickling it could run code. Replace it with a fresh download of {url}")
    log.info("loading torchxrayvision DenseNet-121 weights from %s (SHA-256 checked)", path)
    # These bytes are the published file's (checked above, and not read again): unpickling them
    # is safe, and the network they fill is built without weights, so that torchxrayvision
    # never unpickles anything itself.
    saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    for module in saved.modules():  # torchxrayvision's own patch for networks pickled by old torch
        if not hasattr(module, "_non_persistent_buffers_set"):
            module._non_persistent_buffers_set = set()
    net = xrv.models.DenseNet(weights=None)
    net.load_state_dict(saved.state_dict())
    return XRVDenseNet(net.eval(), num_classes)
