"""Task 3's parameters and vocabulary: :class:`AnomalyConfig`, the anomaly scores, the test comparisons."""

from __future__ import annotations

import dataclasses

from pneumo.config import ConfigError, TaskConfig, param
from pneumo.imaging import INTENSITY_MODES
from pneumo.shift import SELECTION_CRITERIA as _SHARED_CRITERIA

#: How Task 3 chooses its (autoencoder, score) pair on validation: Task 1's criteria
#: (:data:`pneumo.shift.SELECTION_CRITERIA`) and ``normals``, the mean ROC AUC over the shifts
#: when only the normal films are shifted (:func:`pneumo.anomaly.robustness.shift_table`).
SELECTION_CRITERIA = {**_SHARED_CRITERIA, "normals": "val_shift_normals_roc_auc_mean"}

#: Anomaly scores computed for every autoencoder; the first three use the reconstruction, the
#: others only the encoder (its code, or its pooled feature maps).
RECONSTRUCTION_SCORES = ("mse", "ssim", "blur")
LATENT_SCORES = ("knn", "mahalanobis", "features")
SCORES = RECONSTRUCTION_SCORES + LATENT_SCORES

#: The comparisons reported on test: name -> labels that count as positive (vs normal).
COMPARISONS = {"pneumonia": ("bacterial", "viral"), "bacterial": ("bacterial",), "viral": ("viral",)}


@dataclasses.dataclass(frozen=True)
class AnomalyConfig(TaskConfig):
    """Task 3: autoencoders trained on normal chest X-rays only flag pneumonia as anomalies."""

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
    train_workers: int = param(1, "autoencoders trained at once in worker processes, spread over every "
                               "visible GPU (1: one after another here)", key=False, interval="[1, inf)")
    epochs: int = param(25, "maximum epochs per autoencoder", interval="[1, inf)")
    batch_size: int = param(32, "images per step", interval="[1, inf)")
    lr: float = param(2e-3, "peak AdamW learning rate (cosine decay)", interval="(0, inf)")
    weight_decay: float = param(1e-5, "AdamW weight decay", interval="[0, inf)")
    patience: int = param(5, "epochs without validation-loss improvement before stopping",
                          interval="[0, inf)")
    selection: str = param("normals", "choose the (autoencoder, score) pair by its mean validation ROC AUC "
                           "when only the normal films are shifted, against the pneumonia films as they are "
                           "(normals: a normal film with another exposure or framing must not become an "
                           "anomaly), when every film is shifted (shift), or on validation as it is (plain)",
                           choices=tuple(SELECTION_CRITERIA))
    reference_copies: int = param(2, "jittered copies of each training normal (the training augmentation: "
                                  "position, zoom, rotation, exposure) added to the normal reference of the code "
                                  "and feature scores, so that a normal film framed a little differently stays "
                                  "normal there (0: the training normals as they are)", interval="[0, inf)")
    knn_k: int = param(5, "neighbours of the latent k-NN score", interval="[1, inf)")
    threshold_quantile: float = param(0.95, "decision threshold: this quantile of the validation normals' scores",
                                      interval="(0, 1)")
    val_fraction: float = param(0.15, "share of train patients held out for validation (as Task 1)",
                                interval="(0, 1)")
    comparators: bool = param(True, "add torchxrayvision's pre-trained autoencoder when its weights are cached")

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
        # Task 1's cpu resolution (one decode serves both); two autoencoders at a time, one core
        # each, train ~2x the images/s of one on both cores (batches of 32 small images).
        "cpu": dict(decode_resolution=64, train_workers=2),
        "gpu": dict(decode_resolution=224, resolution=128, width=32, depth=5, latent=128,
                    grid="full", epochs=100, patience=12, batch_size=64, train_workers=4),
    }
