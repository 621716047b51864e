"""Task 1 end to end on phantoms: the three ways to run a task, caching, learning."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pneumo.classification import BinaryConfig, MulticlassConfig, grid_variants, run_classification
from pneumo.config import ConfigError
from pneumo.runner import run_task

from conftest import REPO_ROOT


@pytest.fixture(scope="session")
def binary_entry(task_phantoms, task_cache):
    """Task 1a through papermill, as the report runs it."""
    return run_task("binary", "smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu")


def test_binary_through_papermill_learns(binary_entry):
    assert binary_entry.exists
    assert (binary_entry.path / "notebook.ipynb").is_file()
    metrics = binary_entry.metrics
    assert metrics["data_synthetic"] is True
    # Phantoms are learnable: far above chance (0.5) on the held-out test split.
    assert metrics["test_roc_auc"] > 0.85, metrics
    assert metrics["test_balanced_accuracy"] > 0.7, metrics
    grid = binary_entry.table("grid")
    assert set(grid["variant"]) == {name for name, _ in grid_variants(BinaryConfig.create("smoke"))}
    assert grid["status"].eq("trained").all()
    predictions = binary_entry.table("predictions")
    assert set(predictions["split"]) == {"val", "test"}
    assert {"relpath", "patient", "label", "p_normal", "p_pneumonia"} <= set(predictions.columns)
    saved = binary_entry.load_model()
    assert saved["config"]["num_classes"] == 2


def test_cache_hit_skips_papermill(binary_entry, task_phantoms, task_cache, monkeypatch):
    import papermill

    def fail(*args, **kwargs):
        raise AssertionError("a cache hit must not execute the notebook")

    monkeypatch.setattr(papermill, "execute_notebook", fail)
    start = time.perf_counter()
    again = run_task("binary", "smoke", data=str(task_phantoms), cache=str(task_cache), device="cpu")
    assert again.path == binary_entry.path
    assert time.perf_counter() - start < 30


def test_device_and_workers_do_not_change_the_key(binary_entry, task_phantoms, task_cache):
    config = BinaryConfig.create("smoke", data=str(task_phantoms), cache=str(task_cache),
                                 device="cpu", num_workers=1)
    assert run_classification(config, compute=False).path == binary_entry.path


def test_changed_parameter_misses_the_cache(binary_entry, task_phantoms, task_cache):
    config = BinaryConfig.create("smoke", data=str(task_phantoms), cache=str(task_cache), seed=5)
    assert not run_classification(config, compute=False).exists


def test_unknown_parameter_is_rejected_before_running(task_cache):
    with pytest.raises(ConfigError, match="epoch"):
        run_task("binary", "smoke", epoch=3, cache=str(task_cache))


def test_multiclass_starts_from_binary_and_learns(binary_entry, task_phantoms, task_cache):
    entry = run_task("multiclass", "smoke", data=str(task_phantoms), cache=str(task_cache),
                     device="cpu", notebook=False)
    metrics = entry.metrics
    assert entry.params["init_entry"] == binary_entry.path.name
    assert metrics["test_balanced_accuracy"] > 0.5, metrics  # chance is 1/3
    assert metrics["induced_binary_roc_auc"] > 0.8, metrics
    assert "init=scratch" in set(entry.table("grid")["variant"])
    assert entry.has_table("bacterial_vs_viral")


def test_script_runs_from_the_command_line(task_phantoms, task_cache):
    """`python tasks/binary.py --flags` computes (here: finds) the entry and prints its path."""
    result = subprocess.run(
        [sys.executable, "tasks/binary.py", "--profile", "smoke", "--data", str(task_phantoms),
         "--cache", str(task_cache), "--grid", "none", "--epochs", "2", "--device", "cpu"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith(str(task_cache)) and (REPO_ROOT / last_line).exists()
    assert "metrics.json" in {p.name for p in (REPO_ROOT / last_line).iterdir()}


def test_multiclass_config_shares_settings_with_binary():
    from pneumo.classification import binary_config_for

    config = MulticlassConfig.create("smoke", width=12, seed=4, epochs=9)
    binary = binary_config_for(config)
    assert (binary.width, binary.seed) == (12, 4)
    assert binary.epochs == BinaryConfig.create("smoke").epochs  # 1a keeps its own budget


def test_ctrl_c_keeps_weights_but_writes_no_entry(task_phantoms, tmp_path, monkeypatch):
    """An interrupted training run never becomes a cache entry that looks finished."""
    import pneumo.training as training

    calls = {"n": 0}
    real_evaluate = training._evaluate

    def interrupt_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "_evaluate", interrupt_in_second_epoch)
    config = BinaryConfig.create("smoke", data=str(task_phantoms), cache=str(tmp_path), grid="none",
                                 device="cpu")
    with pytest.raises(KeyboardInterrupt):
        run_classification(config)
    assert list((tmp_path / "interrupted").glob("*.pt")), "the best weights so far are kept"
    for task in ("binary", "binary-variant"):
        folder = tmp_path / task
        assert not folder.exists() or not [p for p in folder.iterdir() if not p.name.startswith(".")]
        assert not folder.exists() or not list(folder.iterdir())  # no temporary folder left either


@pytest.mark.parametrize("flags, message", [
    (["--data", "/no/such/folder"], "does not exist"),
    (["--balance", "oversample"], "balance must be one of"),
])
def test_command_line_user_errors_are_one_line(flags, message):
    result = subprocess.run([sys.executable, "tasks/binary.py", "--profile", "smoke", *flags],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr and "Traceback" not in result.stderr
