"""The process pool that trains independent models at once (pneumo.pool)."""

from __future__ import annotations

import os

import pytest

from pneumo.device import worker_devices
from pneumo.pool import map_in_workers


def _describe(value: int, device: str) -> tuple[int, str, str, int]:
    if value < 0:
        raise ValueError(f"negative job {value}")
    return value * 2, device, os.environ.get("OMP_NUM_THREADS", ""), os.getpid()


def test_workers_return_results_in_job_order_with_a_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("pneumo.device.available_cores", lambda: 4)  # the same on any machine
    results = map_in_workers(_describe, [{"value": v} for v in range(5)], workers=2, device="cpu")
    assert [r[0] for r in results] == [0, 2, 4, 6, 8]
    assert {r[1] for r in results} == {"cpu"}
    assert len({r[3] for r in results}) <= 2 and os.getpid() not in {r[3] for r in results}
    assert {r[2] for r in results} == {"2"}  # 4 cores shared by 2 workers


def test_one_worker_runs_here_and_a_failed_job_raises_its_error():
    assert {r[3] for r in map_in_workers(_describe, [{"value": 1}, {"value": 2}], workers=1, device="cpu")} \
        == {os.getpid()}
    with pytest.raises(ValueError, match="negative job -1"):
        map_in_workers(_describe, [{"value": 1}, {"value": -1}], workers=2, device="cpu")


def test_cpu_workers_stay_within_this_process_share_of_the_cores(monkeypatch):
    """A task kernel given one thread (two tasks at once on two cores) trains its jobs here,
    not in workers that would take turns on its one core."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert {r[3] for r in map_in_workers(_describe, [{"value": 1}, {"value": 2}], workers=2, device="cpu")} \
        == {os.getpid()}


def test_worker_devices_name_every_visible_gpu_or_the_one_device():
    assert worker_devices("cpu") == ["cpu"]
    import torch

    expected = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else ["cpu"]
    assert worker_devices("auto") == expected or worker_devices("auto") == ["mps"]
