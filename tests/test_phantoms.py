"""Tests of the synthetic phantom generator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import PHANTOM_KWARGS
from pneumo.data import CLASSES, make_phantoms, parse_label, parse_patient, render_phantom, scan_folder
from pneumo.data.phantom_render import draw_anatomy
from pneumo.data.phantoms import MARKER_NAME, is_phantom_folder


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("label", CLASSES)
def test_render_phantom_well_formed(label):
    out = render_phantom(label, np.random.default_rng(0), size=128)
    assert set(out) >= {"image", "lesion", "lungs", "label", "severity"}
    image, lesion, lungs = out["image"], out["lesion"], out["lungs"]
    assert image.shape == lesion.shape == lungs.shape == (128, 128)
    assert image.dtype == np.uint8 and lesion.dtype == bool and lungs.dtype == bool
    assert out["label"] == label
    # Two lung fields, one each side of the midline, covering a plausible area.
    assert 0.12 < lungs.mean() < 0.45
    assert lungs[:, :64].sum() > 0.3 * lungs.sum() and lungs[:, 64:].sum() > 0.3 * lungs.sum()
    # Radiograph convention: lungs (air) darker than the mediastinum and the abdomen.
    mediastinum = image[40:80, 60:68].mean()
    abdomen = image[118:126, 40:88].mean()
    assert image[lungs].mean() < mediastinum - 10 and image[lungs].mean() < abdomen - 10
    # Dark background in the corners (outside the body), besides the side marker.
    corners = np.concatenate([image[:6, :6].ravel(), image[:6, -6:].ravel()])
    assert np.median(corners) < 60
    if label == "normal":
        assert not lesion.any() and out["severity"] == 0.0
    else:
        assert lesion.any() and out["severity"] > 0
        # Pathology lies in the lungs.
        assert (lesion & lungs).sum() > 0.6 * lesion.sum()


def test_bacterial_is_unilateral_viral_is_bilateral():
    for seed in range(8):
        bac = render_phantom("bacterial", np.random.default_rng(seed), size=64)["lesion"]
        vir = render_phantom("viral", np.random.default_rng(seed), size=64)["lesion"]
        left, right = bac[:, :32].sum(), bac[:, 32:].sum()
        assert min(left, right) < 0.15 * max(left, right)
        assert vir[:, :32].any() and vir[:, 32:].any()


def test_render_phantom_deterministic():
    a = render_phantom("viral", np.random.default_rng(42), size=96)
    b = render_phantom("viral", np.random.default_rng(42), size=96)
    c = render_phantom("viral", np.random.default_rng(43), size=96)
    for key in ("image", "lesion", "lungs"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])


def test_same_anatomy_looks_like_one_patient():
    anatomy = draw_anatomy(np.random.default_rng(5))
    a = render_phantom("normal", np.random.default_rng(1), size=64, anatomy=anatomy)
    b = render_phantom("normal", np.random.default_rng(2), size=64, anatomy=anatomy)
    assert not np.array_equal(a["image"], b["image"])  # pose/exposure differ
    assert draw_anatomy(np.random.default_rng(5)) == anatomy
    # Lung area differs only by pose scale (at most ~1.5x), not by anatomy.
    assert 0.6 < a["lungs"].sum() / b["lungs"].sum() < 1.6


def test_render_phantom_bad_label():
    with pytest.raises(ValueError, match="unknown label"):
        render_phantom("covid", np.random.default_rng(0))


def test_pathology_raises_lung_density_on_average():
    # Means over 16 images per class at 64 px: pneumonia lungs are brighter than normal ones
    # on average, but the distributions overlap (the task is not trivial).
    means = {}
    for label in CLASSES:
        values = []
        for i in range(16):
            out = render_phantom(label, np.random.default_rng([11, i]), size=64)
            lungs = out["lungs"]
            values.append(out["image"][lungs].mean() - out["image"][~lungs].mean())
        means[label] = np.array(values)
    assert means["bacterial"].mean() > means["normal"].mean()
    assert means["viral"].mean() > means["normal"].mean()
    assert means["normal"].max() > min(means["bacterial"].min(), means["viral"].min())


def test_phantom_folder_layout(phantom_root):
    assert phantom_root.name == "chest_xray" and is_phantom_folder(phantom_root)
    marker = json.loads((phantom_root / MARKER_NAME).read_text())
    assert marker["n_per_class"] == list(PHANTOM_KWARGS["n_per_class"])
    table, skipped = scan_folder(phantom_root)
    assert skipped == []
    assert table.groupby("label").size().to_dict() == dict(zip(CLASSES, PHANTOM_KWARGS["n_per_class"]))
    # Each patient in one folder; several images for some patients; both normal name forms.
    assert table.groupby("patient")["kaggle_split"].nunique().max() == 1
    assert table.groupby("patient").size().max() >= 2
    names = table["relpath"].map(lambda r: Path(r).name)
    assert names.str.match(r"^IM-\d{4}-\d{4}\.png$").any()
    assert names.str.match(r"^NORMAL2-IM-\d{4}-\d{4}\.png$").any()
    assert names.str.match(r"^person\d+_bacteria_\d+\.png$").any()
    assert names.str.match(r"^person\d+_virus_\d+\.png$").any()
    for rel in table["relpath"]:
        parse_label(rel), parse_patient(rel)
    # test ~15 % of each class; val a handful; both present for every class.
    per = table.groupby(["label", "kaggle_split"]).size().unstack(fill_value=0)
    assert (per["test"] >= 0.15 * per.sum(axis=1) - 0.5).all() and (per["test"] <= 0.3 * per.sum(axis=1)).all()
    assert (per["val"] >= 1).all() and per["val"].sum() <= 0.2 * len(table)


def test_make_phantoms_deterministic_and_idempotent(tmp_path):
    kwargs = dict(n_per_class=(6, 6, 6), size=48, seed=1, num_workers=1)
    a = make_phantoms(tmp_path / "a", **kwargs)
    b = make_phantoms(tmp_path / "b", **kwargs)
    assert a == tmp_path / "a" / "chest_xray"
    assert _files(a) == _files(b)  # byte-identical
    assert _files(make_phantoms(tmp_path / "c", **{**kwargs, "seed": 2})) != _files(a)

    # A second call reuses the complete folder without rewriting anything.
    mtimes = {p: p.stat().st_mtime_ns for p in a.rglob("*")}
    assert make_phantoms(tmp_path / "a", **kwargs) == a
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*")} == mtimes

    # Other parameters replace the folder; no temporary folders are left behind.
    make_phantoms(tmp_path / "a", **{**kwargs, "n_per_class": (5, 5, 5)})
    assert len(scan_folder(a)[0]) == 15
    assert sorted(os.listdir(tmp_path / "a")) == [".chest_xray.lock", "chest_xray"]


def test_make_phantoms_called_at_once_generates_once(tmp_path, caplog):
    """Two tasks started together (the report runs some concurrently) share one folder."""
    import concurrent.futures
    import logging

    kwargs = dict(n_per_class=(4, 4, 4), size=48, seed=3, num_workers=1)
    with caplog.at_level(logging.INFO, logger="pneumo.data.phantoms"):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            folders = list(pool.map(lambda _: make_phantoms(tmp_path, **kwargs), range(2)))
    assert folders[0] == folders[1] == tmp_path / "chest_xray"
    assert len(scan_folder(folders[0])[0]) == 12
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("wrote") for m in messages) == 1
    assert sum(m.startswith("reusing") for m in messages) == 1


def test_make_phantoms_parallel_matches_serial(tmp_path):
    kwargs = dict(n_per_class=(24, 24, 24), size=48, seed=4)
    serial = make_phantoms(tmp_path / "s", num_workers=1, **kwargs)
    parallel = make_phantoms(tmp_path / "p", num_workers=2, **kwargs)
    assert _files(serial) == _files(parallel)


def test_make_phantoms_refuses_foreign_folder(tmp_path):
    (tmp_path / "chest_xray" / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a phantom folder"):
        make_phantoms(tmp_path, n_per_class=(3, 3, 3), size=48)


def test_make_phantoms_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_per_class"):
        make_phantoms(tmp_path, n_per_class=(3, 3))
    with pytest.raises(ValueError, match="size"):
        make_phantoms(tmp_path, size=8)
