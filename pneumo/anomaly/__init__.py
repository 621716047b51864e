"""Task 3: anomaly detection with convolutional autoencoders trained on normal lungs only.

:func:`run_anomaly` (in :mod:`~pneumo.anomaly.task`, whose docstring tells the whole story)
runs the task; the other modules have one job each:

* :mod:`~pneumo.anomaly.config`: :class:`AnomalyConfig`, the score names, the test comparisons;
* :mod:`~pneumo.anomaly.data`: shrinking, the normal-only training images, input corruption;
* :mod:`~pneumo.anomaly.train`: training one autoencoder;
* :mod:`~pneumo.anomaly.scores`: the six anomaly scores and the threshold;
* :mod:`~pneumo.anomaly.comparator`: torchxrayvision's pre-trained autoencoder (offline);
* :mod:`~pneumo.anomaly.variants`: the variants trained and their settings;
* :mod:`~pneumo.anomaly.robustness`: every pair on shifted validation films;
* :mod:`~pneumo.anomaly.evaluation`: the choice on validation, the test metrics.

The network itself is :class:`pneumo.models.ConvAutoencoder`, re-exported here.
"""

from pneumo.anomaly.comparator import (
    XRV_AE_WEIGHTS,
    XRV_RESOLUTION,
    XRV_SCALE,
    XRVAutoencoderUnavailable,
    load_xrv_autoencoder,
    xrv_autoencoder_path,
    xrv_mse_scores,
)
from pneumo.anomaly.config import (
    COMPARISONS,
    LATENT_SCORES,
    RECONSTRUCTION_SCORES,
    SCORES,
    SELECTION_CRITERIA,
    AnomalyConfig,
)
from pneumo.anomaly.data import corrupt, normal_images, shrink
from pneumo.anomaly.evaluation import add_test_columns, comparison_metrics, headline_metrics, rank_on_validation
from pneumo.anomaly.robustness import shift_summary, shift_table, shifted_images
from pneumo.anomaly.scores import (
    encode_and_score,
    latent_scores,
    reconstruction_scores,
    ssim_map,
    threshold_from_normals,
)
from pneumo.anomaly.task import run_anomaly
from pneumo.anomaly.train import train_autoencoder
from pneumo.anomaly.variants import ae_variants, variant_column, variant_settings
from pneumo.anomaly.variants import variant_column as _column
from pneumo.imaging import INTENSITY_MODES, gaussian_blur  # importable from here before the split
from pneumo.models import ConvAutoencoder, build_autoencoder

__all__ = [
    "COMPARISONS",
    "INTENSITY_MODES",
    "LATENT_SCORES",
    "RECONSTRUCTION_SCORES",
    "SCORES",
    "SELECTION_CRITERIA",
    "XRV_AE_WEIGHTS",
    "XRV_RESOLUTION",
    "XRV_SCALE",
    "AnomalyConfig",
    "ConvAutoencoder",
    "XRVAutoencoderUnavailable",
    "add_test_columns",
    "ae_variants",
    "build_autoencoder",
    "comparison_metrics",
    "corrupt",
    "encode_and_score",
    "gaussian_blur",
    "headline_metrics",
    "latent_scores",
    "load_xrv_autoencoder",
    "normal_images",
    "rank_on_validation",
    "reconstruction_scores",
    "run_anomaly",
    "shift_summary",
    "shift_table",
    "shifted_images",
    "shrink",
    "ssim_map",
    "threshold_from_normals",
    "train_autoencoder",
    "variant_column",
    "variant_settings",
    "xrv_autoencoder_path",
    "xrv_mse_scores",
    "_column",  # the old name of variant_column, which pneumo.report.anomaly imports
]
