"""Networks of the study: a small VGG-style CNN and the torchxrayvision DenseNet comparator.

torchxrayvision itself is imported only when the DenseNet is asked for.
"""

from pneumo.models.vgg import INTENSITY_MODES, IntensityStretch, VGGNet, architecture_table, build_model, count_parameters
from pneumo.models.xrv import (
    DEFAULT_WEIGHTS,
    XRVDenseNet,
    XRVWeightsUnavailable,
    load_xrv_densenet,
    xrv_weights_path,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "INTENSITY_MODES",
    "IntensityStretch",
    "VGGNet",
    "XRVDenseNet",
    "XRVWeightsUnavailable",
    "architecture_table",
    "build_model",
    "count_parameters",
    "load_xrv_densenet",
    "xrv_weights_path",
]
