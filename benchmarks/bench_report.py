"""The whole study from an empty cache: wall time per task and phase, speed, headline figures.

    python benchmarks/bench_report.py --profile cpu                     # a fresh temporary cache
    python benchmarks/bench_report.py --profile cpu --cache results     # report what a cache holds

Computes every task of the report the way ``make report`` does (:func:`pneumo.report.build.
compute_all`: the task scripts through papermill, upstream tasks first) in a temporary results
cache that starts empty (the decoded-image cache of ``--decoded`` is reused when given, so that
a benchmark measures training, not JPEG decoding, unless asked). With ``--cache`` it computes
only what that cache lacks. Then it prints, from the entries' own run records:

1. wall time per task and per phase (decode, grid, final training, test, features, t-SNE, ...),
   with where each entry was computed (device, threads) and the final networks' training
   images/s;
2. on a machine with NVIDIA GPUs, each task's GPU utilisation (``nvidia-smi``, sampled once a
   second while the task ran: mean, share of seconds busy, peak memory);
3. each task's headline test figures.

Nothing is asserted: the figures are measured, and the README quotes them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import benchmark_parser  # noqa: E402

from pneumo.results import Entry  # noqa: E402

#: The headline test figures of each task (``metrics.json`` keys), as the report quotes them.
HEADLINES = {
    "binary": ("test_roc_auc", "test_accuracy", "test_sensitivity", "test_specificity", "threshold"),
    "multiclass": ("test_accuracy", "test_balanced_accuracy", "test_roc_auc", "bacterial_vs_viral_roc_auc"),
    "embeddings": ("net_1a_binary_test_roc_auc", "net_1b_multiclass_test_balanced_accuracy",
                   "pixels_binary_test_roc_auc", "pixels_multiclass_test_balanced_accuracy"),
    "anomaly": ("chosen_variant", "chosen_score", "test_roc_auc", "test_roc_auc_viral", "test_sensitivity",
                "test_specificity"),
    "explain": (),
}


def timing_table(entries: dict[str, Entry]) -> pd.DataFrame:
    """One row per task and phase: seconds as recorded when the entry was computed."""
    rows = []
    for task, entry in entries.items():
        run = entry.run
        where = run.get("cuda") or f"CPU, {run.get('cpu_threads')} threads"
        speed = _images_per_s(entry)
        rows.append({"task": task, "phase": "(whole task)", "seconds": run.get("wall_s"), "where": where,
                     "train images/s": speed})
        rows += [{"task": task, "phase": phase, "seconds": seconds} for phase, seconds in run.get("phases_s", {}).items()]
    return pd.DataFrame(rows)


def _images_per_s(entry: Entry) -> float | None:
    """Median training images/s of a Task 1 entry's final network (None for other tasks)."""
    history = entry.path / "history.csv"
    if not history.is_file():
        return None
    speed = pd.read_csv(history).get("images_per_s")
    return None if speed is None else float(speed.median())


class GpuSampler:
    """``nvidia-smi`` once a second in a thread, while the ``with`` block runs (a no-op without it).

    ``samples`` rows: ``time`` (UTC), ``gpu``, ``utilisation`` (%), ``memory_mib``.
    """

    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "GpuSampler":
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.wait(self.interval_s):
            now = datetime.datetime.now(datetime.timezone.utc)
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            for line in out.strip().splitlines():
                gpu, util, memory = (v.strip() for v in line.split(","))
                self.samples.append({"time": now, "gpu": int(gpu), "utilisation": float(util),
                                     "memory_mib": float(memory)})

    def per_task(self, entries: dict[str, Entry]) -> pd.DataFrame:
        """Per task and GPU, over the seconds the task ran (its ``run.json``: finish time, wall time)."""
        if not self.samples:
            return pd.DataFrame()
        samples = pd.DataFrame(self.samples)
        rows = []
        for task, entry in entries.items():
            run = entry.run
            if "finished_at" not in run or "wall_s" not in run:
                continue
            end = pd.Timestamp(run["finished_at"])
            during = samples[(samples["time"] >= end - pd.Timedelta(seconds=run["wall_s"])) & (samples["time"] <= end)]
            for gpu, g in during.groupby("gpu"):
                rows.append({"task": task, "gpu": gpu, "mean utilisation %": g["utilisation"].mean(),
                             "seconds busy (>0%) share": (g["utilisation"] > 0).mean(),
                             "peak memory MiB": g["memory_mib"].max(), "samples": len(g)})
        return pd.DataFrame(rows)


def headline_table(entries: dict[str, Entry]) -> pd.DataFrame:
    """One row per headline figure: task, figure, value (test split, once)."""
    rows = []
    for task, entry in entries.items():
        metrics = entry.metrics
        rows += [{"task": task, "figure": key, "value": metrics[key]} for key in HEADLINES.get(task, ())
                 if key in metrics]
    return pd.DataFrame(rows)


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0],
                              cache_help="results folder to fill and report (default: a new temporary one)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="tasks at once (default: as make report, pneumo.report.build.default_jobs)")
    parser.add_argument("--decoded", default=None,
                        help="a results folder whose decoded/ images the temporary cache may reuse")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache (its path is printed)")
    args = parser.parse_args()
    run(args)


def run(args: argparse.Namespace) -> None:
    from pneumo.data import locate_data
    from pneumo.report.build import compute_all, default_jobs
    from pneumo.runner import setup_logging

    setup_logging()
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="pneumo-bench-"))
    if args.decoded and (Path(args.decoded) / "decoded").is_dir() and not (cache / "decoded").exists():
        shutil.copytree(Path(args.decoded) / "decoded", cache / "decoded")
    # The task kernels read the data and the cache from the environment, as under make report.
    os.environ.update(PNEUMO_CACHE=str(cache), PNEUMO_DATA=args.data or "")
    jobs = args.jobs or default_jobs(args.profile, synthetic=locate_data(args.data or None) is None)
    start = time.perf_counter()
    try:
        with GpuSampler() as gpus:
            entries = compute_all(args.profile, jobs=jobs, device=args.device)
        wall = time.perf_counter() - start
        pd.set_option("display.width", 160, "display.max_columns", 10, "display.max_rows", 200)
        print(f"\nprofile {args.profile}, data {args.data or 'phantoms'}, cache {cache}, {jobs} task(s) at once; "
              f"this call {wall / 60:.1f} min")
        timings = timing_table(entries)
        print(timings.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.1f}"))
        print(f"\nsum of task wall times: {timings.loc[timings['phase'] == '(whole task)', 'seconds'].sum() / 60:.1f} min")
        utilisation = gpus.per_task(entries)
        if len(utilisation):
            print("\nGPU utilisation while each task ran (nvidia-smi, once a second):")
            print(utilisation.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        print("\nheadline test figures:")
        print(headline_table(entries).to_string(index=False))
    finally:
        if not args.cache and not args.keep:
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
