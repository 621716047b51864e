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
    manifest.json   every other file with its size and SHA-256, written last

Readers trust an entry only when every file matches ``manifest.json``; a damaged one (a
truncated file, an edited ``model.pt``) is reported with its path and counts as absent, so it
is computed again and replaced, never used. Writers hold a lock per key (``.locks/`` under the
root) from the look-up to the publication: a second run of the same computation waits for the
first and then reuses its entry instead of repeating it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import pickle
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

from pneumo._entry_files import MANIFEST, Damaged, check_all, check_file, file_sha256, manifest_at, publish, read_at
from pneumo.errors import CacheError

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


class CorruptEntryError(CacheError):
    """A cache entry's files do not match its manifest, or cannot be read."""


#: Problems already logged, so that a damaged entry is reported once per process.
_reported: set[str] = set()


class Entry:
    """A cache entry (read-only view); it counts as existing only when complete and intact.

    Every read checks the file against the entry's ``manifest.json`` and raises
    :class:`CorruptEntryError`, naming the entry, when it does not match.

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
    def key(self) -> str:
        """The cache key the entry is stored under (its folder's name)."""
        return self.path.name

    def _at_one_version(self, fn):
        """``fn(folder_fd)`` on the entry folder opened once.

        Files opened through the descriptor belong to one version of the entry even while a
        forced recompute swaps in another; when ``fn`` finds a problem and the folder at
        :attr:`path` was replaced meanwhile, the new version is checked instead.

        Raises
        ------
        FileNotFoundError, NotADirectoryError
            There is no entry.
        Damaged
            The entry does not match its manifest.
        """
        for _ in range(5):
            folder = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                inode = os.fstat(folder).st_ino
                try:
                    return fn(folder)
                except FileNotFoundError as error:
                    damaged = Damaged(f"{error.filename} is missing")
                except OSError as error:
                    damaged = Damaged(f"{error.filename} cannot be read ({error.strerror or error})")
                except Damaged as error:
                    damaged = error
            finally:
                os.close(folder)
            try:
                replaced = os.stat(self.path).st_ino != inode
            except OSError:
                replaced = True
            if not replaced:
                break
        raise damaged

    def verify(self) -> None:
        """Check every file of the entry against its manifest (size and SHA-256).

        Raises
        ------
        CorruptEntryError
            When the entry is absent, unfinished or damaged; the message names the entry, the
            file and the fix.
        """
        self._at(check_all)

    def _at(self, fn):
        """:meth:`_at_one_version`, its errors as :class:`CorruptEntryError`."""
        try:
            return self._at_one_version(fn)
        except (FileNotFoundError, NotADirectoryError):
            raise CorruptEntryError(f"no cache entry at {self.path}; run the task to compute it") from None
        except Damaged as error:
            raise CorruptEntryError(f"damaged cache entry {self.path}: {error}; run the task again "
                                    "to recompute it") from None

    @property
    def exists(self) -> bool:
        """Whether the entry is complete: every file of its manifest there, same size and hash.

        A damaged entry is logged once, with its path and the reason, and counts as absent:
        the computation runs again and replaces it.
        """
        if not self.path.is_dir():
            return False
        try:
            self.verify()
        except CorruptEntryError as error:
            if self.path.is_dir() and str(error) not in _reported:
                _reported.add(str(error))
                log.warning("%s (it counts as absent)", error)
            return False
        return True

    def _read(self, name: str, parse):
        """``parse(bytes)`` of the entry's file ``name``, checked against the manifest first."""

        def checked(folder: int) -> bytes:
            record = manifest_at(folder).get(name)
            data = read_at(folder, name)
            check_file(name, record, len(data), lambda: hashlib.sha256(data).hexdigest())
            return data

        data = self._at(checked)
        try:
            return parse(data)
        except CorruptEntryError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever the parser says, the file is bad
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise CorruptEntryError(f"cannot read {self.path / name} ({type(error).__name__}: "
                                    f"{first_line}); run the task again to recompute the entry") from None

    def json(self, name: str) -> Any:
        return self._read(f"{name}.json", json.loads)

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
        rel = f"{name}.csv" if (self.path / f"{name}.csv").is_file() else f"tables/{name}.csv"
        return self._read(rel, lambda data: pd.read_csv(io.BytesIO(data)))

    def has_table(self, name: str) -> bool:
        return (self.path / f"{name}.csv").is_file() or (self.path / "tables" / f"{name}.csv").is_file()

    def arrays(self) -> dict[str, np.ndarray]:
        def parse(data: bytes) -> dict[str, np.ndarray]:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}

        return self._read("arrays.npz", parse)

    def load_model(self) -> dict[str, Any]:
        """The saved ``{"state_dict", "config", ...}``, loaded with ``weights_only=True``.

        A file that is not plain weights (a pickle that would run code) is refused with
        :class:`CorruptEntryError`, as is one that differs from what was written.
        """
        import torch

        def parse(data: bytes) -> dict[str, Any]:
            try:
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                # torch's own message goes on to explain how to load the file anyway; this one
                # must not be loaded any other way.
                raise CorruptEntryError(
                    f"{self.path / 'model.pt'} is not plain weights: torch.load(weights_only=True) "
                    "refused it, as unpickling it could run code; do not load it otherwise, delete "
                    f"{self.path} and run the task again") from None

        return self._read("model.pt", parse)


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

    def file(self, name: str, source: str | os.PathLike) -> None:
        """Copy a file, or a folder with everything under it, into the entry as ``name``."""
        source, target = Path(source), self.tmp / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)

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
        """Write the run record and the manifest, then move the folder into place."""
        self.json("run", {**run_record(), "phases_s": self.phases,
                          "wall_s": round(time.time() - self._started, 3), **(run_info or {})})
        files = sorted(p for p in self.tmp.rglob("*") if p.is_file())
        manifest = {}
        for path in files:
            with open(path, "rb") as fh:
                manifest[path.relative_to(self.tmp).as_posix()] = {"size": path.stat().st_size,
                                                                   "sha256": file_sha256(fh)}
        (self.tmp / MANIFEST).write_text(json.dumps({"files": manifest}, indent=1, sort_keys=True))
        publish(self.tmp, self.final)
        return Entry(self.final)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


#: Packages named in each run record, as ``{record key: distribution name}``.
_RECORDED_PACKAGES = {"numpy": "numpy", "sklearn": "scikit-learn", "torchvision": "torchvision",
                      "torchxrayvision": "torchxrayvision", "openTSNE": "openTSNE", "shap": "shap"}


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
    # Versions from the installed distributions' metadata: importing the packages to read
    # __version__ cost ~8 s in every task kernel (shap and torchxrayvision import slowly).
    for key, distribution in _RECORDED_PACKAGES.items():
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            record[key] = importlib.metadata.version(distribution)
    return record


class ResultCache:
    """Entries of every task under one root folder.

    Parameters
    ----------
    root
        The cache folder; see :func:`cache_root`.
    writable
        Check now that entries can be written there (:meth:`require_writable`): a run that is
        going to compute then fails at once, not after its slow work.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, writable: bool = False):
        self.root = cache_root(root)
        if writable:
            self.require_writable()

    def entry(self, task: str, key: str) -> Entry:
        return Entry(self.root / task / key)

    def lookup(self, task: str, params: dict[str, Any], data_fingerprint: str, code: Iterable[str]) -> Entry:
        """The entry of a computation's inputs (it may not exist yet): the one cache lookup.

        Parameters
        ----------
        task
            The entry's kind (a task name, or e.g. ``"binary-variant"``).
        params, data_fingerprint, code
            As :func:`cache_key`: the result-relevant settings, the data, and the modules
            whose source decides the numbers (:attr:`pneumo.runner.TaskSpec.code`).

        Returns
        -------
        Entry
            ``entry.key`` is the key to :meth:`write` it under; a hit is logged.
        """
        entry = self.entry(task, cache_key(task, params, data_fingerprint, code))
        if entry.exists:
            log.info("%s: cached result at %s", task, entry.path)
        return entry

    def require_writable(self) -> None:
        """Raise :class:`CacheError` when entries cannot be written under the root.

        Only looks (``os.access`` on the nearest existing folder); nothing is created, so the
        check is safe even where the root is a mistake, e.g. inside the data folder.
        """
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        fix = "set --cache or $PNEUMO_CACHE to a writable folder"
        if not folder.is_dir():
            raise CacheError(f"the results folder {self.root} cannot be created: {folder} is a "
                             f"file; {fix}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CacheError(f"the results folder {self.root} is not writable ({folder} is "
                             f"read-only for this user); {fix}")

    @contextlib.contextmanager
    def _lock(self, task: str, key: str) -> Iterator[None]:
        """Hold the key's lock file (``fcntl.flock``, released by the OS if the process dies)."""
        path = self.root / ".locks" / task / f"{key}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise CacheError(f"cannot write to the results folder {self.root} ({error.strerror}); "
                             "set --cache or $PNEUMO_CACHE to a writable folder") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another process is computing %s/%s; waiting for it", task, key)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock; the file stays (unlinking it would race)

    @contextlib.contextmanager
    def write(self, task: str, key: str, *, reuse: bool = False) -> Iterator[EntryWriter | None]:
        """Compute an entry under its key's lock and publish it; on any failure publish nothing.

        The lock is held for the whole block, so two processes never compute one entry at
        once. With ``reuse``, an intact entry found once the lock is held (computed meanwhile by
        the process that held it) is not computed again: the block gets None instead of a
        writer and should return :meth:`entry`. On an exception or Ctrl-C the temporary folder
        is removed and nothing is published.

        Examples
        --------
        >>> with cache.write("binary", key, reuse=True) as out:   # doctest: +SKIP
        ...     if out is None:
        ...         return cache.entry("binary", key)
        ...     out.json("metrics", {"roc_auc": 0.99})
        ...     out.json("params", config.to_dict())
        """
        with self._lock(task, key):
            if reuse and self.entry(task, key).exists:
                log.info("%s/%s was computed by another process meanwhile; reusing it", task, key)
                yield None
                return
            # Holding the lock, no other writer of this key is alive: what a killed one left
            # behind can go.
            for leftover in (self.root / task).glob(f".*-{key}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            writer = EntryWriter(self.root / task / key)
            try:
                yield writer
                if not (writer.tmp / "params.json").is_file():
                    raise RuntimeError(f"entry {task}/{key} was written without params.json")
                writer.commit()
            except BaseException:
                writer.abort()
                raise
