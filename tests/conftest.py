"""Shared pytest fixtures: a small phantom data set and the real-data location.

``REAL_DATA`` is ``<repo>/../shared/data/chest_xray``; tests that need it use the
``requires_real_data`` marker (``real_data``) and are skipped where the folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The real Kaggle chest X-ray folder (read-only), next to the repository.
REAL_DATA = (REPO_ROOT / ".." / "shared" / "data" / "chest_xray").resolve()

#: Marker for tests that need :data:`REAL_DATA`: it is the ``real_data`` marker declared in
#: pyproject.toml (so ``-m "not real_data"`` deselects them), and such tests are skipped by
#: :func:`pytest_collection_modifyitems` where the folder is absent.
requires_real_data = pytest.mark.real_data


def pytest_collection_modifyitems(config, items):
    """Skip ``real_data`` tests when :data:`REAL_DATA` does not exist."""
    if REAL_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real chest X-ray data not found at {REAL_DATA}")
    for item in items:
        if "real_data" in item.keywords:
            item.add_marker(skip)


#: Parameters of the session phantom data set: small and fast, but with every folder,
#: several images per patient and both naming forms of normal images.
PHANTOM_KWARGS = {"n_per_class": (24, 24, 24), "size": 96, "seed": 7}


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A session-wide phantom ``chest_xray`` folder (72 PNGs, 96 px); treat as read-only."""
    from pneumo.data import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("phantoms"), num_workers=1, **PHANTOM_KWARGS)


@pytest.fixture(scope="session")
def task_phantoms(tmp_path_factory) -> Path:
    """Default-sized phantoms (600 images), big enough for a smoke model to learn.

    Shared by the task and report tests, together with :func:`task_cache`, so the smoke
    models are trained once per test session.
    """
    from pneumo.data import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("task-phantoms"), size=128, seed=3)


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory) -> Path:
    """A results cache shared by every test that runs a task."""
    return tmp_path_factory.mktemp("task-cache")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """:data:`REAL_DATA`, skipping the test when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real chest X-ray data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch):
    """Keep the user's $PNEUMO_DATA / $PNEUMO_CACHE from leaking into tests."""
    monkeypatch.delenv("PNEUMO_DATA", raising=False)
    monkeypatch.delenv("PNEUMO_CACHE", raising=False)


@pytest.fixture
def one_thread():
    """Run small models on one thread: about as fast as two at these sizes, and immune to the
    OpenMP slowdown (10-100x) when other processes keep the cores busy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_entries(task_phantoms, task_cache) -> dict:
    """Every task's smoke entry on the session phantoms, as the report reads them.

    ``{task: pneumo.report.ReportEntry}``; computed in this process where the task tests
    have not computed them already (they share :func:`task_cache`).
    """
    from pneumo.report import ReportEntry
    from pneumo.runner import TASK_REGISTRY, run_task

    return {name: ReportEntry(run_task(name, "smoke", notebook=False, data=str(task_phantoms),
                                       cache=str(task_cache)), name)
            for name in TASK_REGISTRY}
