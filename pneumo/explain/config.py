"""Task 4's settings (:class:`ExplainConfig`) and vocabulary: the methods and networks compared."""

from __future__ import annotations

import dataclasses

from pneumo.config import TaskConfig, param
from pneumo.upstream import CLASSIFIER_TASKS

__all__ = ["ExplainConfig", "METHODS", "METHOD_NAMES", "NETWORKS"]

#: The attribution methods compared, in table order.
METHODS = ("gradcam", "integrated_gradients", "shap")
METHOD_NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated gradients", "shap": "SHAP",
                "random": "random order"}
#: The two networks, by Task 1 name (:data:`pneumo.upstream.CLASSIFIER_TASKS`).
NETWORKS = CLASSIFIER_TASKS


@dataclasses.dataclass(frozen=True)
class ExplainConfig(TaskConfig):
    """Task 4: attribution maps, sanity checks, lung-field share, layers and neurons."""

    per_group: int = param(2, "test images per class and outcome (correct / misclassified by 1b)",
                           interval="[1, inf)")
    ig_steps: int = param(32, "integrated-gradients path points", interval="[1, inf)")
    shap_samples: int = param(32, "SHAP gradient samples per image", interval="[1, inf)")
    shap_background: int = param(32, "training images in the SHAP background", interval="[1, inf)")
    sanity_images: int = param(4, "images in the randomisation test (0: all chosen images)",
                               interval="[0, inf)")
    perturbation_steps: int = param(16, "points of the deletion / insertion curves", interval="[1, inf)")
    random_orders: int = param(2, "random pixel orders averaged for the baseline curves", interval="[1, inf)")
    all_test_gradcam: bool = param(True, "Grad-CAM lung share on every test image, not only the chosen")
    lung_quantile: float = param(0.35, "share of inner pixels taken as lung by the template",
                                 interval="(0, 1)")
    neuron_network: str = param("multiclass", "network whose layers and neurons are shown",
                                choices=NETWORKS)
    neuron_channels: int = param(4, "channels per block shown (feature visualisation, patches)",
                                 interval="[1, inf)")
    patch_images: int = param(512, "training images scanned for channel statistics and patches",
                              interval="[1, inf)")
    top_patches: int = param(4, "most exciting patches per channel", interval="[1, inf)")
    maxact_steps: int = param(64, "activation-maximisation steps", interval="[1, inf)")
    class_channels: int = param(3, "last-block channels per class in the class summary", interval="[1, inf)")

    PROFILES = {
        "smoke": dict(per_group=1, ig_steps=8, shap_samples=8, shap_background=8, sanity_images=2,
                      perturbation_steps=8, random_orders=1, neuron_channels=2, patch_images=96,
                      top_patches=3, maxact_steps=16, class_channels=2, bootstrap=200),
        "cpu": {},
        "gpu": dict(per_group=4, ig_steps=64, shap_samples=128, shap_background=64, sanity_images=0,
                    perturbation_steps=32, random_orders=5, neuron_channels=6, patch_images=4096,
                    maxact_steps=256, class_channels=4),
    }
