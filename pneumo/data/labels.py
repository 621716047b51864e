"""Class labels and patient ids parsed from Kaggle chest X-ray file names.

The Kaggle "Chest X-Ray Images (Pneumonia)" collection (Kermany et al.) encodes everything
we know about an image in its path::

    .../NORMAL/IM-0115-0001.jpeg              normal, patient IM-0115
    .../NORMAL/NORMAL2-IM-0381-0001.jpeg      normal, patient NORMAL2-IM-0381
    .../PNEUMONIA/person1_bacteria_1.jpeg     bacterial pneumonia, patient person1
    .../PNEUMONIA/person10_virus_35.jpeg      viral pneumonia, patient person10

The class folder decides normal vs pneumonia; for pneumonia the words ``bacteria`` /
``virus`` in the file name decide the sub-type.  Everything is case-insensitive because the
collection has been re-shared with re-cased names (``Normal/``, ``.JPEG``) more than once.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath

__all__ = [
    "CLASSES",
    "BINARY_CLASSES",
    "CLASS_FOLDERS",
    "UNTYPED",
    "LABELS",
    "parse_label",
    "parse_patient",
    "label_to_target",
    "label_to_binary",
]

#: The three-way target, in target-index order (0, 1, 2).
CLASSES: tuple[str, ...] = ("normal", "bacterial", "viral")

#: The binary target, in target-index order: 0 = normal, 1 = pneumonia (bacterial or viral).
BINARY_CLASSES: tuple[str, ...] = ("normal", "pneumonia")

#: Label of a PNEUMONIA image whose file name names neither subtype: usable where only normal vs
#: pneumonia matters (Task 1a), never for the three-way target (its ``target`` is -1).
UNTYPED: str = "pneumonia"

#: Every label a table row can carry: the three classes, then :data:`UNTYPED`.
LABELS: tuple[str, ...] = (*CLASSES, UNTYPED)

#: Class folder names of the Kaggle layout (matched case-insensitively).
CLASS_FOLDERS: tuple[str, ...] = ("NORMAL", "PNEUMONIA")

# Patient ids.  Pneumonia images are ``person<digits>_...``; normal images are
# ``IM-<digits>-<digits>`` or ``NORMAL2-IM-<digits>-<digits>`` (a few carry an extra
# ``-0002`` suffix, e.g. ``NORMAL2-IM-0587-0001-0002``: the patient is still the first part).
_PERSON_RE = re.compile(r"^(person)(\d+)(?=[_\-.]|$)", re.IGNORECASE)
_NORMAL_RE = re.compile(r"^((?:normal2-)?im)-(\d+)(?=[_\-.]|$)", re.IGNORECASE)


def _name_and_folder(path: str | os.PathLike) -> tuple[str, str]:
    """File name and upper-cased parent folder name of ``path`` (either may be '')."""
    p = PurePath(os.fspath(path))
    return p.name, p.parent.name.upper()


def parse_label(path: str | os.PathLike) -> str:
    """Three-way class of an image from its class folder and file name.

    Parameters
    ----------
    path
        Path of the image; at least ``<CLASS FOLDER>/<file name>``.  The parent folder must be
        ``NORMAL`` or ``PNEUMONIA`` (any case).

    Returns
    -------
    str
        ``"normal"`` for the NORMAL folder; for the PNEUMONIA folder ``"bacterial"`` when the
        file name contains ``bacteria`` and ``"viral"`` when it contains ``virus``
        (case-insensitive).

    Raises
    ------
    ValueError
        When the parent folder is neither class folder, or a PNEUMONIA file name names neither
        or both of ``bacteria`` / ``virus``.  The message names the file.

    Examples
    --------
    >>> parse_label("train/PNEUMONIA/person10_virus_35.jpeg")
    'viral'
    >>> parse_label("test/normal/NORMAL2-IM-0381-0001.JPEG")
    'normal'
    """
    name, folder = _name_and_folder(path)
    if folder == "NORMAL":
        return "normal"
    if folder != "PNEUMONIA":
        raise ValueError(
            f"cannot tell the class of {os.fspath(path)!r}: its folder must be NORMAL or "
            f"PNEUMONIA, got {folder or '(none)'!r}"
        )
    lowered = name.lower()
    bacterial, viral = "bacteria" in lowered, "virus" in lowered
    if bacterial and not viral:
        return "bacterial"
    if viral and not bacterial:
        return "viral"
    raise ValueError(
        f"cannot tell bacterial from viral pneumonia for {os.fspath(path)!r}: the file name "
        "must contain exactly one of 'bacteria' or 'virus' (e.g. person1_bacteria_1.jpeg)"
    )


def parse_patient(path: str | os.PathLike) -> str:
    """Patient id of an image from its file name.

    Parameters
    ----------
    path
        Path or bare file name of the image.

    Returns
    -------
    str
        ``"person<digits>"`` (lower case) for pneumonia images, ``"IM-<digits>"`` or
        ``"NORMAL2-IM-<digits>"`` (upper case, digits as written) for normal images.  The
        normalised case makes ``Person1_virus_2.JPEG`` and ``person1_bacteria_1.jpeg`` the same
        patient.

    Raises
    ------
    ValueError
        When the name follows neither convention; the message names the file.

    Examples
    --------
    >>> parse_patient("PNEUMONIA/person1_bacteria_1.jpeg")
    'person1'
    >>> parse_patient("NORMAL/NORMAL2-IM-0381-0001.jpeg")
    'NORMAL2-IM-0381'
    """
    name, _ = _name_and_folder(path)
    m = _PERSON_RE.match(name)
    if m:
        return f"person{m.group(2)}"
    m = _NORMAL_RE.match(name)
    if m:
        return f"{m.group(1).upper()}-{m.group(2)}"
    raise ValueError(
        f"cannot find the patient id in {os.fspath(path)!r}: expected a name like "
        "'person123_bacteria_4.jpeg', 'IM-0115-0001.jpeg' or 'NORMAL2-IM-0381-0001.jpeg'"
    )


def label_to_target(label: str) -> int:
    """Index of ``label`` in :data:`CLASSES` (0 normal, 1 bacterial, 2 viral); -1 for :data:`UNTYPED`."""
    if label == UNTYPED:
        return -1
    try:
        return CLASSES.index(label)
    except ValueError:
        raise ValueError(f"unknown label {label!r}; expected one of {LABELS}") from None


def label_to_binary(label: str) -> int:
    """Binary target of ``label``: 0 for normal, 1 for pneumonia (bacterial, viral or untyped)."""
    return int(label_to_target(label) != 0)
