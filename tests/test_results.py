"""The results cache: keys, atomic entries, hits and invalidation, damage and concurrency."""

import importlib
import json
import logging
import multiprocessing
import os
import re
import time

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pneumo.results as results
from pneumo._entry_files import file_sha256
from pneumo.errors import CacheError
from pneumo.results import CorruptEntryError, Entry, ResultCache, cache_key, source_hash
from pneumo.runner import TASK_REGISTRY


def _write(cache, key="k1", fail=False):
    with cache.write("demo", key) as out:
        out.json("params", {"a": 1})
        out.json("metrics", {"auc": 0.9, "undefined": float("nan")})
        out.table("scores", pd.DataFrame({"x": [1, 2]}))
        out.arrays(curve=np.arange(3.0))
        out.model({"w": torch.ones(2)}, {"width": 8})
        if fail:
            raise KeyboardInterrupt
    return cache.entry("demo", key)


def test_entry_roundtrip(tmp_path):
    entry = _write(ResultCache(tmp_path))
    assert entry.exists
    assert entry.metrics == {"auc": 0.9, "undefined": None}
    assert entry.table("scores")["x"].tolist() == [1, 2]
    assert entry.arrays()["curve"].tolist() == [0.0, 1.0, 2.0]
    saved = entry.load_model()
    assert saved["config"] == {"width": 8} and torch.equal(saved["state_dict"]["w"], torch.ones(2))
    run = entry.run
    assert run["torch"] == torch.__version__ and "wall_s" in run
    listed = json.loads((entry.path / "manifest.json").read_text())["files"]
    assert set(listed) == {"params.json", "metrics.json", "run.json", "tables/scores.csv",
                           "arrays.npz", "model.pt"}
    assert listed["model.pt"]["size"] == (entry.path / "model.pt").stat().st_size


def test_interrupted_write_leaves_no_entry(tmp_path):
    cache = ResultCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _write(cache, fail=True)
    assert not cache.entry("demo", "k1").exists
    assert list((tmp_path / "demo").iterdir()) == []  # the temporary folder is gone too


def test_entry_without_params_is_refused(tmp_path):
    cache = ResultCache(tmp_path)
    with pytest.raises(RuntimeError, match="params.json"):
        with cache.write("demo", "k2") as out:
            out.json("metrics", {})
    assert not cache.entry("demo", "k2").exists


def test_forced_rewrite_replaces_entry(tmp_path):
    cache = ResultCache(tmp_path)
    _write(cache)
    with cache.write("demo", "k1") as out:
        out.json("params", {"a": 2})
    assert cache.entry("demo", "k1").params == {"a": 2}
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["k1"]


def test_key_depends_on_params_data_and_code():
    base = cache_key("t", {"a": 1}, "data1", ["pneumo.metrics"])
    assert base == cache_key("t", {"a": 1}, "data1", ["pneumo.metrics"])
    assert base != cache_key("t", {"a": 2}, "data1", ["pneumo.metrics"])
    assert base != cache_key("t", {"a": 1}, "data2", ["pneumo.metrics"])
    assert base != cache_key("t", {"a": 1}, "data1", ["pneumo.metrics", "pneumo.config"])


#: pneumo modules that cannot change a task's numbers (settings enter the key as params).
NOT_NUMBERS = ("pneumo.config", "pneumo.errors", "pneumo.results", "pneumo.runner", "pneumo.plots", "pneumo.report")


@pytest.mark.parametrize("task", list(TASK_REGISTRY))
def test_task_key_covers_the_code_its_module_imports(task):
    """Editing a module a task computes with must recompute it; plotting and report code must not."""
    spec = TASK_REGISTRY[task]
    module = importlib.import_module(spec.run_path.split(":")[0])
    files = [Path(module.__file__)]
    if files[0].name == "__init__.py":
        files = sorted(files[0].parent.rglob("*.py"))
    imported = {m for f in files for m in re.findall(r"^\s*(?:from|import) (pneumo(?:\.\w+)?)", f.read_text(), re.M)}
    needed = {m for m in imported if not m.startswith(NOT_NUMBERS) and m != "pneumo"}
    assert needed <= set(spec.code), f"{task}: {sorted(needed - set(spec.code))} missing from its code"
    assert not [m for m in spec.code if m.startswith(NOT_NUMBERS)]
    assert source_hash(spec.code) == source_hash(list(reversed(spec.code)))


def test_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    assert ResultCache().root == tmp_path.resolve()


# -- damaged entries ------------------------------------------------------------------------
def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [
    _truncate,                                    # a crash or a full disk mid-copy
    lambda path: path.write_bytes(b""),           # an emptied file
    lambda path: path.unlink(),                   # a lost file
    lambda path: path.write_text(path.read_text().replace("0.9", "0.8")),  # same size, edited
])
def test_damaged_entry_is_reported_with_its_path_and_recomputed(tmp_path, caplog, damage):
    cache = ResultCache(tmp_path)
    entry = _write(cache)
    damage(entry.path / "metrics.json")
    with caplog.at_level(logging.WARNING, logger="pneumo.results"):
        assert not entry.exists
    assert f"damaged cache entry {entry.path}: metrics.json" in caplog.text
    with pytest.raises(CorruptEntryError, match=rf"damaged cache entry {entry.path}: metrics.json"):
        entry.metrics
    with cache.write("demo", "k1", reuse=True) as out:
        assert out is not None  # damaged is absent: computed again ...
        out.json("params", {"a": 1})
        out.json("metrics", {"auc": 0.7})
    assert entry.exists and entry.metrics == {"auc": 0.7}  # ... and replaced


def test_unparsable_file_names_the_file(tmp_path):
    """A file that matches the manifest but cannot be parsed is reported by path, not bare."""
    cache = ResultCache(tmp_path)
    with cache.write("demo", "k1") as out:
        out.json("params", {"a": 1})
        (out.tmp / "metrics.json").write_text('{"auc": 0.')
    entry = cache.entry("demo", "k1")
    with pytest.raises(CorruptEntryError, match=rf"cannot read {entry.path}/metrics.json \(JSONDecodeError"):
        entry.metrics


class _Payload:
    """Unpickling this creates ``path``: stands for any code a tampered pickle could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_tampered_model_is_refused_in_one_line(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    entry = _write(cache)
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": _Payload(marker)}, entry.path / "model.pt")
    assert not entry.exists
    with pytest.raises(CorruptEntryError, match=rf"damaged cache entry {entry.path}: model.pt"):
        entry.load_model()
    # Even with a manifest rewritten to match, weights_only=True refuses it, in one line that
    # names the file and gives no advice to load it another way.
    manifest = json.loads((entry.path / "manifest.json").read_text())
    with open(entry.path / "model.pt", "rb") as fh:
        manifest["files"]["model.pt"] = {"size": (entry.path / "model.pt").stat().st_size,
                                         "sha256": file_sha256(fh)}
    (entry.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptEntryError) as error:
        entry.load_model()
    message = str(error.value)
    assert message.startswith(f"{entry.path}/model.pt is not plain weights") and "\n" not in message
    assert "weights_only=False" not in message
    assert not marker.exists()


# -- failures while writing -----------------------------------------------------------------
def test_failed_publication_leaves_no_temporary_folder(tmp_path, monkeypatch):
    def fail(tmp, final):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "publish", fail)
    with pytest.raises(OSError, match="No space"):
        _write(ResultCache(tmp_path))
    assert list((tmp_path / "demo").iterdir()) == []


def test_leftovers_of_a_killed_writer_are_removed(tmp_path):
    cache = ResultCache(tmp_path)
    (tmp_path / "demo" / ".tmp-k1-deadbeef").mkdir(parents=True)  # as SIGKILL leaves it
    (tmp_path / "demo" / ".tmp-other-deadbeef").mkdir()            # another key's: not ours to judge
    _write(cache)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [".tmp-other-deadbeef", "k1"]


def test_results_folder_that_cannot_be_written_is_refused_up_front(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CacheError, match=rf"results folder {blocker}/results cannot be created: "
                                         r".* is a file; set --cache or \$PNEUMO_CACHE"):
        ResultCache(blocker / "results", writable=True)
    # A read-only mount (root bypasses permission bits, so it is simulated where access(2) says it).
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(read_only)
                        else real_access(path, mode))
    with pytest.raises(CacheError, match=rf"results folder {read_only}/cache is not writable"):
        ResultCache(read_only / "cache", writable=True)
    assert not (read_only / "cache").exists()  # the check creates nothing
    ResultCache(read_only / "cache")  # looking entries up needs no write access


# -- several processes ----------------------------------------------------------------------
STRESS_SECONDS = 2.0


def _stress_writer(root, queue):
    """Forced rewrites of one entry, as fast as possible, for STRESS_SECONDS."""
    cache, ok, errors = ResultCache(root), 0, []
    end = time.monotonic() + STRESS_SECONDS
    while time.monotonic() < end:
        try:
            with cache.write("stress", "key") as out:
                out.json("params", {"pid": os.getpid(), "n": ok})
                out.json("metrics", {"payload": list(range(200))})
                out.table("rows", pd.DataFrame({"x": range(50)}))
            ok += 1
        except Exception as error:  # noqa: BLE001 - counted, and shown if the test fails
            errors.append(repr(error))
    queue.put(("writer", ok, errors[:5]))


def _stress_reader(root, queue):
    """Reads the entry whenever it exists; a half or vanishing entry is an error."""
    entry, reads, errors = ResultCache(root).entry("stress", "key"), 0, []
    end = time.monotonic() + STRESS_SECONDS
    while time.monotonic() < end:
        if not entry.exists:
            continue
        try:
            if len(entry.metrics["payload"]) != 200 or len(entry.table("rows")) != 50:
                errors.append("incomplete")
            reads += 1
        except Exception as error:  # noqa: BLE001
            errors.append(repr(error))
    queue.put(("reader", reads, errors[:5]))


def _compute_once(root, queue):
    """A computation that takes a while; a second process should wait for it, then reuse it."""
    cache = ResultCache(root)
    with cache.write("slow", "key", reuse=True) as out:
        if out is None:
            queue.put(("reused", os.getpid()))
            return
        time.sleep(1.0)
        out.json("params", {"pid": os.getpid()})
        queue.put(("computed", os.getpid()))


def _run_processes(targets, root):
    context = multiprocessing.get_context("fork")  # children inherit the patched run_record
    queue = context.Queue()
    processes = [context.Process(target=target, args=(str(root), queue)) for target in targets]
    for process in processes:
        process.start()
    outcomes = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    return outcomes


@pytest.fixture
def light_run_record(monkeypatch):
    """The run record imports half the scientific stack for its versions; not needed here."""
    monkeypatch.setattr(results, "run_record", lambda: {})


def test_concurrent_writers_and_a_reader(tmp_path, light_run_record):
    outcomes = _run_processes([_stress_writer] * 3 + [_stress_reader], tmp_path)
    writers = [o for o in outcomes if o[0] == "writer"]
    (_, reads, read_errors), = [o for o in outcomes if o[0] == "reader"]
    assert [errors for _, _, errors in writers] == [[], [], []]
    assert read_errors == []
    # They did overlap (counts on a busy 2-core machine: about 10 writes each, 150 reads).
    assert min(ok for _, ok, _ in writers) >= 1 and sum(ok for _, ok, _ in writers) >= 10, outcomes
    assert reads >= 10, outcomes
    assert os.listdir(tmp_path / "stress") == ["key"]  # no .tmp-* or .old-* left
    assert Entry(tmp_path / "stress" / "key").exists


def test_second_run_waits_for_the_first_and_reuses_its_entry(tmp_path, light_run_record):
    start = time.monotonic()
    outcomes = _run_processes([_compute_once, _compute_once], tmp_path)
    assert sorted(kind for kind, _ in outcomes) == ["computed", "reused"]
    assert time.monotonic() - start < 30
    computed_by = [pid for kind, pid in outcomes if kind == "computed"]
    assert ResultCache(tmp_path).entry("slow", "key").params == {"pid": computed_by[0]}
