"""Task 3 on phantoms: autoencoders trained on normal images only, scores, threshold, report."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from pneumo.training.augment import jittered_copies
from pneumo.anomaly import (
    shift_summary,
    shift_table,
    COMPARISONS,
    SCORES,
    AnomalyConfig,
    ConvAutoencoder,
    ae_variants,
    build_autoencoder,
    gaussian_blur,
    latent_scores,
    normal_images,
    rank_on_validation,
    reconstruction_scores,
    run_anomaly,
    shrink,
    ssim_map,
    threshold_from_normals,
    xrv_autoencoder_path,
)
from pneumo.data import load_dataset, render_phantom
from pneumo.imaging import equalize_histogram, normalise_intensity, stretch_contrast
from pneumo.metrics import binary_metrics
from pneumo.runner import run_task
from pneumo.shift import SHIFTS

from conftest import REPO_ROOT


@pytest.fixture(scope="session")
def anomaly_entry(task_phantoms, task_cache):
    """Task 3 through papermill on the session phantoms, as the report runs it."""
    return run_task("anomaly", "smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu")


# -- the model and the scores --------------------------------------------------------------
def test_model_returns_code_and_reconstruction(one_thread):
    model = ConvAutoencoder(resolution=32, width=4, depth=3, latent=7).eval()
    x = torch.randn(5, 1, 32, 32)
    result = model(x)
    assert set(result) == {"z", "out"}
    assert result["z"].shape == (5, 7) and result["out"].shape == (5, 1, 32, 32)
    with pytest.raises(ValueError, match="divisible"):
        ConvAutoencoder(resolution=30, depth=3)


def test_ssim_and_blur_basics():
    x = torch.randn(2, 1, 24, 24)
    assert torch.allclose(ssim_map(x, x), torch.ones_like(x), atol=1e-5)
    assert ssim_map(x, torch.randn(2, 1, 24, 24)).mean() < 0.5  # unrelated images
    constant = torch.full((1, 1, 16, 16), 3.0)
    assert torch.allclose(gaussian_blur(constant, 1.5), constant, atol=1e-5)


def test_equalisation_removes_exposure_and_keeps_order():
    """Histogram equalisation: any grey-level remapping that keeps the order (a different
    exposure) gives the same output; equal pixels stay equal, order is kept, 0..255 is used."""
    rng = np.random.default_rng(0)
    image = render_phantom("normal", rng, 64)["image"]
    levels = np.unique(image)
    assert len(levels) > 50
    # A darker, lower-contrast exposure: an increasing map of the image's own grey levels.
    darker = (np.interp(image, levels, np.linspace(20, 20 + len(levels) - 1, len(levels)))).astype(np.uint8)
    a, b = equalize_histogram(np.stack([image, darker]))
    assert np.array_equal(a, b)
    assert a.min() == 0 and a.max() == 255
    order = np.argsort(image.ravel(), kind="stable")
    assert np.all(np.diff(a.ravel()[order].astype(int)) >= 0)  # monotone in the input
    assert equalize_histogram(np.full((1, 8, 8), 77, np.uint8)).max() == 0  # constant image: no division by 0


def test_contrast_stretch_and_modes():
    x = np.random.default_rng(1).integers(60, 120, (2, 32, 32)).astype(np.uint8)
    y = stretch_contrast(x)
    assert y.dtype == np.uint8 and y.min() == 0 and y.max() == 255
    assert np.array_equal(normalise_intensity(x, "none"), x)
    assert np.array_equal(normalise_intensity(x, "equalize"), equalize_histogram(x))
    with pytest.raises(ValueError, match="intensity"):
        normalise_intensity(x, "clahe")
    with pytest.raises(TypeError, match="uint8"):
        equalize_histogram(x.astype(np.float32))


def _phantom_pair(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A normal phantom and the same image with a bacterial phantom's consolidation added."""
    rng = np.random.default_rng(seed)
    normal = render_phantom("normal", rng, size)
    sick = render_phantom("bacterial", np.random.default_rng(seed + 1000), size)
    lesion = gaussian_blur(torch.from_numpy(sick["lesion"].astype(np.float32))[None, None], 1.0)[0, 0].numpy()
    added = np.clip(normal["image"].astype(np.float32) + 70 * lesion, 0, 255).astype(np.uint8)
    return normal["image"], added, sick["lesion"]


def test_scores_rise_with_a_lesion_on_phantoms():
    """Score direction: against the same normal reconstruction, a consolidation scores higher."""
    from pneumo.imaging import to_model_input

    for seed in range(3):
        normal, sick, lesion = _phantom_pair(seed)
        if not lesion.any():
            continue
        x = to_model_input(torch.from_numpy(np.stack([normal, sick])))  # (2, 1, 64, 64)
        out = x[:1].expand(2, -1, -1, -1)  # an ideal "normal only" reconstruction of both
        scores = reconstruction_scores(x, out, blur_sigma=2.0, margin=8)
        for name, value in scores.items():
            assert value[1] > value[0] + 1e-6, (name, value)


def test_latent_scores_grow_away_from_the_normals():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 6))
    near, far = rng.normal(size=(50, 6)), rng.normal(size=(50, 6)) + 4.0
    scores = latent_scores(train, np.concatenate([near, far]), k=5)
    y = np.r_[np.zeros(50), np.ones(50)]
    for name in ("knn", "mahalanobis"):
        assert binary_metrics(y, scores[name])["roc_auc"] > 0.95, name


def test_threshold_is_a_quantile_of_the_given_normals():
    scores = np.arange(101, dtype=float)
    assert threshold_from_normals(scores, 0.95) == pytest.approx(95.0)


def _val_rows(n_normal: int = 40, n_sick: int = 40) -> pd.DataFrame:
    labels = ["normal"] * n_normal + ["bacterial"] * n_sick
    return pd.DataFrame({"label": labels, "binary": [int(label != "normal") for label in labels]})


def test_shift_table_flags_a_score_that_moves_with_acquisition():
    """A score whose normals rise under one shift loses specificity there (at the threshold of
    the unshifted normals) and its ROC AUC; a score that ignores the shift keeps both."""
    rows = _val_rows()
    rng = np.random.default_rng(0)
    y = rows["binary"].to_numpy()
    base = y + 0.3 * rng.normal(size=len(y))
    shifted = {shift.name: {"a/steady": base, "a/moving": base + (shift.kind == "gamma") * 2.0 * (y == 0)}
               for shift in SHIFTS}
    table = shift_table([("a", "steady"), ("a", "moving"), ("b", "missing")], shifted, rows, 0.95)
    assert len(table) == 2 * len(SHIFTS) and set(table["variant"]) == {"a"}
    gamma = table[table["shift"].str.contains("gamma")].set_index("score")
    assert (gamma.loc["moving", "specificity"] < 0.2).all() and (gamma.loc["steady", "specificity"] >= 0.9).all()
    summary = shift_summary(table).set_index("score")
    assert summary.loc["moving", "val_shift_roc_auc_worst"] < summary.loc["steady", "val_shift_roc_auc_worst"]
    assert "gamma" in summary.loc["moving", "val_shift_worst"]
    assert summary.loc["steady", "val_shift_specificity_mean"] > summary.loc["moving", "val_shift_specificity_mean"]
    # Only the normals shifted: clean pneumonia against the gamma-raised normals, which now outscore them.
    assert (gamma.loc["moving", "normals_roc_auc"] < 0.2).all()
    assert table.loc[table["shift"] == "none", "normals_roc_auc"].tolist() == pytest.approx(
        table.loc[table["shift"] == "none", "roc_auc"].tolist())
    assert summary.loc["moving", "val_shift_normals_roc_auc_worst"] < summary.loc["steady", "val_shift_normals_roc_auc_worst"]
    assert "gamma" in summary.loc["moving", "val_shift_normals_worst"]


def test_shifting_only_the_normals_sees_what_shifting_every_film_hides():
    """A score that a shift raises for every film keeps its ROC AUC when every film is shifted,
    but not when only the normals are, as a new machine's normal films would arrive."""
    rows = _val_rows()
    y = rows["binary"].to_numpy()
    base = y + 0.3 * np.random.default_rng(0).normal(size=len(y))
    shifted = {shift.name: {"a/global": base + (shift.kind == "gamma") * 2.0} for shift in SHIFTS}
    table = shift_table([("a", "global")], shifted, rows, 0.95)
    gamma = table[table["shift"].str.contains("gamma")]
    clean = table[table["shift"] == "none"]
    assert gamma["roc_auc"].tolist() == pytest.approx([clean["roc_auc"].iloc[0]] * 2)
    assert (gamma["normals_roc_auc"] < 0.1).all()


def test_selection_ranks_by_the_chosen_criterion():
    """plain: validation ROC AUC; shift: its mean over the shifted copies; normals: its mean with
    only the normals shifted (validation breaks ties)."""
    rows = _val_rows()
    y = rows["binary"].to_numpy()
    val = {"a/x": y + (0.1 * np.arange(len(y))) % 1.0, "b/x": y * 0.3 + 0.5 * (np.arange(len(y)) % 3 == 0)}
    pairs = [{"variant": "a", "score": "x"}, {"variant": "b", "score": "x"}, {"variant": "c", "score": "x"},
             {"variant": "d", "score": "x"}]
    summary = pd.DataFrame({"variant": ["a", "b", "d"], "score": ["x", "x", "x"],
                            "val_shift_roc_auc_mean": [0.7, 0.9, 0.8], "val_shift_normals_roc_auc_mean": [0.7, 0.6, 0.95]})
    plain = rank_on_validation(pairs, val, rows, summary, "plain")
    shift = rank_on_validation(pairs, val, rows, summary, "shift")
    normals = rank_on_validation(pairs, val, rows, summary, "normals")
    assert plain["val_roc_auc"].iloc[0] > plain["val_roc_auc"].iloc[1]
    assert list(plain["variant"][:2]) == ["a", "b"] and list(shift["variant"]) == ["b", "d", "a", "c"]
    assert list(normals["variant"]) == ["d", "a", "b", "c"]
    with pytest.raises(ValueError, match="selection must be one of"):
        rank_on_validation(pairs, val, rows, summary, "test")
    with pytest.raises(ValueError, match="needs the shift summary"):
        rank_on_validation(pairs, val, rows, None, "shift")


def test_jittered_copies_are_the_training_augmentation():
    """The normal reference's extra films: seeded, uint8, one batch of copies after the other."""
    rng = np.random.default_rng(0)
    images = rng.integers(40, 200, size=(5, 32, 32), dtype=np.uint8)
    copies = jittered_copies(images, 2, seed=1)
    assert copies.shape == (10, 32, 32) and copies.dtype == np.uint8
    assert np.array_equal(copies, jittered_copies(images, 2, seed=1))
    assert not np.array_equal(copies[:5], images) and not np.array_equal(copies[:5], copies[5:])
    assert jittered_copies(images, 0, seed=1).shape == (0, 32, 32)


def test_normal_images_keeps_only_normals(task_phantoms, task_cache):
    data = load_dataset(str(task_phantoms), resolution=64, cache_dir=task_cache, num_workers=1)
    images, rows = data.subset("train")
    kept, kept_rows = normal_images(images, rows)
    assert len(kept) == (rows["label"] == "normal").sum() > 0
    assert set(kept_rows["label"]) == {"normal"}


def test_xrv_autoencoder_is_looked_up_offline_only():
    path = xrv_autoencoder_path()
    assert path.name.endswith(".pt") and "models_data" in str(path)


# -- the task end to end ----------------------------------------------------------------------
def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_no_pneumonia_image_reaches_the_training_loader(task_phantoms, tmp_path, monkeypatch, one_thread):
    """Spy on every call of the training loop: its images are exactly the normal train (and,
    for early stopping, normal validation) images; no pneumonia image is among them."""
    import pneumo.anomaly.task as task  # where run_anomaly looks train_autoencoder up

    calls = []
    real = task.train_autoencoder

    def spy(model, train_images, val_images, **kwargs):
        calls.append((train_images.copy(), val_images.copy()))
        return real(model, train_images, val_images, **kwargs)

    monkeypatch.setattr(task, "train_autoencoder", spy)
    config = AnomalyConfig.create("smoke", data=str(task_phantoms), cache=str(tmp_path), device="cpu",
                                  grid="none", epochs=1, bootstrap=20, num_workers=1)
    entry = run_anomaly(config)
    assert len(calls) == len(ae_variants(config)) == 1

    data = load_dataset(str(task_phantoms), resolution=config.decode_resolution, cache_dir=tmp_path,
                        num_workers=1)
    small = normalise_intensity(shrink(data.images, config.resolution), config.intensity)
    label, split = data.table["label"].to_numpy(), data.table["split"].to_numpy()
    digests = np.array([_digest(im) for im in small])
    sick = set(digests[label != "normal"])
    for train_images, val_images in calls:
        got_train = [_digest(im) for im in train_images]
        got_val = [_digest(im) for im in val_images]
        assert not sick & set(got_train) and not sick & set(got_val)
        assert sorted(got_train) == sorted(digests[(label == "normal") & (split == "train")])
        assert sorted(got_val) == sorted(digests[(label == "normal") & (split == "val")])
    trained_on = entry.table("training_images")
    assert set(trained_on["label"]) == {"normal"} and set(trained_on["split"]) == {"train"}


def test_anomaly_through_papermill(anomaly_entry):
    assert anomaly_entry.exists
    assert (anomaly_entry.path / "notebook.ipynb").is_file()
    metrics = anomaly_entry.metrics
    assert metrics["data_synthetic"] is True
    for key in ("test_roc_auc", "test_pr_auc", "test_sensitivity", "test_specificity",
                "test_roc_auc_bacterial", "test_roc_auc_viral", "threshold", "train_seconds"):
        assert key in metrics, key
    variants = anomaly_entry.table("variants")
    config = AnomalyConfig.create("smoke")
    trained = variants[variants["status"] == "trained"]
    assert set(zip(trained["variant"], trained["score"])) == {
        (name, score) for name, _ in ae_variants(config) for score in SCORES}
    assert set(anomaly_entry.table("test_metrics")["comparison"]) == set(COMPARISONS)
    saved = anomaly_entry.load_model()  # weights_only=True
    model = build_autoencoder(saved["config"])
    model.load_state_dict(saved["state_dict"])
    assert saved["config"]["variant"] == metrics["chosen_variant"]


def test_choice_and_threshold_come_from_validation(anomaly_entry):
    metrics = anomaly_entry.metrics
    variants = anomaly_entry.table("variants")
    scores = anomaly_entry.table("scores")
    column = f"{metrics['chosen_variant']}/{metrics['chosen_score']}"
    # Every pair was scored on every shifted copy of validation; the unshifted row is validation
    # itself, recomputed from the stored scores.
    val = scores[scores["split"] == "val"]
    aucs = {f"{v}/{s}": binary_metrics(val["binary"], val[f"{v}/{s}"])["roc_auc"]
            for v, s in zip(variants["variant"], variants["score"]) if f"{v}/{s}" in val}
    shifts = anomaly_entry.table("val_shifts")
    assert len(shifts) == len(aucs) * len(SHIFTS)
    clean = shifts[shifts["shift"] == "none"]
    assert dict(zip(clean["variant"] + "/" + clean["score"], clean["roc_auc"])) == pytest.approx(aucs)
    # The default selection: the pair with the best mean ROC AUC over the copies with the normals shifted.
    assert metrics["selection"] == "normals"
    pair = shifts["variant"] + "/" + shifts["score"]
    means = shifts[shifts["shift"] != "none"].groupby(pair)["normals_roc_auc"].mean()
    assert means[column] == pytest.approx(means.max())
    assert metrics["val_shift_normals_roc_auc_mean"] == pytest.approx(means.max())
    every_film = shifts[shifts["shift"] != "none"].groupby(pair)["roc_auc"].mean()
    assert metrics["val_shift_roc_auc_mean"] == pytest.approx(every_film[column])
    assert variants.iloc[0]["variant"] == metrics["chosen_variant"]
    # The threshold is the quantile of the VALIDATION normals' scores, not of any test scores.
    val_normals = val.loc[val["label"] == "normal", column].to_numpy()
    assert metrics["threshold"] == pytest.approx(np.quantile(val_normals, metrics["threshold_quantile"]))
    test_normals = scores.loc[(scores["split"] == "test") & (scores["label"] == "normal"), column]
    assert metrics["threshold"] != pytest.approx(np.quantile(test_normals, metrics["threshold_quantile"]))


def test_sick_phantoms_score_higher(anomaly_entry):
    """Score direction end to end: on test phantoms the chosen score ranks the consolidations of
    bacterial phantoms above normal phantoms. (The diffuse texture of viral phantoms is a much
    subtler change at the smoke profile's 32 pixels, so it is not asserted.)"""
    metrics = anomaly_entry.metrics
    assert metrics["test_roc_auc_bacterial"] > 0.65, metrics
    scores = anomaly_entry.table("scores")
    column = f"{metrics['chosen_variant']}/{metrics['chosen_score']}"
    test = scores[scores["split"] == "test"]
    assert test.loc[test["label"] == "bacterial", column].median() > test.loc[test["label"] == "normal", column].median()


def test_cache_lookup_does_not_compute(anomaly_entry, task_phantoms, task_cache):
    config = AnomalyConfig.create("smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu",
                                  num_workers=1)
    assert run_anomaly(config, compute=False).path == anomaly_entry.path
    assert not run_anomaly(config.replace(latent=9), compute=False).exists


def test_figures_fit_the_page(anomaly_entry):
    from pneumo.plots import MAX_WIDTH
    from pneumo.plots import anomaly as aplots

    m = anomaly_entry.metrics
    scores, history = anomaly_entry.table("scores"), anomaly_entry.table("history")
    arrays, examples = anomaly_entry.arrays(), anomaly_entry.table("examples")
    column = f"{m['chosen_variant']}/{m['chosen_score']}"
    names = [name for name, _ in ae_variants(AnomalyConfig.create("smoke"))]
    figures = [
        aplots.score_histograms(scores, column, m["threshold"]),
        aplots.variant_roc_curves(scores, names, list(SCORES), chosen=column),
        aplots.reconstruction_examples(arrays["example_input"], arrays["example_reconstruction"],
                                       arrays["example_residual"], list(examples["label"])),
        aplots.ae_training_curves(history),
    ]
    for fig in figures:
        width, height = fig.get_size_inches()
        assert width <= MAX_WIDTH + 1e-6 and height <= 9
        fig.canvas.draw() if hasattr(fig.canvas, "draw") else None


def test_report_section_executes(anomaly_entry, task_phantoms, task_cache, tmp_path):
    """The report's Task 3 cells and inline expressions run on the phantom results."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import qmd

    document = tmp_path / "anomaly.qmd"  # the section on its own: nothing from the rest of the report
    document.write_text("---\ntitle: t\njupyter: python3\n---\n\n{{< include /report/_anomaly.qmd >}}\n")
    nb = qmd.run(document, cwd=REPO_ROOT, timeout=900,
                 env={"PNEUMO_PROFILE": "smoke", "PNEUMO_DATA": str(task_phantoms),
                      "PNEUMO_CACHE": str(task_cache)})
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)
    figures = [c for c in code if c.metadata.get("qmd", {}).get("label", "").startswith("fig-anomaly")]
    assert len(figures) == 4
    for cell in figures:
        assert sum("image/png" in o.get("data", {}) for o in cell.get("outputs", [])) == 1


def test_autoencoders_in_two_workers_make_the_entry_one_worker_finds(task_phantoms, tmp_path):
    """train_workers trains the variants in worker processes; it is not part of the key, and
    the pair chosen and its figures come from the same scoring as in one process."""
    config = AnomalyConfig.create("smoke", data=str(task_phantoms), cache=str(tmp_path), device="cpu",
                                  grid="reduced", epochs=1, bootstrap=20, num_workers=1, train_workers=2)
    entry = run_anomaly(config)
    assert run_anomaly(config.replace(train_workers=1), compute=False).path == entry.path
    histories = entry.table("history")
    assert set(histories["variant"]) == {name for name, _ in ae_variants(config)}
    assert (histories.groupby("variant")["epoch"].max() == 1).all()
