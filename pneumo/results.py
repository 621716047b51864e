"""The results cache: one folder per computation, keyed by what determines its result.

An entry lives at ``<cache root>/<task>/<key>/`` where ``key`` hashes

* the task name and the config fields that change results (not device, workers, ``force``),
* the data fingerprint (file list, sizes and content hashes, resolution, split settings),
* the source code of the modules the computation runs (not plotting or report code, so
  editing a figure never throws away a trained model).

An entry is written into a hidden temporary folder and renamed into place only when complete,
so an interrupted run (crash, Ctrl-C) never leaves an entry that looks finished. Files::

    params.json     the full config            metrics.json   headline figures
    run.json        device, versions, timings  history.csv    per-epoch training history
    tables/*.csv    result tables              arrays.npz     arrays (curves, embeddings)
    model.pt        {"state_dict", "config"}   notebook.ipynb the executed task notebook
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import logging
import os
import platform
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_root(path: str | os.PathLike | None = None) -> Path:
    """The results folder: ``path``, else ``$PNEUMO_CACHE``, else ``<project>/results``."""
    if path is not None:
        return Path(path).expanduser().resolve()
    env = os.environ.get("PNEUMO_CACHE")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "results"


def source_hash(modules: Iterable[str]) -> str:
    """Hash the source files of ``modules`` (a package counts with all its ``.py`` files)."""
    digest = hashlib.sha256()
    for name in sorted(set(modules)):
        module = importlib.import_module(name)
        origin = Path(module.__file__)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for file in files:
            digest.update(str(file.relative_to(PROJECT_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN; None reads back as "undefined"
    return value


def cache_key(task: str, params: dict[str, Any], data_fingerprint: str, code: Iterable[str]) -> str:
    """The entry key: a short hash of task, result-relevant params, data and code."""
    payload = json.dumps(
        {
            "task": task,
            "params": _jsonable(params),
            "data": data_fingerprint,
            "code": source_hash(code),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Entry:
    """A completed cache entry (read-only view).

    Parameters
    ----------
    path
        The entry folder.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Entry({str(self.path)!r})"

    @property
    def exists(self) -> bool:
        return (self.path / "params.json").is_file()

    def json(self, name: str) -> Any:
        return json.loads((self.path / f"{name}.json").read_text())

    @property
    def params(self) -> dict[str, Any]:
        return self.json("params")

    @property
    def metrics(self) -> dict[str, Any]:
        return self.json("metrics")

    @property
    def run(self) -> dict[str, Any]:
        return self.json("run")

    def table(self, name: str) -> pd.DataFrame:
        """Read ``tables/<name>.csv`` (``history`` lives at the top level)."""
        top = self.path / f"{name}.csv"
        return pd.read_csv(top if top.is_file() else self.path / "tables" / f"{name}.csv")

    def has_table(self, name: str) -> bool:
        return (self.path / f"{name}.csv").is_file() or (self.path / "tables" / f"{name}.csv").is_file()

    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "arrays.npz", allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def load_model(self) -> dict[str, Any]:
        """The saved ``{"state_dict", "config", ...}``, loaded with ``weights_only=True``."""
        import torch

        return torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)


class EntryWriter:
    """Collects an entry's files in a temporary folder; :meth:`commit` publishes it."""

    def __init__(self, final: Path):
        self.final = final
        self.tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self.phases: dict[str, float] = {}
        self._started = time.time()

    def json(self, name: str, value: Any) -> None:
        (self.tmp / f"{name}.json").write_text(json.dumps(_jsonable(value), indent=2, sort_keys=True))

    def table(self, name: str, frame: pd.DataFrame, *, top: bool = False) -> None:
        folder = self.tmp if top else self.tmp / "tables"
        folder.mkdir(exist_ok=True)
        frame.to_csv(folder / f"{name}.csv", index=False)

    def arrays(self, **arrays: np.ndarray) -> None:
        np.savez_compressed(self.tmp / "arrays.npz", **arrays)

    def model(self, state_dict: dict, config: dict[str, Any], **extra: Any) -> None:
        import torch

        cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
        torch.save({"state_dict": cpu_state, "config": _jsonable(config), **_jsonable(extra)},
                   self.tmp / "model.pt")

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the computation for the run record."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0) + time.perf_counter() - start, 3)

    def commit(self, run_info: dict[str, Any] | None = None) -> Entry:
        """Write the run record and atomically rename the folder into place."""
        self.json("run", {**run_record(), "phases_s": self.phases,
                          "wall_s": round(time.time() - self._started, 3), **(run_info or {})})
        if self.final.exists():  # a forced recompute replaces the old entry
            trash = self.final.parent / f".old-{self.final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(self.final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(self.tmp, self.final)
        return Entry(self.final)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_record() -> dict[str, Any]:
    """Where and with what a result was computed."""
    import torch

    record = {
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for package in ("numpy", "sklearn", "torchvision", "torchxrayvision", "openTSNE", "shap"):
        with contextlib.suppress(Exception):
            record[package] = importlib.import_module(package).__version__
    return record


class ResultCache:
    """Entries of every task under one root folder.

    Parameters
    ----------
    root
        The cache folder; see :func:`cache_root`.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = cache_root(root)

    def entry(self, task: str, key: str) -> Entry:
        return Entry(self.root / task / key)

    @contextlib.contextmanager
    def write(self, task: str, key: str) -> Iterator[EntryWriter]:
        """Write an entry: on an exception or Ctrl-C nothing is published.

        Examples
        --------
        >>> with cache.write("binary", key) as out:          # doctest: +SKIP
        ...     out.json("metrics", {"roc_auc": 0.99})
        ...     out.json("params", config.to_dict())
        """
        writer = EntryWriter(self.root / task / key)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        if not (writer.tmp / "params.json").is_file():
            writer.abort()
            raise RuntimeError(f"entry {task}/{key} was written without params.json")
        writer.commit()
