"""A loaded chest X-ray data set: :class:`XrayDataset`, its images and one table row per image.

A data set is made by :func:`~pneumo.data.dataset.load_dataset`; this module says what it
holds (row-aligned images and table, our splits, what was skipped, the fingerprint) and how
it is read: :meth:`XrayDataset.subset` per split, :meth:`XrayDataset.summary_table` and
:meth:`XrayDataset.summary` for logs and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pneumo.data.labels import CLASSES, UNTYPED
from pneumo.data.splits import SPLITS

__all__ = ["TABLE_COLUMNS", "XrayDataset", "labels_present"]

#: Column order of :attr:`XrayDataset.table`.
TABLE_COLUMNS = (
    "path",
    "relpath",
    "kaggle_split",
    "split",
    "label",
    "target",
    "binary",
    "patient",
    "group",
    "sha1",
    "orig_height",
    "orig_width",
    "size",
    "mtime_ns",
)


def labels_present(table: pd.DataFrame) -> list[str]:
    """The three classes, and the untyped pneumonia label only where such images are used."""
    return list(CLASSES) + ([UNTYPED] if (table["label"] == UNTYPED).any() else [])


def _stats(values: pd.Series) -> dict[str, float]:
    """Min, median and max of an integer column (None each when it is empty)."""
    if values.empty:
        return {"min": None, "median": None, "max": None}
    return {
        "min": int(values.min()),
        "median": float(values.median()),
        "max": int(values.max()),
    }


@dataclass
class XrayDataset:
    """A decoded chest X-ray data set with leakage-free splits.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per image, row-aligned with :attr:`images`.  Columns: ``path`` (absolute),
        ``relpath`` (posix, relative to :attr:`root`), ``kaggle_split`` (folder on disk),
        ``split`` (our ``train``/``val``/``test``), ``label`` (in
        :data:`~pneumo.data.CLASSES`), ``target`` (0..2), ``binary`` (0/1), ``patient``,
        ``group`` (patient + duplicate group id; never split), ``sha1`` (of the file bytes),
        ``orig_height``, ``orig_width``, ``size`` (bytes), ``mtime_ns``.
    images : numpy.ndarray
        uint8, shape ``(N, resolution, resolution)``, grey.
    root : pathlib.Path
        The data folder.
    resolution : int
        Image side in pixels.
    is_synthetic : bool
        True for phantom data (:func:`~pneumo.data.make_phantoms`).
    skipped : list of (str, str)
        ``(relpath, reason)`` of image files that could not be used (unlabelled, unreadable,
        truncated).  Paths are relative to :attr:`root`.
    fingerprint : str
        See :func:`~pneumo.data.dataset.compute_fingerprint`.
    val_fraction, seed : float, int
        Split settings used.
    split_report : dict
        Duplicates and dropped files (:meth:`pneumo.data.splits.SplitReport.to_dict`).
    scan_counts : dict
        Images per Kaggle folder and class as found on disk (before any dropping).
    cache_info : dict
        ``hit`` and ``file`` of the decode cache (not part of :meth:`summary`, which must not
        depend on whether the cache was warm).
    """

    table: pd.DataFrame
    images: np.ndarray
    root: Path
    resolution: int
    is_synthetic: bool
    skipped: list[tuple[str, str]]
    fingerprint: str
    val_fraction: float = 0.15
    seed: int = 0
    split_report: dict = field(default_factory=dict)
    scan_counts: dict = field(default_factory=dict)
    cache_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}"
            )
        if len(self.table) != len(self.images):
            raise ValueError(
                f"table has {len(self.table)} rows but there are {len(self.images)} images"
            )

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        counts = self.table["split"].value_counts()
        parts = ", ".join(f"{s}={int(counts.get(s, 0))}" for s in SPLITS)
        kind = "synthetic" if self.is_synthetic else "real"
        return (
            f"XrayDataset({kind}, {len(self)} images {self.resolution}px, {parts}, "
            f"root={str(self.root)!r}, fingerprint={self.fingerprint})"
        )

    def subset(self, split: str) -> tuple[np.ndarray, pd.DataFrame]:
        """Images and table rows of one of our splits.

        Parameters
        ----------
        split
            ``"train"``, ``"val"`` or ``"test"``.

        Returns
        -------
        images : numpy.ndarray
            uint8, shape ``(n, resolution, resolution)`` (a copy).
        rows : pandas.DataFrame
            The matching table rows, index reset to ``0..n-1``.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        mask = (self.table["split"] == split).to_numpy()
        return self.images[mask], self.table[mask].reset_index(drop=True)

    def summary_table(self) -> pd.DataFrame:
        """Images per split and class, total, and patients.

        Returns
        -------
        pandas.DataFrame
            Index ``train``, ``val``, ``test`` (name ``split``); integer columns ``normal``,
            ``bacterial``, ``viral``, (``pneumonia``, only when there are untyped pneumonia
            images), ``total``, ``patients``.
        """
        counts = pd.crosstab(self.table["split"], self.table["label"])
        counts = counts.reindex(index=list(SPLITS), columns=labels_present(self.table), fill_value=0)
        counts["total"] = counts.sum(axis=1)
        patients = self.table.groupby("split")["patient"].nunique()
        counts["patients"] = patients.reindex(list(SPLITS), fill_value=0)
        counts.index.name = "split"
        counts.columns.name = None
        return counts.astype("int64")

    def summary(self) -> dict[str, Any]:
        """JSON-able description of the data set, for logs and the report.

        Returns
        -------
        dict
            ``root``, ``is_synthetic``, ``resolution``, ``val_fraction``, ``seed``,
            ``fingerprint``, ``n_images``; ``counts`` (split -> class/total/patients);
            ``kaggle_counts`` (folder -> class -> images found on disk); ``patients`` (split ->
            n); ``duplicates`` (groups and pairs found, pairs kept within each split, how they
            are handled); ``dropped`` (pool images dropped for leaking into test, by reason,
            with the files); ``skipped`` (files not used, with reasons); ``original_size``
            (min/median/max of height and width).
        """
        table = self.summary_table()
        report = self.split_report or {}
        return {
            "root": str(self.root),
            "is_synthetic": bool(self.is_synthetic),
            "resolution": int(self.resolution),
            "val_fraction": float(self.val_fraction),
            "seed": int(self.seed),
            "fingerprint": self.fingerprint,
            "n_images": int(len(self)),
            "counts": {
                split: {col: int(table.loc[split, col]) for col in table.columns}
                for split in table.index
            },
            "kaggle_counts": self.scan_counts,
            "patients": {split: int(table.loc[split, "patients"]) for split in table.index},
            "duplicates": {
                "groups": report.get("duplicate_groups", 0),
                "pairs": report.get("duplicate_pairs", 0),
                "pairs_within_split": report.get("duplicate_pairs_within_split", {}),
                "joining_patients": report.get("duplicates_joining_patients", 0),
                "handling": report.get("handling", ""),
            },
            "dropped": {
                "patient_in_test": report.get("dropped_patient_in_test", 0),
                "duplicate_of_test": report.get("dropped_duplicate_of_test", 0),
                "patients_in_pool_and_test": report.get("patients_in_pool_and_test", []),
                "kaggle_val_merged_into_pool": report.get("kaggle_val_merged", 0),
                "files": report.get("dropped", {}),
            },
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "original_size": {
                "height": _stats(self.table["orig_height"]),
                "width": _stats(self.table["orig_width"]),
            },
        }
