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
import concurrent.futures
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

from pneumo.results import MANIFEST, PROJECT_ROOT, Entry, ResultCache, cache_key

__all__ = ["OUTPUT_DIR", "compute_all", "describe_run", "main"]

log = logging.getLogger(__name__)

#: Quarto's project output, as configured in ``_quarto.yml``.
OUTPUT_DIR = PROJECT_ROOT / "_output" / "report"

#: The file each format writes.
OUTPUT_FILES = {"html": "index.html", "typst": "index.pdf"}

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


def default_jobs(profile: str, synthetic: bool) -> int:
    """How many tasks :func:`compute_all` runs at once by default.

    Two for the ``smoke`` profile on synthetic phantoms, on two or more cores: the small
    networks on 600 images gain little from a second thread, so two tasks with one core each
    finish sooner (measured on two cores: 108 s instead of 158 s for all five). One
    otherwise: on real data Task 1's chain of two trainings is the long pole and wants every
    core (``smoke`` on the real data took longer two at a time: Task 1a 311 s and 1b 353 s on
    one core each).
    """
    from pneumo.device import available_cores

    return 2 if profile == "smoke" and synthetic and available_cores() >= 2 else 1


def compute_all(profile: str | None = None, *, notebook: bool = True, jobs: int = 1,
                **params: Any) -> dict[str, Entry]:
    """Run (or look up) every task of the report, upstream tasks first, logging progress.

    Parameters
    ----------
    profile
        ``"smoke"``, ``"cpu"``, ``"gpu"`` or None (follows the data and the hardware).
    notebook
        Run each task script through papermill (the default, keeps the executed notebook);
        False computes in this process, one task at a time.
    jobs
        Tasks run at once, each in its own kernel, when the task graph allows (Task 3 needs
        nothing from Task 1, Tasks 2 and 4 need only Task 1). Each kernel gets ``cores // jobs``
        threads (``OMP_NUM_THREADS`` in its environment), whichever tasks run beside it, so a
        rerun gives the same numbers. The cache keys do not depend on ``jobs``: an entry
        computed either way is found either way.
    **params
        Config overrides applied to every task (e.g. ``device="cuda"``).

    Returns
    -------
    dict
        ``{task name: Entry}``, in the order of :data:`pneumo.runner.TASK_REGISTRY`.
    """
    from pneumo.runner import TASK_REGISTRY, run_task

    from pneumo.device import available_cores

    jobs = max(1, min(int(jobs), len(TASK_REGISTRY))) if notebook else 1
    total, cores = len(TASK_REGISTRY), available_cores()
    # A fixed share of the cores per kernel, whichever tasks happen to run together: on the
    # CPU a network's numbers depend on its thread count (the order of float sums), so the
    # share must not depend on timing for a rerun to give the same numbers.
    threads = max(1, cores // jobs)

    def run(name: str, threads: int) -> Entry:
        _TaskStream.current.task = name if jobs > 1 else None
        start = time.perf_counter()
        log.info("task %s (%d of %d) starting%s", name, list(TASK_REGISTRY).index(name) + 1, total,
                 f" on {threads} of {cores} cores" if jobs > 1 else "")
        # pneumo.device.configure_threads follows OMP_NUM_THREADS in the task's kernel.
        kernel_env = {"OMP_NUM_THREADS": str(threads)} if jobs > 1 else None
        with _TaskStream(name) if jobs > 1 else contextlib.nullcontext(sys.stderr) as stream:
            entry = run_task(name, profile, notebook=notebook, stderr=stream, kernel_env=kernel_env, **params)
        log.info("task %s ready after %.0f s: %s", name, time.perf_counter() - start, entry.path)
        return entry

    entries: dict[str, Entry] = {}
    waiting = list(TASK_REGISTRY)
    running: dict[concurrent.futures.Future, str] = {}
    with _tagged_logs(), concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while waiting or running:
                ready = [n for n in waiting if set(TASK_REGISTRY[n].upstream) <= entries.keys()]
                for name in ready[:jobs - len(running)]:
                    waiting.remove(name)
                    running[pool.submit(run, name, threads)] = name
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    entries[running.pop(future)] = future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return {name: entries[name] for name in TASK_REGISTRY}


@contextlib.contextmanager
def _tagged_logs() -> Iterator[None]:
    """Tag this process's log lines with the task a worker thread runs, as :class:`_TaskStream`
    tags the task kernels' lines."""

    def tag(record: logging.LogRecord) -> bool:
        task = getattr(_TaskStream.current, "task", None)
        if task and not getattr(record, "task_tag", None):
            record.msg, record.task_tag = f"[{task}] {record.msg}", task
        return True

    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(tag)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(tag)


class _TaskStream(io.TextIOBase):
    """A task kernel's console output while several tasks run: whole lines, tagged by task.

    Progress bars redraw a line with carriage returns; of such a line only its final state is
    printed, so two tasks' bars do not overwrite each other.
    """

    _lock = threading.Lock()
    #: ``current.task``: the task the calling worker thread runs (None outside the workers).
    current = threading.local()

    def __init__(self, name: str, stream: TextIO | None = None):
        self.tag = f"[{name}] "
        self.stream = stream or sys.stderr
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        self._emit(lines)
        return len(text)

    def _emit(self, lines: list[str]) -> None:
        shown = [line.rsplit("\r", 1)[-1] for line in lines]
        shown = [line for line in shown if line.strip()]
        if shown:
            with self._lock:
                self.stream.write("".join(f"{self.tag}{line}\n" for line in shown))
                self.stream.flush()

    def close(self) -> None:
        if not self.closed:
            self._emit([self.pending])
            self.pending = ""
        super().close()


def document_key(entries: dict[str, Entry]) -> tuple[str, dict[str, Any]]:
    """The cache key of the executed report, and what it was made from.

    The executed document (its Markdown and figures) depends on the entries it reads, the
    report's sources (``report/*.qmd``, ``_quarto.yml``), the package's code and the plotting
    libraries: any change to one of them executes the document again.

    Returns
    -------
    tuple
        ``(key, params)``; ``params`` is stored in the entry as ``params.json``.
    """
    import matplotlib
    import pandas

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    sources = sorted((PROJECT_ROOT / "report").glob("*.qmd")) + [PROJECT_ROOT / "_quarto.yml"]
    params = {
        "entries": {name: {"path": str(entry.path), "manifest": digest(entry.path / MANIFEST)}
                    for name, entry in entries.items()},
        "sources": {str(path.relative_to(PROJECT_ROOT)): digest(path) for path in sources},
        "libraries": {"matplotlib": matplotlib.__version__, "pandas": pandas.__version__},
    }
    return cache_key("report", params, "", ["pneumo"]), params


def render(quarto: str, env: dict[str, str], output_dir: Path, entries: dict[str, Entry],
           *, cache: str | None = None) -> int:
    """Render ``report/index.html`` and ``report/index.pdf`` under ``output_dir``, executing
    the document at most once.

    Quarto executes a document once per output format. Here the HTML render keeps its
    executed Markdown (``keep-md``), which goes into the results cache with its figures
    (task ``report``, keyed by :func:`document_key`); the PDF is typeset from that Markdown in
    a scratch copy of the project. When nothing the document depends on has changed, both
    formats are typeset from the cached Markdown and no cell runs. Plain ``quarto render``
    gives the same two files, executing the document for each.

    Returns
    -------
    int
        Quarto's exit code (0 when both files were written).
    """
    key, params = document_key(entries)
    store = ResultCache(cache)
    executed = store.entry("report", key)
    formats = ["html", "typst"]
    if executed.exists:
        log.info("the executed report is in the cache (%s): typesetting only", executed.path)
    else:
        code = _execute_html(quarto, env, output_dir, store, key, params)
        if code != 0:
            return code
        formats = ["typst"]
    log.info("typesetting %s from the executed document", " and ".join(
        {"html": "the HTML", "typst": "the PDF (Typst)"}[f] for f in formats))
    return _typeset(quarto, env, executed.path, formats, output_dir / "report")


def _execute_html(quarto: str, env: dict[str, str], output_dir: Path, store: ResultCache, key: str,
                  params: dict[str, Any]) -> int:
    """Render the HTML, running every cell, and cache the executed Markdown and figures."""
    document = PROJECT_ROOT / "report" / "index.qmd"
    executed = document.with_name("index.html.md")
    figures = document.with_name("index_files")
    try:
        log.info("rendering HTML with %s (running the report's cells)", quarto)
        html = subprocess.run([quarto, "render", str(document), "--to", "html", "-M", "keep-md:true",
                               "--output-dir", str(output_dir)], cwd=PROJECT_ROOT, env=env, check=False)
        if html.returncode != 0 or not executed.is_file():
            return html.returncode or 1
        with store.write("report", key) as out:
            out.json("params", params)
            out.file("index.md", executed)
            out.file(figures.name, figures)
        return 0
    finally:
        executed.unlink(missing_ok=True)
        shutil.rmtree(figures, ignore_errors=True)


def _typeset(quarto: str, env: dict[str, str], executed: Path, formats: list[str], output: Path) -> int:
    """Typeset the executed Markdown in ``executed`` to ``formats``, into ``output``.

    Runs in a scratch copy of the project whose only document is that Markdown, so no cell
    runs; the formats' settings are the project's.
    """
    import yaml

    with tempfile.TemporaryDirectory(prefix="pneumo-typeset-") as tmp:
        scratch = Path(tmp)
        config = yaml.safe_load((PROJECT_ROOT / "_quarto.yml").read_text())
        config["project"].update({"render": ["index.md"], "output-dir": "out"})
        config["project"].pop("pre-render", None)
        config["format"] = {name: config["format"][name] for name in formats}
        (scratch / "_quarto.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        bibliography = scratch / config["bibliography"]
        bibliography.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / config["bibliography"], bibliography)
        shutil.copy2(executed / "index.md", scratch / "index.md")
        shutil.copytree(executed / "index_files", scratch / "index_files")
        result = subprocess.run([quarto, "render"], cwd=scratch, env=env, check=False)
        if result.returncode != 0:
            return result.returncode
        output.mkdir(parents=True, exist_ok=True)
        for name in formats:
            shutil.copy2(scratch / "out" / OUTPUT_FILES[name], output / OUTPUT_FILES[name])
    return 0


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
    parser.add_argument("--jobs", type=int, default=None,
                        help="tasks computed at once where the task graph allows (default: 2 for "
                             "the smoke profile on phantoms with two or more cores, else 1)")
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
    from pneumo.data import locate_data

    entries = compute_all(profile, jobs=args.jobs or default_jobs(profile, synthetic=locate_data() is None))
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
    code = render(quarto, env, args.output_dir.resolve(), entries)
    if code == 0:
        log.info("rendered in %.0f s", time.perf_counter() - start)
        for name in ("index.html", "index.pdf"):
            print(f"wrote {args.output_dir / 'report' / name}")
    return code
