"""Task 4 (explanations): methods on small networks and phantoms, the task end to end, its report section.

Unit tests use a small randomly initialised VGG; the tests that need a network that has
learned something use the smoke Task 1 networks of the session cache (shared with the Task 1
tests) and phantoms whose lesion and lung masks are known.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pneumo.data import render_phantom
from pneumo.explain import ExplainConfig, choose_images, run_explain
from pneumo.metrics import mean_ci
from pneumo.explain.attribution import GradCAM, ShapGradient, attribute_all, block_layers, integrated_gradients
from pneumo.explain.lungs import LungTemplate, region_shares
from pneumo.explain.neurons import (
    activation_maximisation,
    channel_statistics,
    class_separating_channels,
    receptive_fields,
    top_patches,
)
from pneumo.explain.sanity import (
    curve_auc,
    perturbation_curves,
    randomisation_stages,
    randomised_copy,
    rank_correlation,
)
from pneumo.models.vgg import VGGNet
from pneumo.runner import run_task
from pneumo.imaging import BLACK, to_model_input

import qmd
from conftest import REPO_ROOT


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture
def small_model(one_thread):
    torch.manual_seed(0)
    model = VGGNet(num_classes=3, width=4, depth=3, convs_per_block=1, dropout=0.3).eval()
    # Non-trivial BatchNorm statistics, as in a trained network.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _batch(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return to_model_input(torch.as_tensor(rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8)))


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def _phantoms(label: str, n: int, size: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    return [render_phantom(label, rng, size) for _ in range(n)]


# -- methods on a small network -----------------------------------------------------------------
def test_attributions_have_the_input_shape_and_are_finite(small_model):
    x = _batch()
    shap = ShapGradient(nsamples=4, batch_size=4, random_state=0).fit(small_model, _batch(4, seed=1))
    maps = attribute_all(small_model, x, [0, 1, 2], ig_steps=4, shap=shap,
                         methods=("gradcam_blocks", "integrated_gradients", "shap"))
    assert set(maps) == {"gradcam", "gradcam_block1", "gradcam_block2", "gradcam_block3",
                         "integrated_gradients", "shap"}
    for name, m in maps.items():
        assert m.shape == (3, 32, 32), name
        assert torch.isfinite(m).all(), name
    assert (maps["gradcam"] >= 0).all()
    assert torch.equal(maps["gradcam"], maps["gradcam_block3"])  # "gradcam" is the last block
    assert maps["integrated_gradients"].abs().sum() > 0 and maps["shap"].abs().sum() > 0


def test_integrated_gradients_are_complete(small_model):
    """IG sums to f(x) - f(black) up to the Riemann error (completeness)."""
    x, target = _batch(2), torch.tensor([1, 2])
    ig = integrated_gradients(small_model, x, target, steps=128)
    with torch.no_grad():
        gap = (small_model(x) - small_model(torch.full_like(x, BLACK)))[torch.arange(2), target]
    assert torch.allclose(ig.sum((1, 2)), gap, rtol=0.05, atol=1e-3)


def test_explanations_leave_model_and_input_unchanged_and_remove_hooks(small_model):
    model = small_model.train()  # a model in training mode must come back in training mode
    before = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    x = _batch()
    x_before = x.clone()
    shap = ShapGradient(nsamples=4, batch_size=4).fit(model, _batch(4, seed=1))
    attribute_all(model, x, 1, ig_steps=4, shap=shap, methods=("gradcam_blocks", "integrated_gradients", "shap"))
    activation_maximisation(model, "block2", [0, 1], size=32, steps=3)
    channel_statistics(model, np.zeros((2, 32, 32), np.uint8), device=torch.device("cpu"))
    perturbation_curves(model, x[:1], 0, np.ones((32, 32)), x[1:2], steps=2)
    assert torch.equal(x, x_before)
    assert [m.training for m in model.modules()] == flags
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert _hooks(model) == 0


def test_gradcam_hooks_go_even_after_an_error(small_model):
    with pytest.raises(RuntimeError, match="boom"):
        with GradCAM(small_model) as cam:
            assert _hooks(small_model) == len(block_layers(small_model))
            cam(_batch(1), 0)
            raise RuntimeError("boom")
    assert _hooks(small_model) == 0
    with pytest.raises(RuntimeError, match="context manager"):
        GradCAM(small_model)(_batch(1), 0)


def test_randomised_copy_changes_the_copy_only(small_model):
    stages = randomisation_stages(small_model)
    assert stages == ["head", "block3", "block2", "block1"]
    before = copy.deepcopy(small_model.state_dict())
    head_only = randomised_copy(small_model, 1, random_state=1)
    everything = randomised_copy(small_model, len(stages), random_state=1)
    assert all(torch.equal(v, small_model.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(head_only.head.fc.weight, small_model.head.fc.weight)
    assert torch.equal(head_only.blocks.block1.conv1.weight, small_model.blocks.block1.conv1.weight)
    assert not torch.equal(everything.blocks.block1.conv1.weight, small_model.blocks.block1.conv1.weight)


def test_rank_correlation_and_curve_area():
    rng = np.random.default_rng(0)
    a = rng.random((2, 8, 8))
    assert np.allclose(rank_correlation(a, 2 * a + 1), 1)
    assert np.allclose(rank_correlation(a, -a), 1)  # absolute maps
    assert rank_correlation(a, np.zeros_like(a))[0] == 0  # a constant map shares no ranking
    assert np.allclose(curve_auc(np.array([[1, 1, 1], [0, 0.5, 1]])), [1.0, 0.5])


def test_mean_ci_resamples_patients():
    values = np.array([0.0, 0.0, 1.0, 1.0])
    mean, low, high = mean_ci(values, ["a", "a", "b", "b"], n_boot=500, seed=0)
    assert mean == 0.5 and low == 0.0 and high == 1.0  # two patients: all or nothing
    values = np.repeat([0.0, 1.0], 5)
    mean, low, high = mean_ci(values, list("abcdefghij"), n_boot=500, seed=0)
    assert mean == 0.5 and 0 < low < 0.5 < high < 1


def test_neuron_helpers(small_model):
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32), dtype=np.uint8)
    stats = channel_statistics(small_model, images, device=torch.device("cpu"))
    assert list(stats) == ["block1", "block2", "block3"]
    assert stats["block2"]["max"].shape == (6, 8)
    fields = receptive_fields(small_model)
    assert fields["block1"] == (3, 1) and fields["block2"] == (8, 2)  # 1 conv per block
    patches, index = top_patches(images, stats["block2"], 0, grid=16, field=8, stride=2, k=3)
    assert patches.shape == (3, 8, 8) and patches.dtype == np.uint8
    assert stats["block2"]["max"][index[0], 0] == stats["block2"]["max"][:, 0].max()
    vis = activation_maximisation(small_model, "block3", [0, 3], size=32, steps=4, random_state=0)
    assert vis.shape == (2, 32, 32) and vis.dtype == np.uint8
    assert np.array_equal(vis, activation_maximisation(small_model, "block3", [0, 3], size=32, steps=4,
                                                       random_state=0))  # fixed seed, same image
    features = np.concatenate([np.eye(3)[[0] * 5 + [1] * 5 + [2] * 5] * 2, np.ones((15, 1))], 1)
    features += np.random.default_rng(1).normal(0, 0.1, features.shape)
    table = class_separating_channels(features, np.repeat([0, 1, 2], 5), ["normal", "bacterial", "viral"], k=1)
    assert table.set_index("class")["channel"].to_dict() == {"normal": 0, "bacterial": 1, "viral": 2}


# -- lungs ---------------------------------------------------------------------------------------
def test_lung_template_overlaps_phantom_lungs():
    phantoms = [p for label in ("normal", "bacterial", "viral") for p in _phantoms(label, 15, 128)]
    images = np.stack([p["image"] for p in phantoms])
    lungs = np.stack([p["lungs"] for p in phantoms])
    template = LungTemplate().fit(images)
    assert template.iou(lungs).mean() > 0.5
    regions = template.regions()
    assert not (regions["lungs"] & regions["border"]).any()
    assert (regions["lungs"] | regions["border"] | regions["other"]).all()
    left, right = template.mask_[:, :64].sum(), template.mask_[:, 64:].sum()
    assert left > 0 and right > 0  # both lungs
    maps = np.random.default_rng(0).normal(size=(4, 128, 128))
    shares = region_shares(maps, regions)
    assert np.allclose(sum(shares.values()), 1)


# -- with networks trained on phantoms ----------------------------------------------------------
@pytest.fixture(scope="session")
def explain_entry(task_phantoms, task_cache):
    """Task 4 through papermill on the smoke profile (Task 1 computed first when missing)."""
    torch.set_num_threads(1)
    return run_task("explain", "smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu")


@pytest.fixture(scope="session")
def smoke_networks(explain_entry, task_phantoms, task_cache):
    from pneumo.upstream import classifier_entries, load_classifier

    entries = classifier_entries("smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu",
                                 compute=False)
    return {name: load_classifier(entry, "cpu") for name, entry in entries.items()}


def _bacterial_batch(size: int, n: int = 12):
    phantoms = [p for p in _phantoms("bacterial", 3 * n, size, seed=5) if p["lesion"].mean() > 0.01][:n]
    images = np.stack([p["image"] for p in phantoms])
    return phantoms, images, to_model_input(torch.as_tensor(images))


def test_gradcam_mass_falls_on_the_consolidation(smoke_networks, one_thread):
    """Bacterial phantoms: Grad-CAM of "bacterial" peaks on the consolidation, and of its mass inside
    the lungs most lies on it (widened by one cell of the last block's grid: the map cannot be
    sharper than that)."""
    from scipy import ndimage

    model, config = smoke_networks["multiclass"]
    phantoms, _, x = _bacterial_batch(int(config["resolution"]))
    with GradCAM(model) as cam:
        maps = cam(x, 1)["block%d" % config["depth"]].numpy()  # class 1: bacterial
    cell = 2 ** (config["depth"] - 1)  # input pixels per cell of the last block's grid
    on_lesion, peak_on_lesion, enrichment = [], [], []
    for p, m in zip(phantoms, maps):
        near = ndimage.binary_dilation(p["lesion"], iterations=cell)
        rest_of_lungs = p["lungs"] & ~near
        on_lesion.append(m[near].sum() / (m[near].sum() + m[rest_of_lungs].sum()))
        peak_on_lesion.append(near[np.unravel_index(m.argmax(), m.shape)])
        enrichment.append((m[near].sum() / m.sum()) / near.mean())
    assert np.mean(on_lesion) > 0.55, on_lesion
    assert np.mean(peak_on_lesion) >= 0.7, peak_on_lesion
    assert np.mean(enrichment) > 2.5, enrichment


def test_randomised_network_maps_differ(smoke_networks, one_thread):
    model, config = smoke_networks["multiclass"]
    _, _, x = _bacterial_batch(int(config["resolution"]), n=4)
    random = randomised_copy(model, len(randomisation_stages(model)), random_state=3)
    for method in ("gradcam", "integrated_gradients"):
        trained = attribute_all(model, x, 1, ig_steps=8, shap=None, methods=(method,))[method].numpy()
        other = attribute_all(random, x, 1, ig_steps=8, shap=None, methods=(method,))[method].numpy()
        assert rank_correlation(trained, other).mean() < 0.8, method


def test_deletion_of_gradcam_pixels_beats_random(smoke_networks, one_thread):
    # Network 1a (class 1: pneumonia): the smoke profile's 1b is fine-tuned for a few epochs
    # only, too little for its maps to localise reliably on the phantoms.
    model, config = smoke_networks["binary"]
    _, images, x = _bacterial_batch(int(config["resolution"]))
    reference = to_model_input(torch.as_tensor(np.rint(images.mean(0)).astype(np.uint8)[None]))
    with GradCAM(model) as cam:
        maps = cam(x, 1)["block%d" % config["depth"]].numpy()
    method, random = [], []
    for i in range(len(x)):
        method.append(curve_auc(perturbation_curves(model, x[i:i + 1], 1, maps[i], reference, steps=8)["deletion"]))
        random.append(curve_auc(perturbation_curves(model, x[i:i + 1], 1, None, reference, steps=8,
                                                    random_state=i)["deletion"]))
    # Paired, image by image: the smoke network's probabilities sit near 1 for these phantoms
    # (trained with border masking it is more confident there), so both curves stay high and
    # a fixed margin on their means says less than the order on every image.
    method, random = np.ravel(method), np.ravel(random)
    assert (method < random).all() and np.mean(random - method) > 0.02, (method, random)


def test_task_entry_is_complete_and_cached(explain_entry, task_phantoms, task_cache):
    entry = explain_entry
    assert entry.exists and (entry.path / "notebook.ipynb").is_file()
    metrics = entry.metrics
    assert metrics["data_synthetic"] is True and metrics["images"] >= 3
    images = entry.table("images")
    assert set(images["outcome"]) <= {"correct", "misclassified"} and images["relpath"].is_unique
    methods = entry.table("methods")
    assert set(methods["method"]) == {"gradcam", "integrated_gradients", "shap", "random"}
    assert methods[methods["method"] != "random"]["rho_all"].between(-1, 1).all()
    regions = entry.table("regions")
    assert np.allclose(regions[["lungs", "border", "other"]].sum(1), 1)
    arrays = entry.arrays()
    n, size = metrics["images"], metrics["resolution"]
    for net in ("binary", "multiclass"):
        for method in ("gradcam", "integrated_gradients", "shap"):
            assert arrays[f"{net}_{method}"].shape == (n, size, size)
            assert np.isfinite(arrays[f"{net}_{method}"]).all()
    assert {"filters", "class_channel_patches"} <= set(arrays)
    # A lookup finds the same entry; a changed parameter misses it.
    config = ExplainConfig.create("smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu")
    assert run_explain(config, compute=False).path == entry.path
    assert not run_explain(config.replace(seed=9), compute=False).exists


def test_chosen_images_cover_classes_and_outcomes(explain_entry, task_phantoms, task_cache):
    from pneumo.upstream import classifier_entries

    entries = classifier_entries("smoke", data=str(task_phantoms), cache=str(task_cache), compute=False)
    predictions = entries["multiclass"].table("predictions")
    chosen = choose_images(predictions, 2, seed=0)
    assert chosen.equals(choose_images(predictions, 2, seed=0))
    test = predictions[predictions["split"] == "test"]
    assert set(chosen["relpath"]) <= set(test["relpath"])
    assert chosen["patient"].is_unique
    for (label, outcome), group in chosen.groupby(["label", "outcome"]):
        rows = test[(test["label"] == label)]
        rows = rows[(rows["target"] == rows["predicted"]) == (outcome == "correct")]
        assert set(group["relpath"]) <= set(rows["relpath"])
        assert 1 <= len(group) <= 2


def test_report_section_executes(explain_entry, task_phantoms, task_cache, tmp_path):
    """The section runs on its own (nothing from the rest of the report), one output per figure/table."""
    document = tmp_path / "explain.qmd"
    document.write_text("---\ntitle: t\n---\n\n{{< include /report/_explain.qmd >}}\n")
    nb = qmd.run(document, cwd=REPO_ROOT, timeout=900,
                 env={"PNEUMO_PROFILE": "smoke", "PNEUMO_DATA": str(task_phantoms), "PNEUMO_CACHE": str(task_cache)})
    cells = {c.metadata["qmd"]["label"]: c for c in nb.cells
             if c.cell_type == "code" and c.metadata.get("qmd", {}).get("label", "").startswith(("fig-", "tbl-"))}
    assert len([k for k in cells if k.startswith("fig-")]) >= 10
    for label, cell in cells.items():
        kind = "image/png" if label.startswith("fig-") else "text/markdown"
        shown = [o for o in cell.outputs if kind in o.get("data", {})]
        assert len(shown) == 1, label
