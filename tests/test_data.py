"""Tests of the data layer: parsing, scanning, bad inputs, decoding, cache, splits."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import pneumo.data.dataset as dataset_mod
import pneumo.data.decode as decode_mod
from conftest import requires_real_data
from pneumo.data import (
    BINARY_CLASSES,
    CLASSES,
    DataLayoutError,
    XrayDataset,
    load_dataset,
    locate_data,
    make_phantoms,
    parse_label,
    parse_patient,
    scan_folder,
)
from pneumo.data.decode import decode_bytes
from pneumo.data.splits import assign_splits


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def _png_sources(phantom_root: Path) -> list[Path]:
    """Distinct phantom PNG files to copy under arbitrary names."""
    return sorted(phantom_root.rglob("*.png"))


def _build(root: Path, files: dict[str, bytes | Path]) -> Path:
    """Write ``relpath -> bytes`` (or a file to copy) under ``root``; return ``root``."""
    for rel, src in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(src.read_bytes() if isinstance(src, Path) else src)
    return root


def _minimal(root: Path, src: list[Path], *, val: bool = True) -> Path:
    """A small valid layout: 4 normal, 4 bacterial, 4 viral in train; 2 + 2 + 2 in test."""
    files: dict[str, Path] = {}
    it = iter(src)
    for i in range(4):
        files[f"train/NORMAL/IM-{i + 1:04d}-0001.png"] = next(it)
        files[f"train/PNEUMONIA/person{i + 1}_bacteria_{i + 1}.png"] = next(it)
        files[f"train/PNEUMONIA/person{i + 11}_virus_{i + 1}.png"] = next(it)
    for i in range(2):
        files[f"test/NORMAL/IM-{i + 101:04d}-0001.png"] = next(it)
        files[f"test/PNEUMONIA/person{i + 101}_bacteria_{i + 9}.png"] = next(it)
        files[f"test/PNEUMONIA/person{i + 111}_virus_{i + 9}.png"] = next(it)
    if val:
        files["val/NORMAL/IM-0201-0001.png"] = next(it)
        files["val/PNEUMONIA/person201_bacteria_20.png"] = next(it)
    return _build(root, files)


def _jpeg_bytes(src: Path, **kw) -> bytes:
    buf = io.BytesIO()
    Image.open(src).convert("L").save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """relpath -> (size, mtime_ns) of every file and folder under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            stat = path.stat()
            out[path.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    out["."] = (0, root.stat().st_mtime_ns)
    return out


def _assert_no_leak(table: pd.DataFrame) -> None:
    for column in ("patient", "group", "sha1"):
        assert (table.groupby(column)["split"].nunique() == 1).all(), column


# ---------------------------------------------------------------------------------------
# Labels and patients
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, label",
    [
        ("train/NORMAL/IM-0115-0001.jpeg", "normal"),
        ("NORMAL/NORMAL2-IM-0381-0001.jpeg", "normal"),
        ("test/normal/im-0115-0001.JPEG", "normal"),
        ("Normal/NORMAL2-IM-0587-0001-0002.jpg", "normal"),
        ("PNEUMONIA/person1_bacteria_1.jpeg", "bacterial"),
        ("/abs/chest_xray/train/PNEUMONIA/person10_virus_35.jpeg", "viral"),
        ("pneumonia/Person10_VIRUS_35.JPG", "viral"),
        ("Pneumonia/PERSON3_BACTERIA_10.png", "bacterial"),
        (Path("val/PNEUMONIA/person1946_bacteria_4874.jpeg"), "bacterial"),
    ],
)
def test_parse_label(path, label):
    assert parse_label(path) == label


@pytest.mark.parametrize(
    "path",
    [
        "PNEUMONIA/person1_1.jpeg",  # neither word
        "PNEUMONIA/person1_bacteria_virus_1.jpeg",  # both words
        "OTHER/person1_bacteria_1.jpeg",  # unknown folder
        "person1_bacteria_1.jpeg",  # no folder
    ],
)
def test_parse_label_errors_name_the_file(path):
    with pytest.raises(ValueError, match=Path(path).name):
        parse_label(path)


@pytest.mark.parametrize(
    "path, patient",
    [
        ("PNEUMONIA/person1_bacteria_1.jpeg", "person1"),
        ("PNEUMONIA/person10_virus_35.jpeg", "person10"),
        ("pneumonia/Person1946_BACTERIA_4874.JPEG", "person1946"),
        ("NORMAL/IM-0115-0001.jpeg", "IM-0115"),
        ("normal/im-0115-0001.jpeg", "IM-0115"),
        ("NORMAL/NORMAL2-IM-0381-0001.jpeg", "NORMAL2-IM-0381"),
        ("NORMAL/normal2-im-0381-0001.JPEG", "NORMAL2-IM-0381"),
        ("NORMAL/NORMAL2-IM-0587-0001-0002.jpeg", "NORMAL2-IM-0587"),
        ("IM-0001-0001.png", "IM-0001"),
    ],
)
def test_parse_patient(path, patient):
    assert parse_patient(path) == patient


def test_parse_patient_error_names_the_file():
    with pytest.raises(ValueError, match="scan_0001.jpeg"):
        parse_patient("NORMAL/scan_0001.jpeg")


def test_class_constants():
    assert CLASSES == ("normal", "bacterial", "viral")
    assert BINARY_CLASSES == ("normal", "pneumonia")


# ---------------------------------------------------------------------------------------
# Scanning and layout errors
# ---------------------------------------------------------------------------------------
def test_scan_phantoms(phantom_root):
    table, skipped = scan_folder(phantom_root)
    assert skipped == []
    assert len(table) == 72
    assert set(table["kaggle_split"]) == {"train", "val", "test"}
    assert list(table["relpath"]) == sorted(table["relpath"])
    assert table["path"].map(lambda p: Path(p).is_absolute()).all()
    assert (table["target"] == table["label"].map(CLASSES.index)).all()
    assert (table["binary"] == (table["label"] != "normal")).all()
    assert table.groupby("patient")["kaggle_split"].nunique().max() == 1


def test_hidden_and_non_image_files_ignored(tmp_path, phantom_root, caplog):
    root = _minimal(tmp_path / "d", _png_sources(phantom_root))
    reference, _ = scan_folder(root)
    _build(
        root,
        {
            ".DS_Store": b"\x00\x01",
            "train/NORMAL/.DS_Store": b"\x00\x01",
            "train/PNEUMONIA/._person1_bacteria_1.png": b"junk",
            "train/NORMAL/notes.txt": b"hello",
            "test/PNEUMONIA/Thumbs.db": b"junk",
            "train/.ipynb_checkpoints/NORMAL/IM-9999-0001.png": _png_sources(phantom_root)[0],
            "README.md": b"# data",
        },
    )
    with caplog.at_level(logging.DEBUG, logger="pneumo"):
        table, skipped = scan_folder(root)
    assert skipped == []
    pd.testing.assert_frame_equal(table.drop(columns="mtime_ns"), reference.drop(columns="mtime_ns"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("notes.txt" in r.getMessage() for r in caplog.records)


def test_case_insensitive_layout(tmp_path, phantom_root):
    src = _png_sources(phantom_root)
    files = {
        "Train/normal/IM-0001-0001.PNG": src[0],
        "Train/normal/IM-0002-0001.JPG": _jpeg_bytes(src[1]),
        "Train/Pneumonia/person1_BACTERIA_1.Jpeg": _jpeg_bytes(src[2]),
        "Train/Pneumonia/person2_virus_2.png": src[3],
        "Train/Pneumonia/person4_bacteria_4.PNG": src[6],
        "TEST/NORMAL/IM-0003-0001.jpeg": _jpeg_bytes(src[4]),
        "TEST/pneumonia/person3_bacteria_3.png": src[5],
    }
    root = _build(tmp_path / "d", files)
    table, skipped = scan_folder(root)
    assert skipped == []
    assert sorted(table["relpath"]) == sorted(files)
    assert table.set_index("relpath")["kaggle_split"].to_dict()["TEST/NORMAL/IM-0003-0001.jpeg"] == "test"
    ds = load_dataset(root, resolution=16, val_fraction=0.5, cache_dir=tmp_path / "cache", num_workers=1)
    assert len(ds) == 7 and ds.images.shape == (7, 16, 16)


def test_missing_root(tmp_path):
    missing = tmp_path / "nope" / "chest_xray"
    with pytest.raises(DataLayoutError, match="nope"):
        scan_folder(missing)
    with pytest.raises(DataLayoutError, match="does not exist"):
        load_dataset(missing, cache_dir=tmp_path / "cache")
    with pytest.raises(DataLayoutError, match="nope"):
        locate_data(missing)


def test_pointing_at_split_folder(tmp_path, phantom_root):
    root = _minimal(tmp_path / "chest_xray", _png_sources(phantom_root))
    with pytest.raises(DataLayoutError) as info:
        scan_folder(root / "train")
    message = str(info.value)
    assert str(root / "train") in message
    assert "{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg" in message
    assert "point at its parent" in message


def test_pointing_at_parent_folder(tmp_path, phantom_root):
    _minimal(tmp_path / "chest_xray", _png_sources(phantom_root))
    with pytest.raises(DataLayoutError, match="did you mean .*chest_xray"):
        scan_folder(tmp_path)


def test_missing_class_folder(tmp_path, phantom_root):
    root = _minimal(tmp_path / "d", _png_sources(phantom_root))
    shutil.rmtree(root / "train" / "PNEUMONIA")
    with pytest.raises(DataLayoutError, match=r"train has no PNEUMONIA/ folder"):
        scan_folder(root)


def test_missing_test_folder(tmp_path, phantom_root):
    root = _minimal(tmp_path / "d", _png_sources(phantom_root))
    shutil.rmtree(root / "test")
    with pytest.raises(DataLayoutError, match=r"no test/ folder"):
        scan_folder(root)


def test_empty_class(tmp_path, phantom_root):
    root = _minimal(tmp_path / "d", _png_sources(phantom_root))
    for path in (root / "test" / "PNEUMONIA").iterdir():
        path.unlink()
    with pytest.raises(DataLayoutError, match=r"test/PNEUMONIA has no images"):
        scan_folder(root)


def test_no_viral_in_train(tmp_path, phantom_root):
    root = _minimal(tmp_path / "d", _png_sources(phantom_root))
    for path in (root / "train" / "PNEUMONIA").glob("*virus*"):
        path.unlink()
    with pytest.raises(DataLayoutError, match="no viral images"):
        scan_folder(root)


def test_missing_val_is_ok(tmp_path, phantom_root):
    root = _minimal(tmp_path / "d", _png_sources(phantom_root), val=False)
    ds = load_dataset(root, resolution=16, val_fraction=0.3, cache_dir=tmp_path / "cache", num_workers=1)
    assert set(ds.table["kaggle_split"]) == {"train", "test"}
    assert ds.summary()["dropped"]["kaggle_val_merged_into_pool"] == 0


def test_unlabelled_pneumonia_file_is_skipped(tmp_path, phantom_root):
    src = _png_sources(phantom_root)
    root = _minimal(tmp_path / "d", src)
    _build(root, {"train/PNEUMONIA/person50_fungal_1.png": src[-1], "train/COVID/x.png": src[-2]})
    table, skipped = scan_folder(root)
    reasons = dict(skipped)
    assert "bacteria" in reasons["train/PNEUMONIA/person50_fungal_1.png"]
    assert "train/COVID/x.png" in reasons
    assert len(table) == 20


def _untyped(root: Path, *, every: int = 1) -> Path:
    """Rename every ``every``-th PNEUMONIA file of each split so that its name gives no subtype."""
    for split in ("train", "val", "test"):
        for i, path in enumerate(sorted((root / split / "PNEUMONIA").iterdir())):
            if i % every == every - 1:
                path.rename(path.with_name(path.name.replace("bacteria", "img").replace("virus", "img")))
    return root


def test_pneumonia_without_subtype_is_kept_for_the_binary_task(tmp_path, phantom_root):
    src = _png_sources(phantom_root)
    root = _untyped(_minimal(tmp_path / "d", src))
    ds = load_dataset(root, resolution=16, val_fraction=0.3, cache_dir=tmp_path / "cache",
                      num_workers=1, subtypes=False)
    pneumonia = ds.table[ds.table["binary"] == 1]
    assert len(pneumonia) == 13 and set(pneumonia["label"]) == {"pneumonia"}
    assert set(pneumonia["target"]) == {-1}
    assert set(ds.table["split"]) == {"train", "val", "test"}
    assert list(ds.summary_table().columns) == ["normal", "bacterial", "viral", "pneumonia",
                                                "total", "patients"]


def test_pneumonia_without_subtype_stops_the_three_way_task_in_one_line(tmp_path, phantom_root):
    src = _png_sources(phantom_root)
    root = _untyped(_minimal(tmp_path / "d", src))
    with pytest.raises(DataLayoutError) as error:
        load_dataset(root, resolution=16, cache_dir=tmp_path / "cache", num_workers=1)
    message = str(error.value)
    assert "\n" not in message
    assert "train/PNEUMONIA has no images whose name says 'bacteria' or 'virus'" in message
    assert "13 PNEUMONIA image(s) name no subtype (e.g. test/PNEUMONIA/person101_img_9.png)" in message
    assert "Task 1a (tasks/binary.py)" in message
    assert not (tmp_path / "cache" / "decoded").exists()  # refused before decoding


def test_untyped_images_share_the_split_of_the_binary_task(tmp_path, phantom_root):
    """Tasks 1a and 1b split the images they share alike: 1b only leaves the untyped out."""
    src = _png_sources(phantom_root)
    root = _untyped(_minimal(tmp_path / "d", src), every=2)
    kw = dict(resolution=16, val_fraction=0.3, cache_dir=tmp_path / "cache", num_workers=1)
    binary, three_way = load_dataset(root, subtypes=False, **kw), load_dataset(root, **kw)
    assert binary.fingerprint == three_way.fingerprint
    untyped = set(binary.table.loc[binary.table["label"] == "pneumonia", "relpath"])
    assert untyped and {p for p, _ in three_way.skipped} == untyped
    shared = binary.table[~binary.table["relpath"].isin(untyped)].set_index("relpath")["split"]
    assert shared.to_dict() == three_way.table.set_index("relpath")["split"].to_dict()


@pytest.mark.parametrize("val_fraction", [0.15, 0.6])
def test_split_without_a_class_is_a_layout_error(tmp_path, phantom_root, val_fraction):
    """One image per class: validation gets none of them (0.15), or train loses them (0.6)."""
    src = _png_sources(phantom_root)
    root = _build(tmp_path / "d", {
        "train/NORMAL/IM-0001-0001.png": src[0], "train/PNEUMONIA/person1_bacteria_1.png": src[1],
        "train/PNEUMONIA/person2_virus_2.png": src[2], "test/NORMAL/IM-0003-0001.png": src[3],
        "test/PNEUMONIA/person3_bacteria_3.png": src[4],
    })
    with pytest.raises(DataLayoutError, match=r"our (val|train) split has no normal images.*3 images "
                                              r"of 3 patients.*add images of more patients"):
        load_dataset(root, resolution=16, val_fraction=val_fraction, cache_dir=tmp_path / "c",
                     num_workers=1)


def test_bad_images_skipped_and_listed_once(tmp_path, phantom_root, caplog):
    src = _png_sources(phantom_root)
    root = _minimal(tmp_path / "d", src)
    jpeg = _jpeg_bytes(src[-1])
    _build(
        root,
        {
            "train/NORMAL/IM-0300-0001.jpeg": jpeg[: len(jpeg) // 2],  # truncated JPEG
            "train/PNEUMONIA/person300_virus_300.jpeg": os.urandom(2000),  # not an image
            "train/PNEUMONIA/person301_virus_301.png": src[-2].read_bytes()[:300],  # truncated PNG
            "test/NORMAL/IM-0301-0001.jpeg": b"",  # empty
        },
    )
    with caplog.at_level(logging.WARNING, logger="pneumo"):
        ds = load_dataset(root, resolution=16, cache_dir=tmp_path / "cache", num_workers=1)
    bad = {
        "train/NORMAL/IM-0300-0001.jpeg",
        "train/PNEUMONIA/person300_virus_300.jpeg",
        "train/PNEUMONIA/person301_virus_301.png",
        "test/NORMAL/IM-0301-0001.jpeg",
    }
    assert {p for p, _ in ds.skipped} == bad
    reasons = dict(ds.skipped)
    assert reasons["test/NORMAL/IM-0301-0001.jpeg"] == "empty file (0 bytes)"
    assert reasons["train/PNEUMONIA/person300_virus_300.jpeg"].startswith("not an image PIL can read")
    assert not any("BytesIO" in r for r in reasons.values())  # reasons name no in-memory buffer
    assert not set(ds.table["relpath"]) & bad
    assert len(ds) == len(ds.images) == 20
    assert {s["path"] for s in ds.summary()["skipped"]} == bad
    listing = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(listing) == 1 and all(p in listing[0].getMessage() for p in bad)
    # Also from the cache: the second load reports the same files without decoding.
    ds2 = load_dataset(root, resolution=16, cache_dir=tmp_path / "cache", num_workers=1)
    assert ds2.cache_info["hit"] and {p for p, _ in ds2.skipped} == bad


def test_truncated_jpeg_raises_even_if_pil_flag_set(phantom_root):
    from PIL import ImageFile

    jpeg = _jpeg_bytes(_png_sources(phantom_root)[0])
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(OSError):
            decode_bytes(jpeg[: len(jpeg) // 2], 32)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def test_class_emptied_by_unreadable_files(tmp_path, phantom_root):
    root = _minimal(tmp_path / "d", _png_sources(phantom_root))
    for path in (root / "test" / "NORMAL").iterdir():
        path.write_bytes(b"garbage")
    with pytest.raises(DataLayoutError, match="after skipping unreadable"):
        load_dataset(root, resolution=16, cache_dir=tmp_path / "cache", num_workers=1)


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------
def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_decode_16bit_png_uses_actual_range():
    # 12-bit data in a 16-bit container (max 4000): >>8 would give at most 15.
    ramp = np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (64, 1))
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16")
    out, h, w = decode_bytes(_encode(img), 64)
    assert (h, w) == (64, 64) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert (np.diff(out[32].astype(int)) >= 0).all()  # monotonic ramp preserved
    # Offset data: min-max removes the offset.
    out2, _, _ = decode_bytes(_encode(Image.fromarray(ramp + 1000)), 64)
    np.testing.assert_array_equal(out, out2)


def test_decode_32bit_int_and_constant():
    arr = (np.arange(32 * 32, dtype=np.int32).reshape(32, 32) * 37) % 70000
    out, _, _ = decode_bytes(_encode(Image.fromarray(arr, mode="I"), "TIFF"), 32)
    assert out.max() == 255 and out.min() == 0
    flat, _, _ = decode_bytes(_encode(Image.fromarray(np.full((8, 8), 500, np.uint16))), 8)
    assert (flat == 0).all()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "1", "L"])
def test_decode_colour_modes_to_grey(mode):
    grey = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (40, 1))
    img = Image.fromarray(grey, mode="L").convert(mode)
    out, h, w = decode_bytes(_encode(img), 40)
    assert out.shape == (40, 40) and out.dtype == np.uint8 and (h, w) == (40, 40)
    if mode == "1":  # thresholded/dithered to black and white by PIL
        assert set(np.unique(out)) <= {0, 255}
    elif mode == "P":  # web palette quantisation
        assert np.abs(out.astype(int) - grey).mean() < 30
    else:
        np.testing.assert_array_equal(out, grey)  # grey stored as colour decodes unchanged


def test_decode_rgb_jpeg_matches_grey_jpeg():
    grey = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    a, _, _ = decode_bytes(_encode(Image.fromarray(grey).convert("RGB"), "JPEG"), 64)
    b, _, _ = decode_bytes(_encode(Image.fromarray(grey), "JPEG"), 64)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("width, height", [(300, 100), (100, 300), (1000, 700)])
def test_decode_non_square_center_crop(fmt, width, height):
    # White centred square on black: the centre crop keeps exactly the white part.
    arr = np.zeros((height, width), np.uint8)
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    arr[top : top + side, left : left + side] = 255
    out, h, w = decode_bytes(_encode(Image.fromarray(arr).convert("RGB"), fmt), 64)
    assert (h, w) == (height, width)
    assert out.shape == (64, 64)
    # Nothing of the black borders survives (JPEG rings a little at the sharp edge).
    assert out.min() >= (240 if fmt == "PNG" else 200) and out.mean() > 250


def test_decode_downscale_is_antialiased():
    # A 1-pixel checkerboard averages to mid-grey with an antialiased filter (no aliasing).
    board = (np.indices((512, 512)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out, _, _ = decode_bytes(_encode(Image.fromarray(board)), 64)
    assert abs(out.mean() - 127.5) < 3 and out.std() < 3


def test_decode_large_jpeg_uses_draft_without_losing_quality():
    rng = np.random.default_rng(0)
    coarse = Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8))
    smooth = np.array(coarse.resize((2000, 2000), Image.BICUBIC))  # (2000, 2000) uint8
    jpeg = _encode(Image.fromarray(smooth), "JPEG")
    fast, h, w = decode_bytes(jpeg, 128)
    full = Image.open(io.BytesIO(jpeg)).convert("L")  # full-size decode, no DCT scaling
    reference = np.asarray(full.resize((128, 128), Image.BILINEAR))
    assert (h, w) == (2000, 2000)
    assert np.abs(fast.astype(int) - reference.astype(int)).mean() < 1.0


# ---------------------------------------------------------------------------------------
# Dataset, cache, fingerprint
# ---------------------------------------------------------------------------------------
def test_load_phantoms(phantom_root, tmp_path):
    ds = load_dataset(phantom_root, resolution=32, cache_dir=tmp_path, num_workers=1)
    assert isinstance(ds, XrayDataset)
    assert ds.is_synthetic
    assert len(ds) == 72 and ds.images.shape == (72, 32, 32) and ds.images.dtype == np.uint8
    required = {"path", "relpath", "kaggle_split", "split", "label", "target", "binary",
                "patient", "group", "sha1", "orig_height", "orig_width"}
    assert required <= set(ds.table.columns)
    assert (ds.table.index == np.arange(len(ds))).all()
    assert set(ds.table["split"]) == {"train", "val", "test"}
    _assert_no_leak(ds.table)
    # The test split is exactly the Kaggle test folder.
    assert ((ds.table["split"] == "test") == (ds.table["kaggle_split"] == "test")).all()
    # Row alignment: images equal a fresh decode of the row's file.
    row = ds.table.iloc[17]
    fresh, _, _ = decode_bytes(Path(row["path"]).read_bytes(), 32)
    np.testing.assert_array_equal(ds.images[17], fresh)

    images, rows = ds.subset("val")
    assert len(images) == len(rows) > 0 and (rows["split"] == "val").all()
    assert list(rows.index) == list(range(len(rows)))
    np.testing.assert_array_equal(images, ds.images[(ds.table["split"] == "val").to_numpy()])
    with pytest.raises(ValueError):
        ds.subset("validation")

    table = ds.summary_table()
    assert list(table.index) == ["train", "val", "test"]
    assert list(table.columns) == ["normal", "bacterial", "viral", "total", "patients"]
    assert table["total"].sum() == len(ds)

    summary = ds.summary()
    json.dumps(summary)  # JSON-able
    assert summary["is_synthetic"] and summary["resolution"] == 32
    assert summary["counts"]["test"]["total"] == int((ds.table["split"] == "test").sum())
    assert summary["original_size"]["height"] == {"min": 96, "median": 96.0, "max": 96}
    assert "duplicates" in summary and "skipped" in summary
    assert "XrayDataset(synthetic" in repr(ds)


def test_decode_cache_hit_and_invalidation(phantom_root, tmp_path, monkeypatch):
    root = tmp_path / "chest_xray"
    shutil.copytree(phantom_root, root)
    cache = tmp_path / "cache"
    calls = []
    real_decode = decode_mod.decode_files

    def counting(paths, *args, **kwargs):
        calls.append(len(paths))
        return real_decode(paths, *args, **kwargs)

    monkeypatch.setattr(decode_mod, "decode_files", counting)
    first = load_dataset(root, resolution=24, cache_dir=cache, num_workers=1)
    assert calls == [72] and not first.cache_info["hit"]
    entries = sorted(p.name for p in (cache / "decoded").iterdir())
    assert len(entries) == 2 and entries[0].endswith(".json") and entries[1].endswith(".npy")

    second = load_dataset(root, resolution=24, cache_dir=cache, num_workers=1)
    assert calls == [72] and second.cache_info["hit"]
    np.testing.assert_array_equal(first.images, second.images)
    pd.testing.assert_frame_equal(first.table, second.table)
    assert first.fingerprint == second.fingerprint

    # Another resolution is another entry.
    load_dataset(root, resolution=20, cache_dir=cache, num_workers=1)
    assert calls == [72, 72]

    # Touching a file (mtime only) invalidates the decode cache but not the fingerprint,
    # which depends on content, not on timestamps.
    target = next(root.rglob("*.png"))
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = load_dataset(root, resolution=24, cache_dir=cache, num_workers=1)
    assert calls == [72, 72, 72] and not touched.cache_info["hit"]
    assert touched.fingerprint == first.fingerprint

    # Changing a file's content changes both.
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(target)
    changed = load_dataset(root, resolution=24, cache_dir=cache, num_workers=1)
    assert calls == [72, 72, 72, 72]
    assert changed.fingerprint != first.fingerprint
    row = changed.table.index[changed.table["path"] == str(target)][0]
    assert changed.images[row].max() == 0
    # No temporary files are left behind by the atomic writes.
    assert not [p for p in (cache / "decoded").iterdir() if p.name.endswith(".tmp")]


def test_cache_entry_corrupt_is_rebuilt(phantom_root, tmp_path):
    cache = tmp_path / "cache"
    first = load_dataset(phantom_root, resolution=16, cache_dir=cache, num_workers=1)
    npy = Path(first.cache_info["file"])
    npy.write_bytes(b"not a numpy file")
    again = load_dataset(phantom_root, resolution=16, cache_dir=cache, num_workers=1)
    assert not again.cache_info["hit"]
    np.testing.assert_array_equal(first.images, again.images)


def test_parallel_decode_matches_serial(phantom_root, tmp_path):
    serial = load_dataset(phantom_root, resolution=24, cache_dir=tmp_path / "a", num_workers=1)
    parallel = load_dataset(phantom_root, resolution=24, cache_dir=tmp_path / "b", num_workers=2)
    np.testing.assert_array_equal(serial.images, parallel.images)
    assert list(serial.table["sha1"]) == list(parallel.table["sha1"])


def test_fingerprint_settings_and_copies(phantom_root, tmp_path):
    def fingerprint(root=phantom_root, **kwargs):
        kwargs = {"resolution": 16, **kwargs}
        return load_dataset(root, cache_dir=tmp_path, num_workers=1, **kwargs).fingerprint

    base = fingerprint()
    assert len(base) == 16 and int(base, 16) >= 0
    assert fingerprint(resolution=20) != base
    assert fingerprint(seed=1) != base
    assert fingerprint(val_fraction=0.2) != base
    # A copy elsewhere (new mtimes, new absolute paths) has the same fingerprint.
    copy = tmp_path / "elsewhere" / "chest_xray"
    shutil.copytree(phantom_root, copy)
    assert fingerprint(copy) == base


def test_data_folder_untouched(phantom_root, tmp_path):
    root = tmp_path / "chest_xray"
    shutil.copytree(phantom_root, root)
    _build(root, {"train/NORMAL/.DS_Store": b"x", "train/NORMAL/broken.jpeg": b"\xff\xd8\xff"})
    before = _snapshot(root)
    load_dataset(root, resolution=16, cache_dir=tmp_path / "cache", num_workers=1)
    load_dataset(root, resolution=16, cache_dir=tmp_path / "cache", num_workers=1)
    assert _snapshot(root) == before


def test_cache_inside_data_folder_refused(phantom_root, tmp_path, monkeypatch):
    from pneumo.errors import CacheError

    root = tmp_path / "chest_xray"
    shutil.copytree(phantom_root, root)
    before = _snapshot(root)
    monkeypatch.setenv("PNEUMO_CACHE", str(root / "results"))
    with pytest.raises(CacheError, match=r"results folder .*chest_xray/results is inside the data "
                                         r"folder .*set --cache or \$PNEUMO_CACHE"):
        load_dataset(root, resolution=16, num_workers=1)
    assert _snapshot(root) == before  # refused before anything was written there


def test_locate_data_order(tmp_path, monkeypatch):
    explicit, env, default = (tmp_path / n / "chest_xray" for n in ("explicit", "env", "project/data"))
    for p in (explicit, env, default):
        p.mkdir(parents=True)
    monkeypatch.setattr(dataset_mod, "PROJECT_ROOT", tmp_path / "project")
    assert locate_data(explicit) == explicit
    assert locate_data() == default
    monkeypatch.setenv("PNEUMO_DATA", str(env))
    assert locate_data() == env
    assert locate_data(explicit) == explicit
    monkeypatch.setenv("PNEUMO_DATA", str(tmp_path / "stale"))
    with pytest.raises(DataLayoutError, match="PNEUMO_DATA"):
        locate_data()
    monkeypatch.delenv("PNEUMO_DATA")
    shutil.rmtree(default)
    assert locate_data() is None


def test_load_dataset_falls_back_to_phantoms(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_mod, "PROJECT_ROOT", tmp_path / "project")
    calls = []

    def small_phantoms(root, **kwargs):
        calls.append(Path(root))
        return make_phantoms(root, n_per_class=(12, 12, 12), size=48, seed=3, num_workers=1)

    monkeypatch.setattr(dataset_mod, "make_phantoms", small_phantoms)
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path / "cache"))
    ds = load_dataset(resolution=16, num_workers=1)
    assert calls == [tmp_path / "cache" / "phantoms"]
    assert ds.is_synthetic and len(ds) == 36
    assert ds.root == tmp_path / "cache" / "phantoms" / "chest_xray"
    assert (tmp_path / "cache" / "decoded").is_dir()


def test_bad_arguments(phantom_root, tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset(phantom_root, val_fraction=1.0, cache_dir=tmp_path, num_workers=1)
    with pytest.raises(ValueError, match="resolution"):
        load_dataset(phantom_root, resolution=0, cache_dir=tmp_path, num_workers=1)


# ---------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------
def test_splits_leakage_and_duplicates(tmp_path, phantom_root):
    """Shared patients and identical files across Kaggle folders never cross our splits."""
    src = _png_sources(phantom_root)
    root = _minimal(tmp_path / "d", src)
    extra = iter(src[30:])
    shared = next(extra)
    test_copy = root / "test/PNEUMONIA/person101_bacteria_9.png"
    files = {
        # person101 is a test patient; these pool images of the same patient must go.
        "train/PNEUMONIA/person101_bacteria_50.png": next(extra),
        "val/PNEUMONIA/person101_virus_51.png": next(extra),
        # Identical bytes to a test image under another patient id: must go.
        "train/NORMAL/IM-0400-0001.png": test_copy,
        # Duplicate pair across Kaggle train and val with different patient ids: one group.
        "train/PNEUMONIA/person500_bacteria_60.png": shared,
        "val/PNEUMONIA/person501_virus_61.png": shared,
        # person500 has another image, so the duplicate pulls person501 into its group.
        "train/PNEUMONIA/person500_bacteria_62.png": next(extra),
        # Duplicate pair inside test: kept, counted.
        "test/NORMAL/IM-0410-0001.png": src[-1],
        "test/NORMAL/IM-0411-0001.png": src[-1],
    }
    for i in range(12):  # enough pool patients to carve a validation split from
        files[f"train/PNEUMONIA/person{600 + i}_{'bacteria' if i % 2 else 'virus'}_{70 + i}.png"] = next(extra)
        files[f"train/NORMAL/IM-{700 + i:04d}-0001.png"] = next(extra)
    _build(root, files)
    ds = load_dataset(root, resolution=16, val_fraction=0.3, seed=0, cache_dir=tmp_path / "c", num_workers=1)
    t = ds.table.set_index("relpath")
    _assert_no_leak(ds.table)
    for gone in ("train/PNEUMONIA/person101_bacteria_50.png", "val/PNEUMONIA/person101_virus_51.png",
                 "train/NORMAL/IM-0400-0001.png"):
        assert gone not in t.index
    assert t.loc["test/PNEUMONIA/person101_bacteria_9.png", "split"] == "test"
    pair = ["train/PNEUMONIA/person500_bacteria_60.png", "val/PNEUMONIA/person501_virus_61.png",
            "train/PNEUMONIA/person500_bacteria_62.png"]
    assert t.loc[pair, "group"].nunique() == 1 and t.loc[pair, "split"].nunique() == 1
    summary = ds.summary()
    assert summary["dropped"]["patient_in_test"] == 2
    assert summary["dropped"]["duplicate_of_test"] == 1
    assert summary["dropped"]["patients_in_pool_and_test"] == ["person101"]
    assert set(summary["dropped"]["files"]) == {"train/PNEUMONIA/person101_bacteria_50.png",
                                                "val/PNEUMONIA/person101_virus_51.png",
                                                "train/NORMAL/IM-0400-0001.png"}
    assert summary["duplicates"]["groups"] == 3
    assert summary["duplicates"]["pairs"] == 3
    assert summary["duplicates"]["pairs_within_split"]["test"] == 1
    assert summary["duplicates"]["joining_patients"] == 3
    assert summary["dropped"]["kaggle_val_merged_into_pool"] == 4
    # Kaggle val images are in the pool: they end up in our train or val split.
    assert set(t.loc[t["kaggle_split"] == "val", "split"]) <= {"train", "val"}
    assert len(ds) == len(ds.images)


def _synthetic_table(n_patients: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        label = CLASSES[rng.choice(3, p=[0.25, 0.5, 0.25])]
        kaggle = "test" if rng.random() < 0.1 else ("val" if rng.random() < 0.01 else "train")
        for j in range(int(rng.choice([1, 1, 1, 2, 3, 6]))):
            rows.append({"relpath": f"{kaggle}/{p}_{j}", "kaggle_split": kaggle, "label": label,
                         "patient": f"person{p}", "sha1": f"{p}-{j}"})
    return pd.DataFrame(rows)


def test_split_stratified_by_class_and_fraction():
    table = _synthetic_table(2000, np.random.default_rng(0))
    out, report = assign_splits(table, val_fraction=0.15, seed=0)
    _assert_no_leak(out)
    pool = out[out["kaggle_split"] != "test"]
    fractions = pool.groupby("label")["split"].apply(lambda s: (s == "val").mean())
    assert ((fractions - 0.15).abs() < 0.01).all(), fractions
    assert abs((pool["split"] == "val").mean() - 0.15) < 0.01
    assert (out.loc[out["kaggle_split"] == "test", "split"] == "test").all()


def test_split_deterministic_by_seed():
    table = _synthetic_table(500, np.random.default_rng(1))
    a, _ = assign_splits(table, val_fraction=0.2, seed=3)
    b, _ = assign_splits(table.copy(), val_fraction=0.2, seed=3)
    c, _ = assign_splits(table, val_fraction=0.2, seed=4)
    assert list(a["split"]) == list(b["split"])
    assert list(a["split"]) != list(c["split"])


def test_split_zero_fraction_and_errors():
    table = _synthetic_table(50, np.random.default_rng(2))
    out, _ = assign_splits(table, val_fraction=0.0, seed=0)
    assert "val" not in set(out["split"])
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            assign_splits(table, val_fraction=bad)


def test_phantom_dataset_split_by_seed(phantom_root, tmp_path):
    kwargs = {"resolution": 16, "val_fraction": 0.25, "cache_dir": tmp_path, "num_workers": 1}
    a = load_dataset(phantom_root, seed=0, **kwargs)
    b = load_dataset(phantom_root, seed=0, **kwargs)
    c = load_dataset(phantom_root, seed=5, **kwargs)
    assert list(a.table["split"]) == list(b.table["split"])
    assert list(a.table["split"]) != list(c.table["split"])
    for ds in (a, c):
        _assert_no_leak(ds.table)
        val = ds.table[ds.table["split"] == "val"]
        assert set(val["label"]) == set(CLASSES)  # every class is represented


# ---------------------------------------------------------------------------------------
# Real data (skipped where absent)
# ---------------------------------------------------------------------------------------
@requires_real_data
def test_real_data_scan(real_data):
    before = _snapshot(real_data)
    table, skipped = scan_folder(real_data)
    assert skipped == []
    counts = table.groupby(["kaggle_split", "label"]).size().unstack()[list(CLASSES)]
    assert counts.loc["train"].tolist() == [1099, 2283, 1194]
    assert counts.loc["test"].tolist() == [234, 242, 148]
    assert counts.loc["val"].tolist() == [8, 5, 3]
    assert table.groupby("patient")["kaggle_split"].nunique().max() == 1
    assert _snapshot(real_data) == before


@requires_real_data
def test_real_data_load(real_data, tmp_path):
    before = _snapshot(real_data)
    ds = load_dataset(real_data, resolution=32, cache_dir=tmp_path)
    assert not ds.is_synthetic and ds.skipped == []
    assert len(ds) == 5216 and ds.images.shape == (5216, 32, 32)
    _assert_no_leak(ds.table)
    summary = ds.summary()
    assert 20 <= summary["duplicates"]["pairs"] <= 40
    assert summary["counts"]["test"] == {"normal": 234, "bacterial": 242, "viral": 148,
                                          "total": 624, "patients": summary["patients"]["test"]}
    assert abs(summary["counts"]["val"]["total"] / (5216 - 624) - 0.15) < 0.01
    assert _snapshot(real_data) == before
