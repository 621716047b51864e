"""Benchmark of Tasks 2-4 on real data: prints measured figures, asserts nothing.

    python benchmarks/bench_tasks.py --data ../shared/data/chest_xray --profile cpu

Runs each task through the results cache (``--cache``, default the project's ``results/``):
missing entries are computed, Task 1 first when a task needs its networks. For every task it
prints the wall time of each phase, as measured when the entry was computed (``run.json``),
where and when that was, and the headline test figures (``metrics.json``). ``--force``
recomputes the tasks named (not Task 1) so that the times are measured now.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _args import benchmark_parser
from pneumo.runner import run_task, setup_logging

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("embeddings", "anomaly", "explain")


def describe(name: str, entry, seconds: float) -> dict:
    """Print an entry's measured times and headline figures; return them as a dict."""
    run = entry.run
    phases = run.get("phases_s", {})
    device = run.get("cuda") or f"CPU, {run.get('cpu_threads')} threads"
    print(f"\n{name}: {entry.path}")
    print(f"  computed {run.get('finished_at')} on {run.get('host')} ({device}); "
          f"wall {run.get('wall_s', float('nan')) / 60:.1f} min (this call: {seconds:.1f} s)")
    for phase, value in phases.items():
        print(f"    {phase:<24} {value:8.1f} s")
    numbers = {k: v for k, v in entry.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key, value in numbers.items():
        print(f"  {key:<44} {value:.4f}" if isinstance(value, float) else f"  {key:<44} {value}")
    return {"path": str(entry.path), "wall_s": run.get("wall_s"), "phases_s": phases, "metrics": numbers}


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], cache_help="results folder (default: $PNEUMO_CACHE or results/)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--force", action="store_true", help="recompute the named tasks (not Task 1)")
    args = parser.parse_args()
    setup_logging()
    report = {}
    for name in args.tasks:
        start = time.perf_counter()
        entry = run_task(name, args.profile, notebook=False, data=args.data, cache=args.cache,
                         device=args.device, force=args.force)
        report[name] = describe(name, entry, time.perf_counter() - start)
    out = Path(report[args.tasks[-1]]["path"]).parent.parent / "benchmark_tasks.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nfigures written to {out}")


if __name__ == "__main__":
    main()
