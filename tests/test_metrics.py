"""Tests of pneumo.metrics against scikit-learn, and of the patient-level bootstrap."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from pneumo.metrics import (
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    confusion,
    metrics_table,
    multiclass_metrics,
)


def binary_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.6).astype(int)
    # Rounded scores create ties, which the AUC/AP code must handle like sklearn.
    p = np.clip(np.round(0.35 * y + rng.normal(0.35, 0.2, n), 2), 0, 1)
    return y, p


def multiclass_data(n=400, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def sklearn_binary(y, p, threshold, w=None):
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, sample_weight=w).ravel()
    return {
        "accuracy": skm.accuracy_score(y, pred, sample_weight=w),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred, sample_weight=w),
        "sensitivity": skm.recall_score(y, pred, sample_weight=w),
        "specificity": skm.recall_score(y, pred, pos_label=0, sample_weight=w),
        "precision": skm.precision_score(y, pred, sample_weight=w),
        "f1": skm.f1_score(y, pred, sample_weight=w),
        "roc_auc": skm.roc_auc_score(y, p, sample_weight=w),
        "pr_auc": skm.average_precision_score(y, p, sample_weight=w),
        "tn": tn, "fp": fp, "fn": fn, "tp": tp,
    }


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.61])
def test_binary_metrics_match_sklearn(threshold):
    y, p = binary_data()
    ours = binary_metrics(y, p, threshold)
    ref = sklearn_binary(y, p, threshold)
    assert set(ours) == set(ref)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k
    assert isinstance(ours["tp"], int)


def test_weighted_binary_metrics_match_sklearn_and_repetition():
    y, p = binary_data(n=120, seed=1)
    w = np.random.default_rng(2).integers(0, 4, y.size)
    ours = binary_metrics(y, p, 0.5, sample_weight=w)
    ref = sklearn_binary(y, p, 0.5, w)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k
    repeated = binary_metrics(np.repeat(y, w), np.repeat(p, w), 0.5)
    for k, v in repeated.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k
    # A (n_boot, n) batch of weights gives one value per row.
    batch = np.stack([w, np.ones_like(w), w[::-1]])
    out = binary_metrics(y, p, 0.5, sample_weight=batch)
    assert out["roc_auc"].shape == (3,)
    assert out["roc_auc"][1] == pytest.approx(binary_metrics(y, p)["roc_auc"])
    assert out["f1"][2] == pytest.approx(binary_metrics(y, p, 0.5, sample_weight=w[::-1])["f1"])


def test_binary_metrics_undefined_are_nan():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert np.isnan(m["roc_auc"]) and np.isnan(m["specificity"]) and np.isnan(m["balanced_accuracy"])
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert np.isnan(binary_metrics([0, 1], [0.1, 0.2])["precision"])  # no positive calls
    with pytest.raises(ValueError):
        binary_metrics([0, 2], [0.1, 0.2])


def test_multiclass_metrics_match_sklearn():
    y, proba = multiclass_data()
    pred = proba.argmax(axis=1)
    ours = multiclass_metrics(y, proba, class_names=["normal", "bacterial", "viral"])
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert ours["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert ours["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert ours["sensitivity_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert ours["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert ours["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    onehot = label_binarize(y, classes=[0, 1, 2])
    assert ours["pr_auc"] == pytest.approx(skm.average_precision_score(onehot, proba, average="macro"))
    recalls = skm.recall_score(y, pred, average=None)
    precisions = skm.precision_score(y, pred, average=None)
    for c, name in enumerate(["normal", "bacterial", "viral"]):
        assert ours[f"sensitivity_{name}"] == pytest.approx(recalls[c])
        assert ours[f"precision_{name}"] == pytest.approx(precisions[c])
    assert "sensitivity_0" in multiclass_metrics(y, proba)


def test_multiclass_binary_case_equals_binary_auc():
    y, p = binary_data()
    proba = np.stack([1 - p, p], axis=1)
    assert multiclass_metrics(y, proba)["roc_auc"] == pytest.approx(binary_metrics(y, p)["roc_auc"])


def test_confusion_matches_sklearn():
    y, proba = multiclass_data(n=50)
    pred = proba.argmax(axis=1)
    np.testing.assert_array_equal(confusion(y, pred, 3), skm.confusion_matrix(y, pred, labels=[0, 1, 2]))
    assert confusion([0, 0], [0, 0], 3).shape == (3, 3)


# -- bootstrap -------------------------------------------------------------------------------
def patient_data(n_patients=200, seed=0):
    """~600 images from patients with 1-5 images each; label per patient."""
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 6, n_patients)
    groups = np.repeat(np.arange(n_patients), per_patient)
    y_patient = (rng.random(n_patients) < 0.6).astype(int)
    y = y_patient[groups]
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, y.size), 0, 1)
    return y, p, groups


def test_bootstrap_ci_contains_point_and_is_fast():
    y, p, groups = patient_data()
    assert 500 < y.size < 700
    t0 = time.perf_counter()
    ci = bootstrap_ci(binary_metrics, y, p, groups, n_boot=1000, seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5, f"bootstrap took {elapsed:.1f}s"
    point = binary_metrics(y, p)
    assert set(ci) == set(point)
    for k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "pr_auc"):
        low, high = ci[k]
        assert low < point[k] < high, k
        assert high - low < 0.3


def test_vectorised_bootstrap_equals_per_resample_loop():
    y, p, groups = patient_data(n_patients=40, seed=3)
    fast = bootstrap_ci(functools.partial(binary_metrics, threshold=0.4), y, p, groups, n_boot=200, seed=5)
    slow = bootstrap_ci(lambda yy, pp: binary_metrics(yy, pp, 0.4), y, p, groups, n_boot=200, seed=5)
    assert set(fast) == set(slow)
    for k in fast:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-9, atol=1e-12, err_msg=k)
    y3, proba = multiclass_data(n=120)
    g3 = np.arange(120) // 3
    fast = bootstrap_ci(multiclass_metrics, y3, proba, g3, n_boot=100, seed=1)
    slow = bootstrap_ci(lambda a, b: multiclass_metrics(a, b), y3, proba, g3, n_boot=100, seed=1)
    for k in fast:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_bootstrap_moves_patients_together():
    # Each image's score is its own index, so a metric_fn can see which images were drawn.
    groups = np.array(["a", "a", "a", "b", "c", "c", "d", "e", "e", "e", "e"])
    y = np.zeros(groups.size, dtype=int)
    index = np.arange(groups.size, dtype=float)
    draws = []

    def record(yy, ss):
        draws.append(ss.astype(int))
        return {"n": float(ss.size)}

    bootstrap_ci(record, y, index, groups, n_boot=300, seed=0)
    assert len(draws) == 300
    sizes = set()
    for drawn in draws:
        counts = np.bincount(drawn, minlength=groups.size)
        for g in np.unique(groups):
            members = counts[groups == g]
            assert (members == members[0]).all(), "images of one patient were split"
        sizes.add(drawn.size)
        # Five patients drawn in total, with replacement.
        assert sum(counts[groups == g][0] for g in np.unique(groups)) == 5
    assert len(sizes) > 1  # patients of different sizes -> resamples of different sizes


def test_patient_bootstrap_is_wider_than_image_bootstrap():
    # 20 patients x 10 near-identical images: really 20 independent observations, not 200.
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 10)
    y = np.repeat(rng.integers(0, 2, 20), 10)
    p = np.clip(np.repeat(0.3 * y[::10] + rng.normal(0.35, 0.2, 20), 10), 0, 1)
    by_patient = bootstrap_ci(binary_metrics, y, p, groups, n_boot=500)["accuracy"]
    by_image = bootstrap_ci(binary_metrics, y, p, None, n_boot=500)["accuracy"]
    assert by_patient[1] - by_patient[0] > 2 * (by_image[1] - by_image[0])


def test_bootstrap_survives_single_class_resamples():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])
    groups = np.array([0, 0, 1, 1])  # 2 patients: half the resamples hold one class only
    ci = bootstrap_ci(binary_metrics, y, p, groups, n_boot=200)
    assert ci["roc_auc"] == (1.0, 1.0)
    # A metric_fn that raises on single-class data (like sklearn) is skipped, not fatal.
    ci = bootstrap_ci(lambda a, b: {"auc": skm.roc_auc_score(a, b)}, y, p, groups, n_boot=50)
    assert ci["auc"] == (1.0, 1.0)
    nothing = bootstrap_ci(binary_metrics, np.ones(4, int), p, groups, n_boot=20)
    assert all(np.isnan(v) for v in nothing["roc_auc"])


def test_metrics_table():
    y, p, groups = patient_data(n_patients=60)
    table = metrics_table(binary_metrics, y, p, groups, n_boot=200, seed=0)
    assert list(table.columns) == ["value", "ci_low", "ci_high"]
    assert list(table.index) == list(binary_metrics(y, p))
    assert table.loc["roc_auc", "value"] == pytest.approx(skm.roc_auc_score(y, p))
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()


# -- threshold -------------------------------------------------------------------------------
def test_choose_threshold_on_separable_data():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    p = np.array([0.05, 0.2, 0.3, 0.4, 0.6, 0.7, 0.95])
    for rule in ("youden", "balanced_accuracy", "f1"):
        t = choose_threshold(y, p, rule)
        assert t == pytest.approx(0.5), rule
        m = binary_metrics(y, p, t)
        assert m["sensitivity"] == 1 and m["specificity"] == 1
    with pytest.raises(ValueError):
        choose_threshold(y, p, "accuracy")
    with pytest.raises(ValueError):
        choose_threshold(np.ones(3), [0.1, 0.2, 0.3])


def test_choose_threshold_optimises_its_criterion():
    y, p = binary_data(n=200, seed=4)
    t = choose_threshold(y, p, "youden")
    best = binary_metrics(y, p, t)
    for other in np.unique(p):
        m = binary_metrics(y, p, other)
        assert m["sensitivity"] + m["specificity"] <= best["sensitivity"] + best["specificity"] + 1e-12
    t_f1 = choose_threshold(y, p, "f1")
    assert all(binary_metrics(y, p, o)["f1"] <= binary_metrics(y, p, t_f1)["f1"] + 1e-12 for o in np.unique(p))
