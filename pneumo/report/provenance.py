"""Is the data's ``test/`` folder the collection's official test split? Checked, not assumed.

Public copies of the Kaggle collection differ: many are resized, some keep the official
test split, some (like the one this project was developed on) carve ``test/`` out of the
official training split. Image size says nothing about which; the folder's composition and
file names do. The official test split of Kermany et al. (2018) holds 624 images: 234
normal, 242 bacterial and 148 viral. Equal counts alone are not proof (a carve-out can copy
them), so the check also asks for file names that the official split is known to contain.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

__all__ = ["OFFICIAL_TEST_COUNTS", "OFFICIAL_TEST_FILES", "Provenance", "split_provenance", "entry_provenance"]

#: Images per class in the official test split (Kermany et al. 2018, Mendeley Data v2).
OFFICIAL_TEST_COUNTS = {"normal": 234, "bacterial": 242, "viral": 148}

#: Files of the official test split, as ``<CLASS folder>/<file name>``: the split's first
#: normal and pneumonia films, named in many public uses of the collection's ``test/``.
OFFICIAL_TEST_FILES = (
    "NORMAL/IM-0001-0001.jpeg",
    "PNEUMONIA/person1_virus_6.jpeg",
    "PNEUMONIA/person100_bacteria_475.jpeg",
    "PNEUMONIA/person101_bacteria_486.jpeg",
)


@dataclasses.dataclass(frozen=True)
class Provenance:
    """The outcome of :func:`split_provenance`.

    Attributes
    ----------
    official
        True when the test folder matches the official split, False when it does not, None
        for synthetic data (no such question).
    reason
        What the check found, as a clause for a sentence (no final full stop).
    """

    official: bool | None
    reason: str


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{int(counts.get(c, 0)):,} {c}" for c in OFFICIAL_TEST_COUNTS)


def split_provenance(test_counts: Mapping[str, int], test_relpaths: Iterable[str], *,
                          synthetic: bool = False) -> Provenance:
    """Compare a test folder with the official test split by composition and file names.

    Parameters
    ----------
    test_counts
        Images per class (``normal``, ``bacterial``, ``viral``) in the data's ``test/``
        folder as found (before any cleaning).
    test_relpaths
        The test images' paths relative to the data root (``test/NORMAL/IM-0001-0001.jpeg``).
    synthetic
        True for the package's phantom images.

    Returns
    -------
    Provenance
        ``official`` and the reason, e.g. ``Provenance(False, "its 624 images have the
        official composition, but none of the official split's known files ...")``.
    """
    if synthetic:
        return Provenance(None, "the images are synthetic phantoms")
    names = {"/".join(str(p).replace("\\", "/").split("/")[-2:]) for p in test_relpaths}
    present = [f for f in OFFICIAL_TEST_FILES if f in names]
    same_counts = all(int(test_counts.get(c, 0)) == n for c, n in OFFICIAL_TEST_COUNTS.items())
    found = f"{_counts_text(test_counts)} images"
    official = _counts_text(OFFICIAL_TEST_COUNTS)
    if same_counts and len(present) == len(OFFICIAL_TEST_FILES):
        return Provenance(True, f"it holds {found}, the official split's composition, and the official "
                                f"split's known files (such as `{OFFICIAL_TEST_FILES[0]}`)")
    if same_counts:
        return Provenance(False, f"it has the official split's composition ({found}) but "
                                 f"{'none' if not present else 'only some'} of the official split's known "
                                 f"files (such as `{OFFICIAL_TEST_FILES[0]}`), so it was drawn from "
                                 "elsewhere in the collection")
    return Provenance(False, f"it holds {found}, where the official split holds {official}")


def entry_provenance(entry) -> Provenance:
    """:func:`split_provenance` of the data a Task 1 entry was computed on.

    Reads the test folder's class counts as found (``data_summary.json``) and the test
    images' paths (the ``predictions`` table) of ``entry`` (a :class:`pneumo.results.Entry`
    or :class:`pneumo.report.ReportEntry`).
    """
    predictions = entry.table("predictions")
    return split_provenance(entry.json("data_summary")["kaggle_counts"].get("test", {}),
                            predictions.loc[predictions["split"] == "test", "relpath"],
                            synthetic=bool(entry.metrics["data_synthetic"]))
