"""The report's inputs: the cache entries of the tasks and the images they were computed on.

Every section reads its own entries through :func:`task_entry` (no globals shared between
sections); a read that fails because the entry lacks a file raises
:class:`ReportInputError`, one line that names the entry and the command that recomputes it.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from pneumo.errors import UserError
from pneumo.report.text import plural
from pneumo.results import PROJECT_ROOT, Entry

__all__ = ["ReportInputError", "ReportEntry", "report_profile", "task_entry", "where", "final_variant",
           "task_dataset", "images_for", "load_images", "sample_images", "misclassified",
           "curves_from_arrays", "platform_text"]


class ReportInputError(UserError):
    """A cache entry lacks what the report reads from it (one line: the entry and the fix)."""

    def _render_traceback_(self) -> list[str]:
        # IPython (Quarto's and papermill's kernel) shows this instead of a traceback.
        return [f"error: {self}"]


def report_profile() -> str | None:
    """The compute profile the report runs with: ``$PNEUMO_PROFILE``, else None (automatic)."""
    return os.environ.get("PNEUMO_PROFILE") or None


def recompute_command(task: str, entry: Entry | None = None) -> str:
    """The command line that recomputes a task's entry with the same profile."""
    profile = None
    if entry is not None:
        try:
            profile = Entry(entry.path).params.get("profile")
        except (UserError, OSError, ValueError):
            profile = None
    profile = profile or report_profile()
    return f"python tasks/{task}.py" + (f" --profile {profile}" if profile else "") + " --force true"


class ReportEntry(Entry):
    """A task's cache entry as the report reads it.

    :class:`pneumo.results.Entry` (same reading methods, the same manifest checks), whose
    reads fail with :class:`ReportInputError`: one line that names the entry and the command
    that recomputes it.

    Parameters
    ----------
    entry
        The cache entry (or its folder).
    task
        The task that wrote it (``"binary"``, ...), for the recompute command.
    """

    def __init__(self, entry: Entry | str | os.PathLike, task: str):
        super().__init__(getattr(entry, "path", entry))
        self.task = task

    def __repr__(self) -> str:
        return f"ReportEntry({self.task!r}, {str(self.path)!r})"

    def _read(self, name: str, parse):
        try:
            return super()._read(name, parse)
        except (UserError, OSError, ValueError, KeyError) as error:
            raise ReportInputError(
                f"the {self.task} entry {where(self)} lacks a readable {name} ({type(error).__name__}); "
                f"recompute it with: {recompute_command(self.task, self)}") from None


@functools.lru_cache(maxsize=None)
def _computed(name: str, profile: str | None) -> Entry:
    from pneumo.runner import run_task

    return run_task(name, profile)


def task_entry(name: str) -> ReportEntry:
    """A task's entry for the report's profile (``$PNEUMO_PROFILE``), computed when missing.

    Looked up once per process, so the sections of one render share the lookups; when
    ``python -m pneumo.report`` has just computed the entries, it names them in
    ``$PNEUMO_REPORT_ENTRIES`` and they are read without a lookup.
    """
    named = json.loads(os.environ.get("PNEUMO_REPORT_ENTRIES") or "{}")
    if name in named and Entry(named[name]).exists:
        return ReportEntry(Entry(named[name]), name)
    return ReportEntry(_computed(name, report_profile()), name)


def where(entry: Entry | ReportEntry) -> str:
    """An entry's folder, relative to the project when it lives inside it."""
    try:
        return str(entry.path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(entry.path)


def task_dataset(entry: Entry | ReportEntry):
    """The decoded data set a Task 1 entry was computed on, at its final model's resolution.

    Uses the entry's own data and split settings, so the images line up with its
    ``predictions`` table by ``relpath``; the decode cache makes this a quick load. See
    :func:`pneumo.upstream.entry_dataset` (which also checks the data fingerprint).
    """
    return _dataset(entry.path)


@functools.lru_cache(maxsize=4)
def _dataset(path: Path):
    # One decoded data set per entry and process: several sections show its images. The
    # folder the entry was computed on, where it still exists; else the usual search
    # ($PNEUMO_DATA, data/chest_xray, phantoms), e.g. for entries copied from another machine.
    from pneumo.upstream import entry_dataset

    entry = Entry(path)
    recorded = entry.json("data_summary").get("root")
    return entry_dataset(entry, data=recorded if recorded and Path(recorded).is_dir() else None)


def images_for(dataset, relpaths: Iterable[str]) -> list[np.ndarray]:
    """The decoded images (H, W) of ``relpaths`` from a loaded data set (KeyError if absent)."""
    position = {r: i for i, r in enumerate(dataset.table["relpath"])}
    out = []
    for r in relpaths:
        if r not in position:
            raise KeyError(f"{r!r} is not in the data set at {dataset.root}")
        out.append(dataset.images[position[r]])
    return out


def load_images(relpaths: Iterable[str], root: str | os.PathLike, *, resolution: int = 224) -> list[np.ndarray]:
    """Read image files and decode them as the pipeline does (grey, centre square, resized).

    For figures that want more pixels than the training resolution; raises on a file that
    cannot be read.
    """
    from pneumo.data.decode import decode_bytes

    return [decode_bytes(Path(root, r).read_bytes(), resolution)[0] for r in relpaths]


def sample_images(dataset, *, per_class: int = 5, split: str = "train", seed: int = 0,
                  resolution: int | None = 224) -> dict[str, list[np.ndarray]]:
    """A few random images per class (one per patient), for the data overview figure.

    ``resolution`` re-reads the files at that size (None: the data set's own arrays).
    """
    from pneumo.data import CLASSES

    rng = np.random.default_rng(seed)
    rows = dataset.table[dataset.table["split"] == split]
    out: dict[str, list[np.ndarray]] = {}
    for label in CLASSES:
        part = rows[rows["label"] == label].drop_duplicates("patient")
        take = part.iloc[np.sort(rng.choice(len(part), size=min(per_class, len(part)), replace=False))]
        relpaths = take["relpath"].tolist()
        out[label] = (images_for(dataset, relpaths) if resolution is None
                      else load_images(relpaths, dataset.root, resolution=resolution))
    return out


def misclassified(predictions: pd.DataFrame, classes: Sequence[str], *, split: str = "test",
                  limit: int = 12, threshold: float | None = None) -> pd.DataFrame:
    """Wrongly classified images of a split, the most confident mistakes first.

    Parameters
    ----------
    predictions
        The task's ``predictions`` table (``split``, ``relpath``, ``target``, ``predicted``,
        ``p_<class>``).
    classes
        Class names in target order.
    threshold
        Binary tasks: the decision threshold on ``p_<classes[1]>``. The shown probability is
        then that of the positive class and mistakes are ranked by their distance from the
        threshold; otherwise the probability of the predicted class ranks them.

    Returns
    -------
    pandas.DataFrame
        The wrong rows with ``true`` and ``pred`` (class names) and ``shown`` (the probability
        to print), at most ``limit`` rows.
    """
    rows = predictions[predictions["split"] == split].copy()
    rows["true"] = [classes[int(t)] for t in rows["target"]]
    rows["pred"] = [classes[int(p)] for p in rows["predicted"]]
    if threshold is not None:
        if len(classes) != 2:
            raise ValueError("a threshold only applies to a binary task")
        rows["shown"] = rows[f"p_{classes[1]}"]
        rank = (rows["shown"] - threshold).abs()
    else:
        proba = rows[[f"p_{c}" for c in classes]].to_numpy()
        rows["shown"] = proba[np.arange(len(rows)), rows["predicted"].astype(int).to_numpy()]
        rank = rows["shown"]
    wrong = rows.assign(_rank=rank)[rows["target"] != rows["predicted"]]
    return wrong.sort_values("_rank", ascending=False).drop(columns="_rank").head(limit)


def final_variant(entry: Entry | ReportEntry) -> ReportEntry:
    """The grid-variant entry that trained a task's final model (its ``run.json`` says where).

    Falls back to the task entry itself when the variant folder is not in this cache (an
    entry copied without its variants).
    """
    key = entry.metrics.get("variant_entry")
    variant = Entry(entry.path.parent.parent / f"{entry.path.parent.name}-variant" / str(key))
    task = getattr(entry, "task", entry.path.parent.name)
    return ReportEntry(variant if key and variant.exists else entry, task)


def curves_from_arrays(arrays: Mapping[str, np.ndarray], prefixes: Mapping[str, str],
                       aucs: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """``{label: {"fpr", "tpr", "precision", "recall", ["auc"]}}`` from ``arrays.npz`` keys.

    Parameters
    ----------
    arrays
        ``entry.arrays()``.
    prefixes
        ``{curve label: array prefix}``, e.g. ``{"pneumonia": "test"}`` reads ``test_fpr`` ...
    aucs
        Optional headline AUC per label for the legend (else computed from the points).
    """
    out: dict[str, dict[str, Any]] = {}
    for label, prefix in prefixes.items():
        keys = [f"{prefix}_{k}" for k in ("fpr", "tpr", "precision", "recall")]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise KeyError(f"arrays lack {missing} (have {sorted(arrays)})")
        out[label] = {k: arrays[f"{prefix}_{k}"] for k in ("fpr", "tpr", "precision", "recall")}
        if aucs and label in aucs:
            out[label]["auc"] = aucs[label]
    return out


def platform_text(entry: Entry) -> str:
    """Where an entry was computed: ``"one NVIDIA H100 GPU with PyTorch 2.x and Python 3.x (Linux)"``."""
    run = entry.run
    threads = run.get("cpu_threads")
    device = (f"one {run['cuda']} GPU" if run.get("cuda")
              else f"the CPU ({plural(threads, 'thread') if threads is not None else '? threads'})")
    system = str(run.get("platform", "?")).split("-")[0]
    return f"{device} with PyTorch {run.get('torch', '?')} and Python {run.get('python', '?')} ({system})"


