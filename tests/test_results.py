"""The results cache: keys, atomic entries, hits and invalidation."""

import numpy as np
import pandas as pd
import pytest
import torch

from pneumo.results import ResultCache, cache_key, source_hash


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


def test_plotting_code_is_not_in_the_classification_key():
    from pneumo.classification import CODE

    assert not any("plots" in m or "report" in m for m in CODE)
    assert source_hash(CODE) == source_hash(list(reversed(CODE)))


def test_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    assert ResultCache().root == tmp_path.resolve()
