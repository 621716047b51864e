"""Training and running the networks: one loop for every network, augmentation, prediction.

Modules:

- :mod:`pneumo.training.loop`: :func:`fit`, the one training loop (AdamW, warm-up + cosine,
  early stopping, Ctrl-C), and :class:`TrainResult`;
- :mod:`pneumo.training.classifier`: :func:`train_classifier` (Tasks 1a and 1b);
- :mod:`pneumo.training.augment`: :func:`augment_batch`, on-device batch jitter;
- :mod:`pneumo.training.inference`: :func:`predict_proba`, :func:`extract_features`.
"""

from __future__ import annotations

from pneumo.training.augment import augment_batch
from pneumo.training.classifier import BALANCE_MODES, SELECT_METRICS, train_classifier
from pneumo.training.inference import extract_features, predict_proba
from pneumo.training.loop import TrainResult, fit, stop_if_interrupted, time_left

__all__ = ["fit", "TrainResult", "stop_if_interrupted", "time_left", "train_classifier", "BALANCE_MODES",
           "SELECT_METRICS", "augment_batch", "predict_proba", "extract_features"]
