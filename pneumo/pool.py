"""Independent trainings at once: a process pool over the visible devices.

A grid variant or an autoencoder of 0.1-5 M parameters keeps a large GPU a small share busy,
so the grids train several at a time: :func:`map_in_workers` runs one function per job in
joblib's loky process pool (fresh interpreters, as CUDA does not survive a fork; unlike the
standard library's spawn, loky does not run the calling script again in each worker, which
would start the task script anew), hands the jobs round-robin to every visible GPU
(:func:`pneumo.device.worker_devices`), and shares this process's CPU threads
(:func:`pneumo.device.thread_budget`) out among the workers. With one worker it is a plain
loop in this process. What a job writes to the cache is keyed by its settings only, never by
the parallelism, so a rerun finds it however it ran (on the CPU the last digits of a network's
numbers follow its thread count, the order of float sums).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

from joblib.externals.loky import ProcessPoolExecutor

from pneumo.device import thread_budget, worker_devices

log = logging.getLogger(__name__)

__all__ = ["map_in_workers"]


def _start_worker() -> None:
    """Pool initializer: the parent's log format in each worker."""
    from pneumo.runner import setup_logging

    setup_logging()


def map_in_workers(fn: Callable[..., Any], jobs: Sequence[Mapping[str, Any]], *, workers: int,
                   device: str = "auto") -> list[Any]:
    """``fn(**job, device=...)`` for every job, ``workers`` at a time; results in job order.

    Parameters
    ----------
    fn
        A module-level function (it is pickled by name) taking the job's keywords and
        ``device``, a device name such as ``"cuda:1"`` or ``"cpu"``; its result is pickled
        back, so tensors in it should be on the CPU.
    jobs
        Keyword arguments of each call.
    workers
        Processes at once; 1 (or a single job) runs the calls here, one after another. On the
        CPU at most :func:`~pneumo.device.thread_budget` of them (one thread each at least).
    device
        The task's device setting; ``"auto"``/``"cuda"`` spread the jobs over every visible
        GPU, round-robin by job.

    Raises
    ------
    Exception
        The first failed job's exception, after the jobs already running have finished.
    """
    devices = worker_devices(device)
    budget = thread_budget()
    if devices == ["cpu"]:
        # CPU workers beyond this process's share of the cores would only take turns on them.
        workers = min(workers, budget)
    if workers <= 1 or len(jobs) <= 1:
        return [fn(**job, device=devices[i % len(devices)]) for i, job in enumerate(jobs)]
    workers = min(workers, len(jobs))
    threads = max(1, budget // workers)
    log.info("%d jobs in %d worker processes on %s (%d CPU thread(s) each)", len(jobs), workers,
             ", ".join(dict.fromkeys(devices)), threads)
    # Set before torch loads in the worker: its share of the cores (pneumo.device.configure_threads
    # reads it), and no progress bars, which several workers would garble (log lines stay).
    env = {"OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    with ProcessPoolExecutor(max_workers=workers, initializer=_start_worker, env=env) as pool:
        futures = [pool.submit(fn, **job, device=devices[i % len(devices)]) for i, job in enumerate(jobs)]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:  # a failure or Ctrl-C: start nothing new
                future.cancel()
            raise
