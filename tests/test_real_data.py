"""Real-data checks: skipped where ../shared/data/chest_xray is absent."""

from __future__ import annotations

import pytest

from pneumo.classification import BinaryConfig, run_classification

from conftest import requires_real_data

pytestmark = requires_real_data


@pytest.fixture(scope="module")
def real_binary(real_data, tmp_path_factory):
    """A short, low-resolution Task 1a run on the real X-rays (about a minute on 2 cores)."""
    config = BinaryConfig.create(
        "cpu", data=str(real_data), cache=str(tmp_path_factory.mktemp("real-cache")),
        resolution=64, width=8, depth=4, epochs=5, grid="none", bootstrap=200, device="cpu",
    )
    return run_classification(config)


def test_short_real_run_separates_pneumonia(real_binary):
    metrics = real_binary.metrics
    assert metrics["data_synthetic"] is False
    assert metrics["test_roc_auc"] >= 0.90, metrics


def test_real_run_never_mixes_patients(real_binary):
    predictions = real_binary.table("predictions")
    by_split = predictions.groupby("split")["patient"].apply(set)
    assert not by_split["val"] & by_split["test"]
    summary = real_binary.json("data_summary")
    assert summary["counts"]["test"]["total"] == 624


def test_short_real_anomaly_run_flags_pneumonia(real_data, tmp_path_factory):
    """Task 3 on the real X-rays, one small autoencoder for a few epochs (well under a minute):
    trained on normal images only, it must still rank pneumonia above normal on test."""
    from pneumo.anomaly import AnomalyConfig, run_anomaly

    config = AnomalyConfig.create("cpu", data=str(real_data), cache=str(tmp_path_factory.mktemp("real-ae")),
                                  grid="none", epochs=4, bootstrap=100, comparators=False, device="cpu")
    entry = run_anomaly(config)
    metrics = entry.metrics
    assert metrics["data_synthetic"] is False and metrics["train_images"] > 500
    assert metrics["test_roc_auc"] >= 0.75, metrics
    assert metrics["test_specificity"] >= 0.85, metrics  # threshold from validation normals
