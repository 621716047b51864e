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
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
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

#: ``{task: entry folder}`` (JSON) of the entries :func:`main` computed, for the document's
#: kernel (:func:`pneumo.report.entries.task_entry`).
ENTRIES_ENV = "PNEUMO_REPORT_ENTRIES"

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


def render(quarto: str, env: dict[str, str], output_dir: Path) -> int:
    """Render ``report/index.html`` and ``report/index.pdf`` under ``output_dir``, executing
    the document once.

    Quarto executes a document once per output format. Here the HTML render keeps its
    executed Markdown (``keep-md``), and the PDF is typeset from that Markdown in a scratch
    copy of the project whose only format is Typst, so the second format costs seconds
    instead of a second run of every cell. Plain ``quarto render`` gives the same two
    files, executing twice.

    Returns
    -------
    int
        Quarto's exit code (0 when both files were written).
    """
    import yaml

    document = PROJECT_ROOT / "report" / "index.qmd"
    executed = document.with_name("index.html.md")
    figures = document.with_name("index_files")
    try:
        log.info("rendering HTML with %s", quarto)
        html = subprocess.run([quarto, "render", str(document), "--to", "html", "-M", "keep-md:true",
                               "--output-dir", str(output_dir)], cwd=PROJECT_ROOT, env=env, check=False)
        if html.returncode != 0 or not executed.is_file():
            return html.returncode or 1
        log.info("typesetting the PDF through Typst from the executed document")
        with tempfile.TemporaryDirectory(prefix="pneumo-print-") as tmp:
            scratch = Path(tmp)
            config = yaml.safe_load((PROJECT_ROOT / "_quarto.yml").read_text())
            config["project"].update({"render": ["index.md"], "output-dir": "out"})
            config["project"].pop("pre-render", None)
            config["format"] = {"typst": config["format"]["typst"]}
            (scratch / "_quarto.yml").write_text(yaml.safe_dump(config, sort_keys=False))
            bibliography = scratch / config["bibliography"]
            bibliography.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / config["bibliography"], bibliography)
            shutil.copy2(executed, scratch / "index.md")
            shutil.copytree(figures, scratch / figures.name)
            pdf = subprocess.run([quarto, "render", "--to", "typst"], cwd=scratch, env=env, check=False)
            if pdf.returncode != 0:
                return pdf.returncode
            shutil.copy2(scratch / "out" / "index.pdf", output_dir / "report" / "index.pdf")
        return 0
    finally:
        executed.unlink(missing_ok=True)
        shutil.rmtree(figures, ignore_errors=True)


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
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR.parent,
                        help="Quarto's output folder: the report goes to its report/ (default: _output)")
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
    # The document's kernel reads these entries instead of looking every task up again.
    env.update({"PNEUMO_PROFILE": profile, COMPUTED_ENV: "1",
                ENTRIES_ENV: json.dumps({name: str(entry.path) for name, entry in entries.items()})})
    start = time.perf_counter()
    code = render(quarto, env, args.output_dir.resolve())
    if code == 0:
        log.info("rendered in %.0f s", time.perf_counter() - start)
        for name in ("index.html", "index.pdf"):
            print(f"wrote {args.output_dir / 'report' / name}")
    return code
