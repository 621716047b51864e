"""Task 2 on phantoms: embeddings, k-NN chosen on validation, t-SNE placement, caching."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo import embeddings
from pneumo.embeddings import EmbeddingsConfig, ScaledKNN, class_agreement, pixel_features, run_embeddings, tsne_map
from pneumo.runner import run_task
from pneumo.shift import SHIFTS
from pneumo.upstream import classifier_entries, load_classifier


@pytest.fixture(scope="session")
def embeddings_entry(task_phantoms, task_cache):
    """Task 2 through papermill on the smoke profile (trains the smoke Task 1 networks if needed)."""
    return run_task("embeddings", "smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu")


def _blobs(n_per_class: int, seed: int, dim: int = 8):
    rng = np.random.default_rng(seed)
    centres = np.eye(3, dim) * 6.0
    y = np.repeat(np.arange(3), n_per_class)
    return centres[y] + rng.normal(size=(len(y), dim)), y


# -- units --------------------------------------------------------------------------------------
def test_pixel_features_block_average():
    images = np.zeros((3, 64, 64), np.uint8)
    images[1] = 255
    images[2, :32] = 255  # top half white
    X = pixel_features(images, 8)
    assert X.shape == (3, 64) and X.dtype == np.float32
    assert X[0].max() == 0 and np.allclose(X[1], 1)
    assert np.allclose(X[2].reshape(8, 8)[:4], 1) and np.allclose(X[2].reshape(8, 8)[4:], 0)


def test_scaled_knn_cosine_and_scaling():
    X, y = _blobs(30, seed=0)
    knn = ScaledKNN(5, "cosine", "standard").fit(X, y)
    proba = knn.predict_proba(X + 0.01)
    assert proba.shape == (90, 3) and np.allclose(proba.sum(1), 1)
    assert (proba.argmax(1) == y).mean() > 0.95
    assert np.allclose(knn.transform(X).mean(0), 0, atol=1e-9)  # standardised with train statistics
    with pytest.raises(ValueError, match="distance"):
        ScaledKNN(3, "manhattan")


def test_tsne_places_new_points_without_refitting():
    X_train, y_train = _blobs(60, seed=1)
    X_new, y_new = _blobs(10, seed=2)
    train_map, new_map = tsne_map(X_train, X_new, perplexity=20, n_iter=250, random_state=0)
    assert train_map.shape == (180, 2) and new_map.shape == (30, 2)
    assert np.isfinite(new_map).all()
    # Held-out points land among training points of their own class.
    assert class_agreement(train_map, y_train, new_map, y_new, k=5) > 0.9
    # The training map does not depend on the points placed into it (no refit on them).
    again, _ = tsne_map(X_train, X_new[:5] * 3, perplexity=20, n_iter=250, random_state=0)
    assert np.allclose(train_map, again)


# -- the task -----------------------------------------------------------------------------------
def test_embeddings_task_shapes_and_learning(embeddings_entry, task_phantoms, task_cache):
    entry = embeddings_entry
    assert entry.exists and (entry.path / "notebook.ipynb").is_file()
    images = entry.table("images")
    arrays = entry.arrays()
    networks = classifier_entries("smoke", data=str(task_phantoms), cache=str(task_cache), compute=False)
    for name, net in (("net_1a", networks["binary"]), ("net_1b", networks["multiclass"])):
        model, _ = load_classifier(net)
        assert arrays[f"features_{name}"].shape == (len(images), model.embedding_dim)
    assert arrays["features_pixels"].shape == (len(images), 16 * 16)
    for name in embeddings.REPRESENTATIONS:
        assert arrays[f"tsne_{name}"].shape == (len(images), 2) and np.isfinite(arrays[f"tsne_{name}"]).all()
    # The key names the Task 1 entries it read.
    assert entry.params["binary_entry"] == networks["binary"].path.name
    # The 1a embedding separates normal from pneumonia, far better than the pixels it came from
    # (on 91 test phantoms; validation may pick k=1, whose ROC AUC is its balanced accuracy).
    m = entry.metrics
    assert m["net_1a_binary_test_roc_auc"] > 0.75 and m["net_1a_binary_test_roc_auc"] > m["pixels_binary_test_roc_auc"] + 0.1, m
    metrics = entry.table("knn_test_metrics")
    assert set(zip(metrics["representation"], metrics["question"])) == set(embeddings.KNN_PAIRS)
    assert (metrics["ci_low"] <= metrics["value"] + 1e-12).all()
    gallery = entry.table("gallery")
    assert set(gallery.loc[gallery["rank"] == 0, "relpath"]) <= set(images.loc[images["split"] == "test", "relpath"])
    assert set(gallery.loc[gallery["rank"] > 0, "relpath"]) <= set(images.loc[images["split"] == "train", "relpath"])


def test_knns_under_shift(embeddings_entry):
    """Every chosen k-NN is scored on every shifted copy of validation; the unshifted row is the
    validation figure that chose it, and the headline summarises the shifted rows."""
    shifts = embeddings_entry.table("knn_val_shifts")
    assert len(shifts) == len(embeddings.KNN_PAIRS) * len(SHIFTS)
    grid = embeddings_entry.table("knn_grid")
    m = embeddings_entry.metrics
    for representation, question in embeddings.KNN_PAIRS:
        pair = shifts[(shifts["representation"] == representation) & (shifts["question"] == question)]
        chosen = grid[(grid["representation"] == representation) & (grid["question"] == question)].iloc[0]
        clean = pair[pair["shift"] == "none"].iloc[0]
        assert clean["balanced_accuracy"] == pytest.approx(chosen["val_balanced_accuracy"])
        shifted = pair[pair["shift"] != "none"]["balanced_accuracy"]
        prefix = f"{representation}_{question}_val_shift_balanced_accuracy"
        assert m[f"{prefix}_mean"] == pytest.approx(shifted.mean()) and m[f"{prefix}_worst"] == pytest.approx(shifted.min())


def test_embeddings_cache_hit_and_key(embeddings_entry, task_phantoms, task_cache):
    config = EmbeddingsConfig.create("smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu",
                                     num_workers=1)
    assert run_embeddings(config, compute=False).path == embeddings_entry.path
    assert not run_embeddings(config.replace(max_k=5), compute=False).exists


def test_knn_is_chosen_on_validation_only(task_phantoms, task_cache, monkeypatch, one_thread):
    """Every candidate is scored on validation images; test images never reach the selection."""
    seen = []
    original = embeddings.select_knn

    def spy(X_train, y_train, X_val, y_val, question, k_values):
        seen.append((len(X_train), len(X_val)))
        return original(X_train, y_train, X_val, y_val, question, k_values)

    monkeypatch.setattr(embeddings, "select_knn", spy)
    config = EmbeddingsConfig.create("smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu",
                                     max_k=3, tsne_iterations=50, bootstrap=20, force=True)
    entry = run_embeddings(config)
    images = entry.table("images")
    counts = images["split"].value_counts()
    assert seen == [(counts["train"], counts["val"])] * len(embeddings.KNN_PAIRS)
    grid = entry.table("knn_grid")
    chosen = entry.table("knn_test_metrics").drop_duplicates(["representation", "question"])
    for row in chosen.itertuples():
        pair = grid[(grid["representation"] == row.representation) & (grid["question"] == row.question)]
        best = pair["val_balanced_accuracy"].max()
        winner = pair.iloc[0]
        assert winner["val_balanced_accuracy"] == best
        assert (winner["k"], winner["distance"], winner["scaling"]) == (row.k, row.distance, row.scaling)


def test_upstream_data_must_be_the_networks_data(embeddings_entry, task_phantoms, task_cache, phantom_root):
    """Reading a Task 1 network's images from another folder is an error, not a silent mix-up."""
    from pneumo.upstream import entry_dataset

    networks = classifier_entries("smoke", data=str(task_phantoms), cache=str(task_cache), compute=False)
    same = entry_dataset(networks["binary"], data=str(task_phantoms), cache=str(task_cache))
    assert same.fingerprint == networks["binary"].json("data_summary")["fingerprint"]
    with pytest.raises(RuntimeError, match="not the data"):
        entry_dataset(networks["binary"], data=str(phantom_root), cache=str(task_cache))
