"""Build the report: compute every task (cached), then render it with Quarto.

``python -m pneumo.report`` (what ``make report`` runs) computes the tasks in the order of
:data:`pneumo.runner.TASK_REGISTRY`, printing which task runs and, from inside the task
notebooks, its phase and time left; then it runs ``quarto render``. ``quarto render`` on its
own runs ``python -m pneumo.report --compute-only`` first (the project's ``pre-render``
step in ``_quarto.yml``), so the same progress shows there, and the document only reads the
cache.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pneumo.results import PROJECT_ROOT, Entry

__all__ = ["OUTPUT_DIR", "compute_all", "describe_run", "main"]

log = logging.getLogger(__name__)

#: Quarto's project output, as configured in ``_quarto.yml``.
OUTPUT_DIR = PROJECT_ROOT / "_output" / "report"

#: Set for the ``quarto render`` that :func:`main` starts: its pre-render step then has
#: nothing left to compute.
COMPUTED_ENV = "PNEUMO_REPORT_COMPUTED"

QUARTO_HELP = """\
Quarto was not found on PATH, so the report was not rendered (every result is computed and
cached, so rendering later is quick).

  1. Install Quarto >= 1.7 from https://quarto.org/docs/get-started/
     (conda users: `conda install -c conda-forge "quarto>=1.7"`).
     Typst, used for the PDF, ships with Quarto: no LaTeX is needed.
  2. From the project root, with this project's Python environment active
     (e.g. `. .venv/bin/activate`, so that Quarto's Jupyter kernel can import pneumo), run:
       {command}
  3. Open _output/report/index.html (self-contained) or _output/report/index.pdf.
"""


def describe_run(profile: str | None = None) -> tuple[str, str]:
    """The profile the tasks will run with, and a sentence on it and the data.

    Returns
    -------
    tuple
        ``(profile, sentence)``, e.g. ``("smoke", "profile smoke, on synthetic phantom
        X-rays (no data folder found: ...)")``.
    """
    from pneumo.classification import BinaryConfig
    from pneumo.data import locate_data

    resolved = BinaryConfig.create(profile).profile
    root = locate_data()
    how = "as asked" if profile else "chosen for this machine and data"
    if root is None:
        data = ("on synthetic phantom X-rays (no data folder: set PNEUMO_DATA=/path/to/chest_xray "
                "or put it at data/chest_xray for the real images)")
    else:
        data = f"on the X-rays in {root}"
    return resolved, f"profile {resolved} ({how}), {data}"


def compute_all(profile: str | None = None, *, notebook: bool = True, **params: Any) -> dict[str, Entry]:
    """Run (or look up) every task of the report, in dependency order, logging progress.

    Parameters
    ----------
    profile
        ``"smoke"``, ``"cpu"``, ``"gpu"`` or None (follows the data and the hardware).
    notebook
        Run each task script through papermill (the default, keeps the executed notebook);
        False computes in this process.
    **params
        Config overrides applied to every task (e.g. ``device="cuda"``).

    Returns
    -------
    dict
        ``{task name: Entry}``.
    """
    from pneumo.runner import TASK_REGISTRY, run_task

    entries = {}
    for number, name in enumerate(TASK_REGISTRY, 1):
        start = time.perf_counter()
        log.info("task %d of %d: %s", number, len(TASK_REGISTRY), name)
        entries[name] = run_task(name, profile, notebook=notebook, **params)
        log.info("task %d of %d: %s ready after %.0f s: %s", number, len(TASK_REGISTRY), name,
                 time.perf_counter() - start, entries[name].path)
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pneumo.report``: compute every task, then render with Quarto if installed."""
    parser = argparse.ArgumentParser(
        prog="python -m pneumo.report",
        description="Compute every task of the report (cached) and render it with Quarto.")
    parser.add_argument("--profile", choices=("smoke", "cpu", "gpu"), default=None,
                        help="compute profile (default: $PNEUMO_PROFILE, else smoke on synthetic "
                             "phantoms, gpu with CUDA, else cpu)")
    parser.add_argument("--compute-only", "--no-render", dest="compute_only", action="store_true",
                        help="compute only, do not run Quarto (the pre-render step of `quarto render`)")
    args = parser.parse_args(argv)

    from pneumo.runner import setup_logging

    setup_logging()
    if args.compute_only and os.environ.get(COMPUTED_ENV) == "1":
        return 0  # the pre-render step of the render that main() started: all computed already
    requested = args.profile or os.environ.get("PNEUMO_PROFILE") or None
    profile, sentence = describe_run(requested)
    log.info("pneumo report: %s", sentence)
    start = time.perf_counter()
    entries = compute_all(profile)
    log.info("every task computed or found in the cache in %.0f s", time.perf_counter() - start)
    for name, entry in entries.items():
        print(f"{name}: {entry.path}")

    command = f"PNEUMO_PROFILE={profile} quarto render"
    if args.compute_only:
        return 0
    quarto = shutil.which("quarto")
    if quarto is None:
        print(QUARTO_HELP.format(command=command))
        return 0
    env = dict(os.environ)
    # Quarto must run the report's kernel with this interpreter (the one that has pneumo),
    # also when it was started as .venv/bin/python without activating the environment.
    env.setdefault("QUARTO_PYTHON", sys.executable)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({"PNEUMO_PROFILE": profile, COMPUTED_ENV: "1"})
    log.info("rendering with %s (HTML, then PDF through Typst)", quarto)
    start = time.perf_counter()
    result = subprocess.run([quarto, "render"], cwd=PROJECT_ROOT, env=env, check=False)
    if result.returncode == 0:
        log.info("rendered in %.0f s", time.perf_counter() - start)
        for name in ("index.html", "index.pdf"):
            print(f"wrote {OUTPUT_DIR / name}")
    return result.returncode
