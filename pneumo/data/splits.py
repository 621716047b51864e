"""Leakage-free train/validation/test assignment.

Rules, in order:

1. ``test`` is the Kaggle ``test/`` folder, untouched.
2. The Kaggle ``val/`` folder (16 images, sometimes missing) is merged into the train pool.
3. Images are grouped with a union-find over *patient* and *exact duplicate* (same SHA-1 of the
   file bytes): two images of one patient, or two identical files, always share a group, and a
   group is never split.
4. A pool group that reaches into the test set (a patient also in ``test/``, or a file identical
   to a test file) is dropped from the pool with a warning: the test set stays as published and
   nothing from it leaks into training.
5. Our validation split is carved from the pool group by group, stratified by class, with
   a seeded greedy fill (:func:`assign_splits`).

Duplicates inside one split are kept (they are the data as published) but counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pneumo.data.labels import LABELS

__all__ = ["SPLIT_VERSION", "SPLITS", "SplitReport", "group_ids", "assign_splits"]

logger = logging.getLogger(__name__)

#: Bump when the split algorithm changes: part of the dataset fingerprint.
SPLIT_VERSION = "pneumo-split-v1:uf-patient-sha1:greedy-per-class"

#: Our split names, in display order.
SPLITS: tuple[str, ...] = ("train", "val", "test")


class _UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def group_ids(table: pd.DataFrame) -> np.ndarray:
    """Group id per row: connected components of "same patient" or "same file bytes".

    Parameters
    ----------
    table
        Rows with ``patient`` and ``sha1`` columns (``sha1`` may be None for a row).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(len(table),)``.  Ids are numbered 0, 1, ... in order of each group's
        first row, so they are deterministic for a deterministic row order.
    """
    n = len(table)
    uf = _UnionFind(n)
    for column in ("patient", "sha1"):
        first: dict = {}
        for i, value in enumerate(table[column].tolist()):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            if value in first:
                uf.union(first[value], i)
            else:
                first[value] = i
    roots = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    # Renumber roots by first appearance: (n,) -> dense ids 0..n_groups-1.
    _, first_index, inverse = np.unique(roots, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_index))
    return order[inverse].astype(np.int64)


@dataclass
class SplitReport:
    """What the split step found and did, for the data summary (all JSON-able)."""

    #: Exact-duplicate sets (same SHA-1) of 2+ files, and the file pairs they make.
    duplicate_groups: int = 0
    duplicate_pairs: int = 0
    #: Duplicate pairs whose two files end up in the same split (kept), per split.
    duplicate_pairs_within_split: dict = field(default_factory=dict)
    #: Duplicate sets joining two or more different patient ids into one group.
    duplicates_joining_patients: int = 0
    #: Pool images dropped because of the test set, by reason.
    dropped_patient_in_test: int = 0
    dropped_duplicate_of_test: int = 0
    #: Pool patients that also appear in test (their images are dropped).
    patients_in_pool_and_test: list = field(default_factory=list)
    #: relpath -> reason for every dropped pool image.
    dropped: dict = field(default_factory=dict)
    #: Kaggle val images merged into the pool.
    kaggle_val_merged: int = 0

    def to_dict(self) -> dict:
        return {
            "duplicate_groups": int(self.duplicate_groups),
            "duplicate_pairs": int(self.duplicate_pairs),
            "duplicate_pairs_within_split": {
                k: int(v) for k, v in self.duplicate_pairs_within_split.items()
            },
            "duplicates_joining_patients": int(self.duplicates_joining_patients),
            "dropped_patient_in_test": int(self.dropped_patient_in_test),
            "dropped_duplicate_of_test": int(self.dropped_duplicate_of_test),
            "patients_in_pool_and_test": list(self.patients_in_pool_and_test),
            "dropped": dict(self.dropped),
            "kaggle_val_merged": int(self.kaggle_val_merged),
            "handling": (
                "exact duplicates (same SHA-1 of the file) and images of one patient share a "
                "group that is never split; pool images linked to the test set are dropped; "
                "duplicates within one split are kept"
            ),
        }


def _group_labels(table: pd.DataFrame) -> pd.Series:
    """Majority label of each group (ties: the first label in :data:`~pneumo.data.labels.LABELS` order)."""
    counts = table.groupby(["group", "label"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(LABELS), fill_value=0)
    # idxmax returns the first maximal column, i.e. the LABELS order breaks ties.
    return counts.idxmax(axis=1)


def _greedy_val_groups(
    groups: pd.DataFrame, val_fraction: float, rng: np.random.Generator
) -> set[int]:
    """Pick validation groups class by class so each class gets ~val_fraction of its images.

    ``groups`` has one row per group: ``group``, ``label`` (majority), ``n`` (images).  Within
    each class the groups are visited in a seeded random order; a group is taken when doing so
    brings the class's validation image count closer to its target.  This tolerates groups of
    very different sizes (a patient with 10 images) better than taking whole folds, and unlike
    ``StratifiedGroupKFold`` works for any fraction, not only ``1/k``.
    """
    chosen: set[int] = set()
    for label in LABELS:
        part = groups[groups["label"] == label].sort_values("group")
        if part.empty:
            continue
        target = val_fraction * part["n"].sum()
        taken = 0
        order = rng.permutation(len(part))
        ids, sizes = part["group"].to_numpy(), part["n"].to_numpy()
        for j in order:
            if abs(taken + sizes[j] - target) < abs(taken - target):
                chosen.add(int(ids[j]))
                taken += int(sizes[j])
    return chosen


def assign_splits(
    table: pd.DataFrame, *, val_fraction: float = 0.15, seed: int = 0
) -> tuple[pd.DataFrame, SplitReport]:
    """Add ``group`` and ``split`` columns and drop pool rows that leak into test.

    Parameters
    ----------
    table
        Rows with ``relpath``, ``kaggle_split``, ``label``, ``patient`` and ``sha1``.
    val_fraction
        Fraction of pool images (train + Kaggle val, after dropping test-linked ones) moved to
        our validation split, in ``[0, 1)``.
    seed
        Seed of the validation draw; the same seed and files give the same split.

    Returns
    -------
    table : pandas.DataFrame
        The kept rows (original order, original index) with new columns ``group`` (int) and
        ``split`` (``train``/``val``/``test``).
    report : SplitReport
        Duplicates found and rows dropped.

    Raises
    ------
    ValueError
        When ``val_fraction`` is outside ``[0, 1)``.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    table = table.copy()
    table["group"] = group_ids(table)
    report = SplitReport()
    is_test = (table["kaggle_split"] == "test").to_numpy()
    report.kaggle_val_merged = int((table["kaggle_split"] == "val").sum())

    # -- duplicates ------------------------------------------------------------------------
    sha = table["sha1"].where(table["sha1"].notna())
    dup_sizes = sha.value_counts()
    dup_sizes = dup_sizes[dup_sizes > 1]
    report.duplicate_groups = int(len(dup_sizes))
    report.duplicate_pairs = int((dup_sizes * (dup_sizes - 1) // 2).sum())
    if len(dup_sizes):
        dup_rows = table[sha.isin(dup_sizes.index)]
        report.duplicates_joining_patients = int(
            (dup_rows.groupby("sha1")["patient"].nunique() > 1).sum()
        )

    # -- leakage into test -----------------------------------------------------------------
    test_groups = set(table.loc[is_test, "group"])
    test_patients = set(table.loc[is_test, "patient"])
    test_sha = set(table.loc[is_test, "sha1"].dropna())
    leaking = (~is_test) & table["group"].isin(test_groups).to_numpy()
    if leaking.any():
        for i in np.flatnonzero(leaking):
            row = table.iloc[i]
            if row["patient"] in test_patients:
                reason = f"patient {row['patient']} is also in test"
                report.dropped_patient_in_test += 1
            elif row["sha1"] in test_sha:
                reason = "identical to a test image"
                report.dropped_duplicate_of_test += 1
            else:
                # Linked through a chain (same patient as a file identical to a test file).
                reason = "linked to a test image through a duplicate of the same patient"
                report.dropped_duplicate_of_test += 1
            report.dropped[row["relpath"]] = reason
        pool_patients = set(table.loc[~is_test, "patient"])
        report.patients_in_pool_and_test = sorted(pool_patients & test_patients)
        logger.warning(
            "dropping %d train/val image(s) that would leak into test: %d of %d patient(s) also "
            "in test, %d image(s) identical or linked to a test image",
            int(leaking.sum()),
            len(report.patients_in_pool_and_test),
            len(pool_patients),
            report.dropped_duplicate_of_test,
        )
        table = table[~leaking]

    # -- our validation split --------------------------------------------------------------
    pool = table[table["kaggle_split"] != "test"]
    groups = pd.DataFrame({"label": _group_labels(pool), "n": pool.groupby("group").size()})
    groups = groups.rename_axis("group").reset_index()
    rng = np.random.default_rng(seed)
    val_groups = _greedy_val_groups(groups, float(val_fraction), rng) if val_fraction > 0 else set()
    split = np.where(table["kaggle_split"] == "test", "test", "train").astype(object)
    split[table["group"].isin(val_groups).to_numpy() & (split == "train")] = "val"
    table["split"] = split

    # Duplicates kept inside a split, counted for the summary.
    kept = table[table["sha1"].notna()]
    for name in SPLITS:
        sizes = kept.loc[kept["split"] == name, "sha1"].value_counts()
        report.duplicate_pairs_within_split[name] = int((sizes * (sizes - 1) // 2).sum())
    _check_no_leak(table)
    return table, report


def _check_no_leak(table: pd.DataFrame) -> None:
    """Assert the invariants that the rest of the project relies on."""
    for column in ("patient", "group", "sha1"):
        per = table[table[column].notna()].groupby(column)["split"].nunique()
        if (per > 1).any():
            raise AssertionError(
                f"internal error: {column} {per[per > 1].index[0]!r} is in more than one split"
            )
