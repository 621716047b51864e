"""Task 1 end to end on phantoms: the three ways to run a task, caching, learning."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from pneumo.classification import (SEED_FIGURES, BinaryConfig, MulticlassConfig, grid_ranking, grid_variants,
                                   run_classification)
from pneumo.shift import SHIFTS
from pneumo.config import ConfigError
from pneumo.data import DataLayoutError
from pneumo.results import Entry
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
    # Ranked by the config's selection criterion; each variant's entry also scored every
    # shifted copy of the validation films.
    ranked = grid[grid_ranking(binary_entry.params["selection"])[0]].to_numpy()
    assert (ranked[:-1] >= ranked[1:]).all() and metrics["chosen_variant"] == grid["variant"].iloc[0]
    assert (grid["val_shift_roc_auc_worst"] <= grid["val_shift_roc_auc_mean"]).all()
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
    # 1b starts from 1a's network, named by its variant entry (the weights 1a's entry holds).
    assert entry.params["init_entry"] == f"binary-variant/{binary_entry.metrics['variant_entry']}"
    assert (task_cache / entry.params["init_entry"]).is_dir()
    assert metrics["test_balanced_accuracy"] > 0.5, metrics  # chance is 1/3
    assert metrics["induced_binary_roc_auc"] > 0.8, metrics
    # 1b's reduced grid measures only what 1a's screen could not: the initialisation; it
    # inherits 1a's choices.
    assert list(entry.table("grid")["variant"]) in (["baseline", "init=scratch"], ["init=scratch", "baseline"])
    chosen_1a = binary_entry.load_model()["config"]
    assert {k: entry.params[k] for k in ("balance", "augment", "intensity")} == \
        {k: chosen_1a[k] for k in ("balance", "augment", "intensity")}
    assert entry.has_table("bacterial_vs_viral")
    assert len(entry.table("val_shifts")) == len(SHIFTS)


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


def test_multiclass_full_grid_measures_the_inherited_choices_again():
    full = dict(grid_variants(MulticlassConfig.create("cpu", grid="full")))
    assert {"init=scratch", "balance=sampling", "augment=False", "intensity=none"} <= set(full)
    assert not any(k.startswith(("width", "resolution", "depth")) for k in full)


def test_multiclass_config_shares_settings_with_binary():
    from pneumo.classification import binary_config_for

    config = MulticlassConfig.create("smoke", width=12, seed=4, epochs=9)
    binary = binary_config_for(config)
    assert (binary.width, binary.seed) == (12, 4)
    assert binary.epochs == BinaryConfig.create("smoke").epochs  # 1a keeps its own budget
    # At `cpu` 1b trains one seed and 1a three: 1b reads the very 1a entry the report shows.
    cpu = MulticlassConfig.create("cpu")
    assert cpu.seeds == 1 and binary_config_for(cpu) == BinaryConfig.create("cpu") and BinaryConfig.create("cpu").seeds == 3


def test_ctrl_c_keeps_weights_but_writes_no_entry(task_phantoms, tmp_path, monkeypatch):
    """An interrupted training run never becomes a cache entry that looks finished."""
    from pneumo.training import classifier

    calls = {"n": 0}
    real_evaluate = classifier._evaluate

    def interrupt_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(classifier, "_evaluate", interrupt_in_second_epoch)
    config = BinaryConfig.create("smoke", data=str(task_phantoms), cache=str(tmp_path), grid="none",
                                 device="cpu")
    with pytest.raises(KeyboardInterrupt):
        run_classification(config)
    assert list((tmp_path / "interrupted").glob("*.pt")), "the best weights so far are kept"
    for task in ("binary", "binary-variant"):
        folder = tmp_path / task
        assert not folder.exists() or not [p for p in folder.iterdir() if not p.name.startswith(".")]
        assert not folder.exists() or not list(folder.iterdir())  # no temporary folder left either


def _run_script(*flags, env=None, script="tasks/binary.py"):
    return subprocess.run([sys.executable, script, "--profile", "smoke", *flags], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def _assert_one_line_error(result, message):
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--data", "/no/such/folder"], "does not exist"),
    (["--balance", "oversample"], "balance must be one of"),
    (["--epochs", "-1"], "BinaryConfig.epochs must be at least 1, got -1"),
    (["--device", "cuda:99"], "device 'cuda:99' was asked for"),  # absent with or without CUDA
])
def test_command_line_user_errors_are_one_line(flags, message, tmp_path):
    _assert_one_line_error(_run_script(*flags, "--cache", str(tmp_path / "cache")), message)
    assert not (tmp_path / "cache").exists()  # refused before any data were read


def test_command_line_cache_errors_are_one_line(phantom_root, tmp_path):
    import os

    data = tmp_path / "chest_xray"
    shutil.copytree(phantom_root, data)
    inside = _run_script("--data", str(data), env={**os.environ, "PNEUMO_CACHE": str(data / "results")})
    _assert_one_line_error(inside, f"the results folder {data / 'results'} is inside the data folder")
    assert not (data / "results").exists()
    (tmp_path / "file").write_text("")
    blocked = _run_script("--data", str(data), "--cache", str(tmp_path / "file" / "results"))
    _assert_one_line_error(blocked, "cannot be created")


def _minimal_settings(data, cache, **extra):
    return dict(data=str(data), cache=str(cache), device="cpu", grid="none", epochs=1,
                bootstrap=0, num_workers=1, **extra)


def test_binary_task_uses_pneumonia_images_without_subtype(phantom_root, tmp_path):
    """Task 1a needs no subtype; 1b refuses such data before decoding, saying what to do."""
    data = tmp_path / "chest_xray"
    shutil.copytree(phantom_root, data)
    for path in data.rglob("PNEUMONIA/*"):
        path.rename(path.with_name(path.name.replace("bacteria", "img").replace("virus", "img")))
    entry = run_classification(BinaryConfig.create("smoke", **_minimal_settings(data, tmp_path / "c")))
    counts = entry.json("data_summary")["counts"]
    assert counts["test"]["pneumonia"] > 0 and counts["test"]["bacterial"] == 0
    decoded = set((tmp_path / "c" / "decoded").iterdir())
    with pytest.raises(DataLayoutError, match=r"name no subtype .*run Task 1a \(tasks/binary.py\)"):
        run_classification(MulticlassConfig.create("smoke", **_minimal_settings(data, tmp_path / "c")))
    assert set((tmp_path / "c" / "decoded").iterdir()) == decoded


def test_damaged_grid_variant_is_trained_again(binary_entry, task_phantoms, task_cache, tmp_path, caplog):
    cache = tmp_path / "cache"
    shutil.copytree(task_cache, cache, ignore=shutil.ignore_patterns(".locks", "interrupted"))
    variants = [v for v in (cache / "binary-variant").iterdir() if not v.name.startswith(".")]
    victim = next(v for v in variants if v.name != binary_entry.metrics["variant_entry"])
    (victim / "metrics.json").write_text("")
    shutil.rmtree(cache / "binary" / binary_entry.path.name)
    kept = {v.name: (v / "manifest.json").stat().st_mtime_ns for v in variants if v != victim}
    config = BinaryConfig.create("smoke", data=str(task_phantoms), cache=str(cache), device="cpu")
    with caplog.at_level(logging.WARNING, logger="pneumo"):
        entry = run_classification(config)
    assert f"damaged cache entry {victim}: metrics.json has 0 bytes" in caplog.text
    assert entry.path.name == binary_entry.path.name and Entry(victim).exists
    assert {v: (cache / "binary-variant" / v / "manifest.json").stat().st_mtime_ns for v in kept} == kept


def test_identical_runs_at_once_train_once(phantom_root, tmp_path):
    """Two runs of one computation started together: the second waits and reuses the first's."""
    flags = ["--data", str(phantom_root), "--cache", str(tmp_path / "cache"), "--grid", "none",
             "--epochs", "1", "--bootstrap", "0", "--device", "cpu", "--num-workers", "1"]
    runs = [subprocess.Popen([sys.executable, "tasks/binary.py", "--profile", "smoke", *flags],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert len({out.strip().splitlines()[-1] for out, _ in outputs}) == 1  # the same entry
    trainings = sum(len(re.findall(r"pneumo\.training[.\w]*: training ", err)) for _, err in outputs)
    assert trainings == 1, [err[-1500:] for _, err in outputs]


def test_upstream_networks_are_computed_as_a_direct_run(monkeypatch):
    """Tasks 2 and 4 get missing Task 1 entries through run_task (papermill: with a notebook)."""
    from pneumo import runner, upstream

    calls = []
    monkeypatch.setattr(runner, "run_task", lambda name, profile, **kw: calls.append((name, profile, kw))
                        or runner.Entry(f"/nowhere/{name}"))
    entries = upstream.classifier_entries("smoke", data="/d", cache="/c", device="cpu", num_workers=0)
    assert [c[:2] for c in calls] == [("binary", "smoke"), ("multiclass", "smoke")]
    assert calls[0][2] == {"data": "/d", "cache": "/c", "device": "cpu", "num_workers": 0}
    assert list(entries) == list(upstream.CLASSIFIER_TASKS)


def test_task_kernels_get_their_environment_and_an_encrypted_transport(tmp_path, capfd):
    """papermill's kernel for a task sees kernel_env, and does not warn of plain TCP."""
    import nbformat
    import papermill

    from pneumo.runner import task_kernel_manager

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os; print(os.environ['OMP_NUM_THREADS'], os.environ.get('PNEUMO_ONLY_HERE'))")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "in.ipynb")
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                               progress_bar=False, kernel_manager_class=task_kernel_manager(
                                   {"OMP_NUM_THREADS": "1", "PNEUMO_ONLY_HERE": "yes"}))
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs[0]["text"]
    assert out.split() == ["1", "yes"]
    assert "PNEUMO_ONLY_HERE" not in os.environ
    assert "without encryption" not in capfd.readouterr().err


def test_grid_in_two_workers_fills_the_cache_one_worker_finds(task_phantoms, tmp_path, capfd):
    """train_workers trains the grid's variants, then the seed replicas, in worker processes
    into the cache; the key ignores it, so a run in one process finds the entry and every variant."""
    config = BinaryConfig.create("smoke", data=str(task_phantoms), cache=str(tmp_path), device="cpu",
                                 num_workers=1, epochs=1, bootstrap=20, train_workers=2, seeds=2)
    entry = run_classification(config)
    assert run_classification(config.replace(train_workers=1), compute=False).path == entry.path
    grid = entry.table("grid")
    assert grid["status"].eq("trained").all() and len(grid) == len(grid_variants(config))
    # One entry per variant (the final is the winner's: 1 epoch either way) and the seed-1
    # replica, which a worker trained on the reported model's split: none trained twice.
    assert len(list((tmp_path / "binary-variant").iterdir())) == len(grid) + 1
    assert entry.table("seeds")["seed"].iloc[:2].tolist() == [0, 1]
    assert "%|" not in capfd.readouterr().err  # the workers' log lines, without interleaved tqdm bars


def test_more_1a_seeds_reuse_1b_networks(task_phantoms, tmp_path):
    """1b's networks are keyed by the 1a network they start from, not by 1a's task entry: more
    seeds give 1a a new entry with the same network, so 1b trains only its own new seed."""
    config = MulticlassConfig.create("smoke", data=str(task_phantoms), cache=str(tmp_path), device="cpu",
                                     num_workers=1, grid="none", epochs=1, bootstrap=20)
    run_classification(config)
    before = set((tmp_path / "multiclass-variant").iterdir())
    run_classification(config.replace(seeds=2))
    assert len(set((tmp_path / "multiclass-variant").iterdir()) - before) == 1


@pytest.mark.parametrize("task_config", [BinaryConfig, MulticlassConfig])
def test_seeds_train_the_chosen_variant_again_and_report_their_ensemble(task_config, task_phantoms, tmp_path,
                                                                       monkeypatch):
    """seeds=2: a second network of the chosen variant (its own variant entry, the same split);
    the task reports the ensemble of both, and keeps the first network's own figures for the
    tasks that study that network."""
    import pneumo.classification as classification

    extra = {"init": "scratch"} if task_config is MulticlassConfig else {}
    config = task_config.create("smoke", data=str(task_phantoms), cache=str(tmp_path), device="cpu", num_workers=1,
                                grid="none", epochs=2, bootstrap=20, seeds=2, **extra)
    scored, evaluating = [], []  # (network, images) pairs scored while the task scores its networks
    real_predict, real_evaluate = classification.predict_proba, classification._evaluate

    def predict_once(model, images, **kwargs):
        if evaluating:
            scored.append((id(model), np.asarray(images).tobytes()))
        return real_predict(model, images, **kwargs)

    def evaluate(*args, **kwargs):
        evaluating.append(True)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(classification, "predict_proba", predict_once)
    monkeypatch.setattr(classification, "_evaluate", evaluate)
    entry = run_classification(config)
    # Scoring the ensemble reuses its members' probabilities: no network scores the same films twice.
    assert len(scored) == len(set(scored)) and len({network for network, _ in scored}) == 2
    seeds, metrics = entry.table("seeds"), entry.metrics
    assert list(seeds["member"]) == ["seed 0", "seed 1", "ensemble of 2 (reported)"]
    assert seeds["seed"].iloc[:2].tolist() == [0, 1] and np.isnan(seeds["seed"].iloc[2])
    task = "binary" if task_config is BinaryConfig else "multiclass"
    figures = SEED_FIGURES[task]
    for figure in (*figures, "val_shift_roc_auc_mean", "val_shift_balanced_accuracy_worst"):
        assert seeds[figure].notna().all(), figure
        values = seeds[figure].iloc[:2]
        assert metrics[f"seeds_{figure}_mean"] == pytest.approx(values.mean())
        assert metrics[f"seeds_{figure}_min"] <= metrics[f"seeds_{figure}_max"]
        assert metrics[f"ensemble_{figure}"] == pytest.approx(seeds[figure].iloc[2])
        assert metrics[figure] == pytest.approx(seeds[figure].iloc[2])  # the reported figures are the ensemble's
    assert metrics["seeds"] == metrics["ensemble_members"] == 2
    # The reported predictions average the two networks'; the first network's own are kept apart.
    p = [f"p_{c}" for c in (("normal", "pneumonia") if task == "binary" else ("normal", "bacterial", "viral"))]
    first = entry.table("network_predictions")
    assert not np.allclose(entry.table("predictions")[p].to_numpy(), first[p].to_numpy())
    network_auc = entry.table("network_test_metrics").set_index("metric").loc["roc_auc", "value"]
    assert network_auc == pytest.approx(seeds["test_roc_auc"].iloc[0])
    # Each network is a variant entry of its own; the seed changes the training, not the key of the split.
    assert len(list((tmp_path / f"{task}-variant").iterdir())) == 2
    assert not seeds.iloc[0][list(figures)].equals(seeds.iloc[1][list(figures)])
