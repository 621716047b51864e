"""Networks of the study: a small VGG-style CNN, the torchxrayvision DenseNet comparator and
Task 3's convolutional autoencoder.

torchxrayvision itself is imported only when the DenseNet is asked for.
"""

from pneumo.models.autoencoder import ConvAutoencoder, build_autoencoder
from pneumo.models.vgg import INTENSITY_MODES, IntensityStretch, VGGNet, architecture_table, build_model, count_parameters
from pneumo.models.xrv import (
    DEFAULT_WEIGHTS,
    XRVDenseNet,
    XRVWeightsUnavailable,
    load_xrv_densenet,
    xrv_weights_path,
)

__all__ = [
    "ConvAutoencoder",
    "DEFAULT_WEIGHTS",
    "INTENSITY_MODES",
    "IntensityStretch",
    "VGGNet",
    "XRVDenseNet",
    "XRVWeightsUnavailable",
    "architecture_table",
    "build_autoencoder",
    "build_model",
    "count_parameters",
    "load_xrv_densenet",
    "xrv_weights_path",
]
