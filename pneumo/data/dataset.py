"""Finding and loading the data: :func:`load_dataset`, :func:`locate_data`, the fingerprint.

:func:`load_dataset` is the one entry point used by the tasks::

    ds = load_dataset()                      # real data if found, else synthetic phantoms
    x_train, rows_train = ds.subset("train") # (n, H, W) uint8 and the matching table rows

It chains :func:`~pneumo.data.scan.scan_folder` (layout, labels, patients),
:func:`~pneumo.data.decode.load_decoded` (decode once, cached on disk) and
:func:`~pneumo.data.splits.assign_splits` (patient- and duplicate-grouped splits), and
returns an :class:`~pneumo.data.xray_dataset.XrayDataset`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pneumo.data.decode import DECODER_VERSION, load_decoded
from pneumo.data.phantoms import is_phantom_folder, make_phantoms
from pneumo.data.scan import (
    EXPECTED_LAYOUT,
    DataLayoutError,
    check_class_counts,
    drop_untyped,
    scan_folder,
)
from pneumo.data.splits import SPLIT_VERSION, SplitReport, assign_splits
from pneumo.data.xray_dataset import TABLE_COLUMNS, XrayDataset, labels_present
from pneumo.errors import CacheError

__all__ = [
    "PROJECT_ROOT",
    "locate_data",
    "default_cache_dir",
    "load_dataset",
    "compute_fingerprint",
]

logger = logging.getLogger(__name__)

#: The folder that holds the ``pneumo`` package (the repository root in a checkout).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def locate_data(path: str | os.PathLike | None = None) -> Path | None:
    """Find the ``chest_xray`` data folder.

    Parameters
    ----------
    path
        Explicit folder.  When given it must exist.

    Returns
    -------
    pathlib.Path or None
        The first of: ``path``; ``$PNEUMO_DATA``; ``<project root>/data/chest_xray``; or None
        when none is given and the default folder does not exist.  The layout is not checked
        here (:func:`~pneumo.data.scan.scan_folder` does that).

    Raises
    ------
    DataLayoutError
        When ``path`` or a non-empty ``$PNEUMO_DATA`` names a folder that does not exist.  A
        stale setting fails loudly instead of silently falling back to synthetic data.
    """
    if path is not None:
        candidate = Path(path).expanduser()
        if not candidate.exists():
            raise DataLayoutError(
                f"data folder {candidate} does not exist (expected {EXPECTED_LAYOUT})"
            )
        return candidate.absolute()
    env = os.environ.get("PNEUMO_DATA", "").strip()
    if env:
        candidate = Path(env).expanduser()
        if not candidate.exists():
            raise DataLayoutError(
                f"$PNEUMO_DATA is {env!r} but {candidate} does not exist (expected "
                f"{EXPECTED_LAYOUT}); fix or unset it"
            )
        return candidate.absolute()
    default = PROJECT_ROOT / "data" / "chest_xray"
    if default.is_dir():
        return default
    return None


def default_cache_dir() -> Path:
    """``$PNEUMO_CACHE`` if set, else ``<project root>/results``."""
    env = os.environ.get("PNEUMO_CACHE", "").strip()
    return Path(env).expanduser().absolute() if env else PROJECT_ROOT / "results"


def compute_fingerprint(
    relpaths, sizes, sha1s, *, resolution: int, val_fraction: float, seed: int
) -> str:
    """16-hex-digit identity of a loaded data set, for use as a results cache key.

    Hashes the sorted ``(relpath, size, sha1)`` of every image file, the resolution, the split
    settings and the decoder/split algorithm versions.  Modification times are left out on
    purpose: they change when data are copied between machines, while the content (SHA-1)
    does not, so results computed elsewhere on the same files stay reusable.
    """
    files = sorted((str(r), int(s), str(h or "")) for r, s, h in zip(relpaths, sizes, sha1s))
    payload = {
        "files": files,
        "resolution": int(resolution),
        "val_fraction": round(float(val_fraction), 12),
        "seed": int(seed),
        "decoder": DECODER_VERSION,
        "split": SPLIT_VERSION,
    }
    blob = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _check_our_splits(table: pd.DataFrame, root: Path, val_fraction: float) -> None:
    """Raise :class:`DataLayoutError` when our train or validation split lacks a class.

    Validation chooses the model and its threshold, so it needs normal and pneumonia images;
    it is drawn from the train pool by patient, which a handful of patients cannot feed.
    """
    pool = table[table["split"] != "test"]
    problems = [
        f"our {split} split has no {name} images"
        for split in ("train", "val")
        for value, name in ((0, "normal"), (1, "pneumonia"))
        if not ((pool["split"] == split) & (pool["binary"] == value)).any()
    ]
    if problems:
        raise DataLayoutError(
            f"{'; '.join(problems)} ({len(pool)} images of {pool['patient'].nunique()} patients in "
            f"train/ and val/ of {root}, val_fraction {val_fraction:g}): validation is drawn "
            "from train/ patient by patient, per class; add images of more patients to train/ "
            "(or val/), or change --val-fraction"
        )


#: Warnings already given in this process (a report run loads the data once per task).
_WARNED: set[str] = set()


def load_dataset(
    root: str | os.PathLike | None = None,
    *,
    resolution: int = 128,
    val_fraction: float = 0.15,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    subtypes: bool = True,
) -> XrayDataset:
    """Scan, decode (once, cached) and split a chest X-ray folder.

    Parameters
    ----------
    root
        The ``chest_xray`` folder.  None: :func:`locate_data`; if that finds nothing, synthetic
        phantoms are generated in ``<cache_dir>/phantoms`` (once) and used, with a warning.
    resolution
        Side of the square images in pixels.
    val_fraction
        Fraction of the train pool (Kaggle train + val) moved to our validation split, by
        patient, stratified by class.
    seed
        Seed of the validation draw.
    cache_dir
        Where ``decoded/`` (and ``phantoms/``) live.  None: ``$PNEUMO_CACHE`` or
        ``<project root>/results``.  Must not be inside the data folder.
    num_workers
        Decoding processes; None means ``os.cpu_count()``.  Does not change the result.
    subtypes
        True (default): the three-way target is needed, so pneumonia images whose name says
        neither ``bacteria`` nor ``virus`` are skipped.  False (Task 1a): they are kept, with
        label :data:`~pneumo.data.labels.UNTYPED` and ``target`` -1.  Either way they take part
        in the split and the fingerprint, so both settings give the same split of every image
        they share.

    Returns
    -------
    XrayDataset

    Raises
    ------
    DataLayoutError
        For a missing folder, a wrong layout, a class left empty (also after skipping
        unreadable images), or a train or validation split without normal or pneumonia images.
    CacheError
        For a cache folder inside the data folder.
    ValueError
        For a bad ``resolution`` or ``val_fraction``.
    """
    if int(resolution) < 8:
        raise ValueError(f"resolution must be at least 8 pixels, got {resolution!r}")
    resolution = int(resolution)
    if cache_dir is None:
        cache = default_cache_dir()
    else:
        cache = Path(cache_dir).expanduser().absolute()
    located = _data_folder(root, cache, num_workers)

    # Every image, typed or not, so that the fingerprint and the split do not depend on
    # `subtypes`; the untyped ones are dropped after splitting where the subtype is needed.
    table, skipped = scan_folder(located, subtypes=False)
    skipped = list(skipped)
    check_class_counts(table, located, subtypes=subtypes)
    scan_counts = _scan_counts(table)
    images, info = _decode_into(table, resolution, cache, num_workers)
    # The fingerprint covers every image file found, readable or not (sha1 of what is there).
    fingerprint = compute_fingerprint(
        table["relpath"], table["size"], table["sha1"],
        resolution=resolution, val_fraction=val_fraction, seed=seed,
    )
    table = _drop_unreadable(table, info["errors"], located, skipped, subtypes=subtypes)
    table, report = _split(table, located, skipped, val_fraction=val_fraction, seed=seed,
                           subtypes=subtypes)
    images, table = _rows_kept(images, table)

    dataset = XrayDataset(
        table=table,
        images=images,
        root=located,
        resolution=resolution,
        is_synthetic=is_phantom_folder(located),
        skipped=[(str(p), str(r)) for p, r in skipped],
        fingerprint=fingerprint,
        val_fraction=float(val_fraction),
        seed=int(seed),
        split_report=report.to_dict(),
        scan_counts=scan_counts,
        cache_info={"hit": bool(info["cache_hit"]), "file": info["cache_file"], "key": info["key"]},
    )
    logger.info("%r\n%s", dataset, dataset.summary_table().to_string())
    return dataset


def _data_folder(root: str | os.PathLike | None, cache: Path, num_workers: int | None) -> Path:
    """The data folder: ``root`` or :func:`locate_data`'s, else phantoms generated under ``cache``."""
    located = locate_data(root)
    if located is None:
        # Warn once per process: a report run loads the data once per task.
        logger.log(
            logging.INFO if "phantoms" in _WARNED else logging.WARNING,
            "no chest X-ray data found (no root given, $PNEUMO_DATA unset, %s missing); using "
            "synthetic phantom data under %s",
            PROJECT_ROOT / "data" / "chest_xray",
            cache / "phantoms",
        )
        _WARNED.add("phantoms")
        located = make_phantoms(cache / "phantoms", num_workers=num_workers)
    located = located.absolute()
    if cache.resolve().is_relative_to(located.resolve()):
        raise CacheError(
            f"the results folder {cache} is inside the data folder {located}, which is only ever "
            "read: set --cache or $PNEUMO_CACHE to a folder outside it"
        )
    return located


def _scan_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per Kaggle folder and label as found on disk, before anything is dropped."""
    counts = table.groupby(["kaggle_split", "label"]).size()
    return {
        split: {label: int(counts.get((split, label), 0)) for label in labels_present(table)}
        for split in table["kaggle_split"].unique().tolist()
    }


def _decode_into(
    table: pd.DataFrame, resolution: int, cache: Path, num_workers: int | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode every scanned image (cached) and add its ``sha1`` and original size to ``table``."""
    # images: uint8 (N, resolution, resolution), row i = table row i (scan order).
    images, info = load_decoded(
        table["path"].tolist(),
        table["relpath"].tolist(),
        table["size"].tolist(),
        table["mtime_ns"].tolist(),
        resolution,
        cache,
        num_workers=num_workers,
    )
    table["sha1"] = pd.Series(info["sha1"], index=table.index, dtype=object)
    table["orig_height"] = np.asarray(info["orig_height"], dtype=np.int64)
    table["orig_width"] = np.asarray(info["orig_width"], dtype=np.int64)
    return images, info


def _drop_unreadable(
    table: pd.DataFrame, errors: dict[str, str], located: Path, skipped: list, *, subtypes: bool
) -> pd.DataFrame:
    """Leave out the images the decoder could not read (logged, added to ``skipped``)."""
    if errors:
        logger.warning(
            "skipping %d unreadable image(s) under %s:\n  %s",
            len(errors),
            located,
            "\n  ".join(f"{p}: {r}" for p, r in errors.items()),
        )
        skipped.extend(errors.items())
        table = table[~table["relpath"].isin(errors)]
        check_class_counts(table, located, when=" after skipping unreadable images",
                           subtypes=subtypes)
    return table


def _split(
    table: pd.DataFrame, located: Path, skipped: list, *, val_fraction: float, seed: int, subtypes: bool
) -> tuple[pd.DataFrame, SplitReport]:
    """Assign our splits, then leave out the untyped images where the subtype is needed."""
    table, report = assign_splits(table, val_fraction=val_fraction, seed=seed)
    if subtypes:
        table, untyped = drop_untyped(table)
        if untyped:
            logger.warning("leaving out %d pneumonia image(s) whose name gives no subtype (e.g. %s)",
                           len(untyped), untyped[0][0])
        skipped.extend(untyped)
    _check_our_splits(table, located, val_fraction)
    return table, report


def _rows_kept(images: np.ndarray, table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The images of the rows left in ``table``, row-aligned with it (index 0..n-1, final columns)."""
    keep = table.index.to_numpy()  # positions in the scan order == rows of `images`
    if len(keep) != len(images) or not np.array_equal(keep, np.arange(len(images))):
        images = images[keep]
    return images, table.reset_index(drop=True)[list(TABLE_COLUMNS)]
