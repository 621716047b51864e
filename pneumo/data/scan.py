"""Find the images of a Kaggle-layout chest X-ray folder and check the layout.

Scanning only lists and ``stat``s files; pixels are decoded later (:mod:`pneumo.data.decode`)
so that a wrong path fails in milliseconds with a message that says what was expected.
Nothing under the data folder is ever written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from pneumo.data.labels import (
    CLASS_FOLDERS,
    LABELS,
    UNTYPED,
    label_to_binary,
    label_to_target,
    parse_label,
    parse_patient,
)
from pneumo.errors import UserError

__all__ = [
    "DataLayoutError",
    "EXPECTED_LAYOUT",
    "IMAGE_EXTENSIONS",
    "KAGGLE_SPLITS",
    "REQUIRED_SPLITS",
    "scan_folder",
    "check_class_counts",
    "drop_untyped",
]

logger = logging.getLogger(__name__)

#: Split folders of the Kaggle layout, matched case-insensitively.  ``val`` is optional.
KAGGLE_SPLITS: tuple[str, ...] = ("train", "val", "test")
REQUIRED_SPLITS: tuple[str, ...] = ("train", "test")

#: File extensions read as images (any case).  Everything else is ignored.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpeg", ".jpg", ".png"})

#: One-line description of the expected layout, used in every layout error.
EXPECTED_LAYOUT = "<root>/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg (val/ optional)"

#: Columns of the table returned by :func:`scan_folder`, in order.
SCAN_COLUMNS = (
    "path",
    "relpath",
    "kaggle_split",
    "label",
    "target",
    "binary",
    "patient",
    "size",
    "mtime_ns",
)


class DataLayoutError(UserError, ValueError):
    """The data folder is missing or does not follow the Kaggle chest X-ray layout."""


def _expected(root: Path) -> str:
    return f"expected {root}/{{train,val,test}}/{{NORMAL,PNEUMONIA}}/*.jpeg (val/ optional)"


def _subdirs_by_lower_name(folder: Path) -> dict[str, Path]:
    """Visible sub-folders of ``folder`` keyed by lower-cased name.

    Raises
    ------
    DataLayoutError
        When two sub-folders differ only by case (``train`` and ``Train``): which one is meant
        cannot be guessed, and merging them silently could double-count images.
    """
    out: dict[str, Path] = {}
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            key = entry.name.lower()
            if key in out:
                raise DataLayoutError(
                    f"{folder} has both {out[key].name!r} and {entry.name!r}; folder names are "
                    f"matched case-insensitively, so keep only one ({_expected(folder)})"
                )
            out[key] = Path(entry.path)
    return out


def _layout_hint(root: Path, subdirs: dict[str, Path]) -> str:
    """A guess at what the user pointed at, for the 'no train/test' error."""
    if root.name.lower() in KAGGLE_SPLITS or any(c.lower() in subdirs for c in CLASS_FOLDERS):
        return f"; this looks like a split folder, point at its parent {root.parent} instead"
    for child in subdirs.values():
        try:
            inner = _subdirs_by_lower_name(child)
        except (OSError, DataLayoutError):
            continue
        if all(s in inner for s in REQUIRED_SPLITS):
            return f"; did you mean {child}?"
    return ""


def _walk_images(folder: Path):
    """Yield ``(path, is_image)`` for every visible file under ``folder``, sorted, recursively.

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are skipped with a debug
    message; they are never data.
    """
    for dirpath, dirnames, filenames in os.walk(folder):
        hidden_dirs = [d for d in dirnames if d.startswith(".")]
        for d in hidden_dirs:
            logger.debug("ignoring hidden folder %s", Path(dirpath, d))
        # Sorting in place makes os.walk's traversal order (and so row order) deterministic.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.startswith("."):
                logger.debug("ignoring hidden file %s", path)
                continue
            yield path, path.suffix.lower() in IMAGE_EXTENSIONS


def check_class_counts(
    table: pd.DataFrame, root: Path | str, *, when: str = "", subtypes: bool = True
) -> None:
    """Raise :class:`DataLayoutError` when a required split lacks a class.

    ``train`` and ``test`` each need normal and pneumonia images.  With ``subtypes``, only
    pneumonia images whose name says ``bacteria`` or ``virus`` count, and ``train`` needs both
    (the three-way target cannot be trained otherwise).

    Parameters
    ----------
    table
        Rows with at least ``kaggle_split`` and ``label`` (untyped pneumonia images, label
        :data:`~pneumo.data.labels.UNTYPED`, included: they make the message precise).
    root
        Data folder, for the message.
    when
        Extra context for the message, e.g. ``" after skipping unreadable files"``.
    subtypes
        Whether the caller needs the bacterial / viral subtype (Task 1b and the tasks built on
        it) or only normal vs pneumonia (Task 1a).
    """
    root = Path(root)
    pneumonia = {"bacterial", "viral"} if subtypes else {"bacterial", "viral", UNTYPED}
    problems = []
    for split in REQUIRED_SPLITS:
        labels = set(table.loc[table["kaggle_split"] == split, "label"])
        if "normal" not in labels:
            problems.append(f"{split}/NORMAL has no images")
        if not labels & pneumonia:
            problems.append(f"{split}/PNEUMONIA has no images"
                            + (" whose name says 'bacteria' or 'virus'" if UNTYPED in labels else ""))
        elif subtypes and split == "train":
            for label, word in (("bacterial", "bacteria"), ("viral", "virus")):
                if label not in labels:
                    problems.append(
                        f"train/PNEUMONIA has no {label} images (no '{word}' in any name)"
                    )
    if problems:
        untyped = table.loc[table["label"] == UNTYPED, "relpath"]
        hint = ""
        if subtypes and len(untyped):
            hint = (f"; {len(untyped)} PNEUMONIA image(s) name no subtype (e.g. {untyped.iloc[0]}): "
                    "rename them like person1_bacteria_1.jpeg / person10_virus_35.jpeg, or run "
                    "Task 1a (tasks/binary.py), which needs no subtype")
        raise DataLayoutError(
            f"empty class in {root}{when}: " + "; ".join(problems) + f" ({_expected(root)}){hint}"
        )


#: Why an untyped pneumonia image is left out where the subtype is needed.
UNTYPED_REASON = ("cannot tell bacterial from viral pneumonia: the file name must contain exactly "
                  "one of 'bacteria' or 'virus' (e.g. person1_bacteria_1.jpeg)")


def drop_untyped(table: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Leave out the pneumonia images whose name gives no subtype (label ``UNTYPED``).

    Returns
    -------
    table : pandas.DataFrame
        The other rows (index kept).
    skipped : list of (str, str)
        ``(relpath, reason)`` of the rows left out.
    """
    untyped = (table["label"] == UNTYPED).to_numpy()
    return table[~untyped], [(rel, UNTYPED_REASON) for rel in table.loc[untyped, "relpath"]]


def scan_folder(
    root: str | os.PathLike, *, subtypes: bool = True
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """List the images of a Kaggle-layout folder, with labels and patient ids.

    Folder names match case-insensitively; image extensions are ``.jpeg``, ``.jpg`` and
    ``.png`` in any case.  Hidden files and non-image files are ignored (debug log).  Pixels are
    not decoded, so unreadable images are only found later by the decoder.

    Parameters
    ----------
    root
        The ``chest_xray`` folder holding ``train/``, ``test/`` and optionally ``val/``.
    subtypes
        True: a PNEUMONIA image whose name says neither ``bacteria`` nor ``virus`` cannot be
        used and is skipped, and ``train`` needs both subtypes.  False (Task 1a, which asks only
        normal vs pneumonia): such an image is kept with label
        :data:`~pneumo.data.labels.UNTYPED` and ``target`` -1.

    Returns
    -------
    table : pandas.DataFrame
        One row per image, sorted by ``relpath``, with columns ``path`` (absolute str),
        ``relpath`` (posix, relative to ``root``, case as on disk), ``kaggle_split``
        (``train``/``val``/``test``), ``label`` (in :data:`~pneumo.data.labels.LABELS`),
        ``target`` (0..2, -1 untyped), ``binary`` (0/1), ``patient``, ``size`` (bytes) and
        ``mtime_ns``.
    skipped : list of (str, str)
        ``(relpath, reason)`` for image files that cannot be used: unknown class folder,
        a PNEUMONIA name without ``bacteria``/``virus`` (with ``subtypes``).  Logged in one
        warning.

    Raises
    ------
    DataLayoutError
        When ``root`` does not exist or is not a folder; lacks ``train`` or ``test``; a
        required split lacks a ``NORMAL`` or ``PNEUMONIA`` folder; or a required class is
        empty (see :func:`check_class_counts`).  The message names the path and the expected
        layout.
    """
    root = Path(root).expanduser().absolute()
    splits = _split_folders(root)
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    n_ignored = 0
    for split in KAGGLE_SPLITS:
        if split not in splits:
            logger.info("%s has no %s/ folder; continuing without it (it is optional)", root, split)
            continue
        _check_class_folders(root, split, splits[split])
        split_rows, split_skipped, split_ignored = _scan_split(root, split, splits[split])
        rows += split_rows
        skipped += split_skipped
        n_ignored += split_ignored

    table = _scan_table(rows)
    found = table
    if subtypes:
        table, untyped = drop_untyped(table)
        table = table.reset_index(drop=True)
        skipped += untyped
    _log_scan(root, table, skipped, n_ignored)
    # After the warnings, so that an empty class comes with the list of what was skipped.
    check_class_counts(found, root, subtypes=subtypes)
    counts = table.groupby(["kaggle_split", "label"]).size().unstack(fill_value=0)
    logger.debug("scanned %s:\n%s", root, counts.reindex(columns=list(LABELS), fill_value=0))
    return table, skipped


def _split_folders(root: Path) -> dict[str, Path]:
    """The split folders of ``root`` by lower-cased name, once ``root`` has ``train/`` and ``test/``."""
    if not root.exists():
        raise DataLayoutError(f"data folder {root} does not exist ({_expected(root)})")
    if not root.is_dir():
        raise DataLayoutError(f"data folder {root} is not a folder ({_expected(root)})")
    splits = _subdirs_by_lower_name(root)
    missing = [s for s in REQUIRED_SPLITS if s not in splits]
    if missing:
        raise DataLayoutError(
            f"{root} has no {' or '.join(m + '/' for m in missing)} folder: "
            f"{_expected(root)}{_layout_hint(root, splits)}"
        )
    return splits


def _check_class_folders(root: Path, split: str, split_dir: Path) -> None:
    """Require ``NORMAL/`` and ``PNEUMONIA/`` in a required split; only warn in ``val/``."""
    classes = _subdirs_by_lower_name(split_dir)
    for folder in CLASS_FOLDERS:
        if folder.lower() not in classes:
            message = f"{split_dir} has no {folder}/ folder ({_expected(root)})"
            if split in REQUIRED_SPLITS:
                raise DataLayoutError(message)
            logger.warning("%s; using the other class folder only", message)


def _scan_split(
    root: Path, split: str, split_dir: Path
) -> tuple[list[dict], list[tuple[str, str]], int]:
    """One split folder's image rows, its unusable image files and how many non-image files it has."""
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    n_ignored = 0
    # Image files anywhere under the split folder that are not in a class folder
    # (train/x.jpeg, train/COVID/y.jpeg) are reported rather than silently dropped.
    for path, is_image in _walk_images(split_dir):
        rel = path.relative_to(root).as_posix()
        if not is_image:
            logger.debug("ignoring non-image file %s", path)
            n_ignored += 1
            continue
        class_dir = path.relative_to(split_dir).parts[0] if path.parent != split_dir else ""
        if class_dir.upper() not in CLASS_FOLDERS:
            skipped.append((rel, f"not inside a NORMAL or PNEUMONIA folder of {split}/"))
            continue
        rows.append(_image_row(path, rel, split, class_dir))
    return rows, skipped, n_ignored


def _image_row(path: Path, rel: str, split: str, class_dir: str) -> dict:
    """One image's table row: label and patient from its names, size and mtime from ``stat``."""
    try:
        # The class comes from the class folder directly under the split folder, even
        # for files in nested sub-folders.
        label = parse_label(Path(class_dir, path.name))
    except ValueError:
        # Only a PNEUMONIA name can fail here (the folder was checked above): it is
        # still a pneumonia image, of unknown subtype.
        label = UNTYPED
    try:
        patient = parse_patient(path.name)
    except ValueError:
        # Unknown naming (not the Kaggle convention): treat each file as its own
        # patient so it still takes part; it cannot be grouped with its siblings.
        patient = f"file:{rel}"
        logger.debug("no patient id in %s; using the file itself as patient", rel)
    stat = path.stat()
    return {
        "path": str(path),
        "relpath": rel,
        "kaggle_split": split,
        "label": label,
        "target": label_to_target(label),
        "binary": label_to_binary(label),
        "patient": patient,
        "size": int(stat.st_size),
        "mtime_ns": int(stat.st_mtime_ns),
    }


def _scan_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as a table with :data:`SCAN_COLUMNS`, sorted by ``relpath``."""
    table = pd.DataFrame(rows, columns=list(SCAN_COLUMNS))
    table = table.sort_values("relpath", kind="stable").reset_index(drop=True)
    return table.astype(dict.fromkeys(["target", "binary", "size", "mtime_ns"], "int64"))


def _log_scan(root: Path, table: pd.DataFrame, skipped: list[tuple[str, str]], n_ignored: int) -> None:
    """Report what the scan ignored, skipped, and could not give a patient id."""
    if n_ignored:
        logger.debug("ignored %d non-image files under %s", n_ignored, root)
    if skipped:
        logger.warning(
            "skipping %d image file(s) under %s that cannot be labelled:\n  %s",
            len(skipped),
            root,
            "\n  ".join(f"{p}: {r}" for p, r in skipped),
        )
    no_patient = table["patient"].str.startswith("file:").sum()
    if no_patient:
        logger.warning(
            "%d image(s) under %s have no Kaggle patient id in their name; each is treated "
            "as its own patient, so patient grouping cannot protect against leakage for them",
            no_patient,
            root,
        )
