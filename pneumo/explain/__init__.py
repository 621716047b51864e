"""Task 4: what drives the decisions of the Task 1a and 1b networks, down to single channels.

This package only re-exports; the modules:

- :mod:`~pneumo.explain.config`: the task's settings (:class:`ExplainConfig`), the methods and
  networks compared;
- :mod:`~pneumo.explain.task`: :func:`run_explain`, the task end to end (its docstring tells
  the story);
- :mod:`~pneumo.explain.parts`: its computations, one network's explanations and one
  network's neurons, each as a ``Part``;
- :mod:`~pneumo.explain.attribution`: Grad-CAM, integrated gradients, SHAP;
- :mod:`~pneumo.explain.sanity`: parameter randomisation, deletion / insertion curves;
- :mod:`~pneumo.explain.lungs`: the lung-field template and region shares;
- :mod:`~pneumo.explain.neurons`: filters, activation maximisation, channel statistics.
"""

from pneumo.explain.attribution import (GradCAM, ShapGradient, attribute_all, block_layers,
                                        integrated_gradients, require_vgg)
from pneumo.explain.config import METHOD_NAMES, METHODS, NETWORKS, ExplainConfig
from pneumo.explain.lungs import LungTemplate, region_shares
from pneumo.explain.neurons import (activation_maximisation, channel_statistics, class_separating_channels,
                                    first_layer_filters, receptive_fields, top_patches)
from pneumo.explain.sanity import (curve_auc, perturbation_curves, randomisation_stages, randomised_copy,
                                   rank_correlation)
from pneumo.explain.task import choose_images, run_explain

__all__ = [
    # the task
    "ExplainConfig", "run_explain", "choose_images", "METHODS", "METHOD_NAMES", "NETWORKS",
    # its building blocks
    "GradCAM", "integrated_gradients", "ShapGradient", "attribute_all", "block_layers", "require_vgg",
    "LungTemplate", "region_shares",
    "randomised_copy", "randomisation_stages", "rank_correlation", "perturbation_curves", "curve_auc",
    "activation_maximisation", "channel_statistics", "class_separating_channels", "first_layer_filters",
    "receptive_fields", "top_patches",
]
