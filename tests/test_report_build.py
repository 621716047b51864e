"""The report build: tasks computed in dependency order, concurrently where the graph allows."""

from __future__ import annotations

import io
import time

import pytest

from pneumo.report import build
from pneumo.runner import TASK_REGISTRY


class FakeEntry:
    def __init__(self, name):
        self.path = name


@pytest.fixture
def fake_tasks(monkeypatch):
    """run_task replaced by a short sleep that records when each task ran and its kernel's threads.

    Task 3 is the quickest, so Task 1b starts alone once Task 1a ends."""
    spans, threads = {}, {}

    def run_task(name, profile, *, notebook, stderr, kernel_env, **params):
        start = time.perf_counter()
        threads[name] = (kernel_env or {}).get("OMP_NUM_THREADS")
        stderr.write(f"{name} step\rdone\n")
        time.sleep(0.05 if name == "anomaly" else 0.3)
        spans[name] = (start, time.perf_counter())
        return FakeEntry(name)

    monkeypatch.setattr("pneumo.runner.run_task", run_task)
    monkeypatch.setattr("pneumo.device.available_cores", lambda: 4)
    return spans, threads


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_compute_all_runs_upstream_tasks_first(fake_tasks, jobs):
    spans, threads = fake_tasks
    entries = build.compute_all("smoke", jobs=jobs)
    assert list(entries) == list(TASK_REGISTRY)
    for name, spec in TASK_REGISTRY.items():
        for upstream in spec.upstream:
            assert spans[upstream][1] <= spans[name][0], f"{name} started before {upstream} ended"
    overlapping = spans["anomaly"][0] < spans["binary"][1] and spans["binary"][0] < spans["anomaly"][1]
    assert overlapping == (jobs > 1)
    # One kernel at a time keeps its default (every core); else each gets a fixed share of the
    # 4 cores, also Task 1b, which here starts alone: its numbers must not depend on timing.
    assert set(threads.values()) == ({None} if jobs == 1 else {str(4 // jobs)})


def test_compute_all_stops_at_a_failing_task(fake_tasks, monkeypatch):
    def failing(name, profile, **kwargs):
        if name == "binary":
            raise RuntimeError("binary failed")
        return FakeEntry(name)

    monkeypatch.setattr("pneumo.runner.run_task", failing)
    with pytest.raises(RuntimeError, match="binary failed"):
        build.compute_all("smoke", jobs=2)


def test_task_stream_tags_whole_lines_and_keeps_a_bar_final_state():
    out = io.StringIO()
    stream = build._TaskStream("anomaly", out)
    stream.write("epoch 1: 10%\repoch 1: 50%")
    assert out.getvalue() == ""  # half a line waits for its end
    stream.write("\repoch 1: 100%\nlog line\n\n")
    stream.write("last")
    stream.close()
    assert out.getvalue() == "[anomaly] epoch 1: 100%\n[anomaly] log line\n[anomaly] last\n"


def test_default_jobs_follows_the_profile_and_the_data(monkeypatch):
    monkeypatch.setattr("pneumo.device.available_cores", lambda: 2)
    assert build.default_jobs("smoke", synthetic=True) == 2
    assert build.default_jobs("smoke", synthetic=False) == 1  # real data: Task 1 wants every core
    assert build.default_jobs("cpu", synthetic=True) == build.default_jobs("gpu", synthetic=True) == 1
    monkeypatch.setattr("pneumo.device.available_cores", lambda: 1)
    assert build.default_jobs("smoke", synthetic=True) == 1


def test_platform_text_counts_threads_and_names_the_gpu():
    from types import SimpleNamespace

    from pneumo.report.entries import platform_text

    run = {"torch": "2.14.1", "python": "3.11.7", "platform": "Linux-6.1-x86_64"}
    assert platform_text(SimpleNamespace(run={**run, "cpu_threads": 1})).startswith("the CPU (1 thread) with")
    assert "(2 threads)" in platform_text(SimpleNamespace(run={**run, "cpu_threads": 2}))
    gpu = platform_text(SimpleNamespace(run={**run, "cuda": "NVIDIA H200", "cpu_threads": 16}))
    assert gpu == "one NVIDIA H200 GPU with PyTorch 2.14.1 and Python 3.11.7 (Linux)"
