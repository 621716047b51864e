"""Run task scripts three ways: from the command line, through papermill, and from the report.

A task script (``tasks/<name>.py``) is a jupytext percent script with a ``parameters`` cell
listing every field of the task's config. :func:`run_task` looks the result up in the cache
first (a hit costs a data-fingerprint check, seconds) and only then executes the script as a
notebook through papermill; the executed notebook is stored in the entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from pneumo.config import ConfigError, TaskConfig
from pneumo.errors import UserError
from pneumo.results import PROJECT_ROOT, Entry

log = logging.getLogger(__name__)

TASK_DIR = PROJECT_ROOT / "tasks"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A task: its script, its config class, the function that computes it, and its inputs.

    ``config`` and ``run`` are ``"module:attribute"`` paths, imported on first use, so that
    ``import pneumo.runner`` stays cheap for the report's first cell.
    """

    name: str
    script_name: str
    config_path: str
    run_path: str
    #: Modules whose source enters the task's cache key: editing one recomputes the task.
    code: tuple[str, ...] = ()
    #: Tasks whose entries this one reads: they are computed first.
    upstream: tuple[str, ...] = ()

    @property
    def script(self) -> Path:
        return TASK_DIR / self.script_name

    @property
    def config(self) -> type[TaskConfig]:
        return _attribute(self.config_path)

    @property
    def run(self) -> Callable[..., Entry]:
        return _attribute(self.run_path)


def _declare(*specs: TaskSpec) -> dict[str, TaskSpec]:
    registry = {spec.name: spec for spec in specs}
    for spec in specs:  # upstream tasks are declared earlier: the order is a valid run order
        earlier = list(registry)[:list(registry).index(spec.name)]
        if not set(spec.upstream) <= set(earlier):
            raise ValueError(f"task {spec.name!r}: upstream {spec.upstream} not all declared before it")
    return registry


#: Modules every task's numbers depend on: data, seeds and precision, pixels, networks, the
#: training loop, metrics.
_CORE = ("pneumo.data", "pneumo.device", "pneumo.imaging", "pneumo.models", "pneumo.training", "pneumo.metrics")
_CLASSIFIER_CODE = ("pneumo.classification", "pneumo.shift", "pneumo.pool", "pneumo.upstream", *_CORE)

#: The task graph: every task in a valid run order, with its code and the tasks it reads.
TASK_REGISTRY: dict[str, TaskSpec] = _declare(
    TaskSpec("binary", "binary.py", "pneumo.classification:BinaryConfig",
             "pneumo.classification:run_classification", code=_CLASSIFIER_CODE),
    TaskSpec("multiclass", "multiclass.py", "pneumo.classification:MulticlassConfig",
             "pneumo.classification:run_classification", code=_CLASSIFIER_CODE, upstream=("binary",)),
    TaskSpec("embeddings", "embeddings.py", "pneumo.embeddings:EmbeddingsConfig",
             "pneumo.embeddings:run_embeddings",
             code=("pneumo.embeddings", "pneumo.shift", *_CORE, "pneumo.upstream"),
             upstream=("binary", "multiclass")),
    TaskSpec("anomaly", "anomaly.py", "pneumo.anomaly:AnomalyConfig", "pneumo.anomaly:run_anomaly",
             code=("pneumo.anomaly", "pneumo.shift", "pneumo.pool", *_CORE)),
    TaskSpec("explain", "explain.py", "pneumo.explain:ExplainConfig", "pneumo.explain:run_explain",
             code=("pneumo.explain", *_CORE, "pneumo.upstream"), upstream=("binary", "multiclass")),
)


def _attribute(path: str):
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def task_spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of a task in :data:`TASK_REGISTRY`."""
    if name not in TASK_REGISTRY:
        raise ConfigError(f"unknown task {name!r}; tasks: {', '.join(TASK_REGISTRY)}")
    return TASK_REGISTRY[name]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (papermill, Quarto), False in ``python tasks/x.py``."""
    shell = sys.modules.get("IPython")
    return bool(shell and shell.get_ipython() is not None)


def task_config(cls: type[TaskConfig], namespace: Mapping[str, Any]) -> TaskConfig:
    """The config of a running task script.

    In a notebook the papermill-injected globals are the parameters; as a plain script
    the command-line flags are (``python tasks/binary.py --device cuda --epochs 30``).
    """
    if in_notebook():
        return cls.from_namespace(namespace)
    return cls.from_cli(sys.argv[1:])


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines with time stamps for task scripts (the package itself only logs).

    On the command line, a user error (:class:`pneumo.errors.UserError`: a bad parameter, data
    folder, results folder or device) ends the run with its one-line message and exit code 2
    instead of a traceback.
    """
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    if not in_notebook():
        sys.excepthook = _user_error_hook


def _user_error_hook(kind, error, traceback) -> None:
    if issubclass(kind, UserError):
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted: finished cache entries are kept, the unfinished one was not written",
              file=sys.stderr)
        sys.exit(130)
    sys.__excepthook__(kind, error, traceback)


def lookup_task(name: str, profile: str | None = None, **params: Any) -> Entry:
    """The task's cache entry for these settings, computed or not (see ``Entry.exists``).

    Nothing runs: the entry's key comes from the config, the data's fingerprint and the
    task's code. When an upstream task is missing, the returned entry is that missing
    upstream entry (:func:`pneumo.upstream.first_missing`).

    Parameters
    ----------
    name, profile, **params
        As in :func:`run_task`.
    """
    spec = task_spec(name)
    return spec.run(spec.config.create(profile, **params), compute=False)


def run_task(name: str, profile: str | None = None, *, notebook: bool = True,
             stderr: TextIO | None = None, kernel_env: Mapping[str, str] | None = None,
             **params: Any) -> Entry:
    """Return the task's cache entry, computing it through papermill when missing.

    Parameters
    ----------
    name
        A key of :data:`TASK_REGISTRY`: ``"binary"``, ``"multiclass"``, ``"embeddings"``,
        ``"anomaly"``, ``"explain"``.
    profile
        ``"smoke"``, ``"cpu"``, ``"gpu"`` or None (follows the hardware).
    notebook
        Execute the task script as a notebook through papermill (keeps the executed notebook
        in the entry); False computes in this process.
    stderr
        Where the notebook's console output (log lines, progress bars) goes as it comes;
        default ``sys.stderr``.
    kernel_env
        Variables added to the notebook kernel's environment (e.g. ``OMP_NUM_THREADS`` when
        several tasks share the machine); they do not change the entry.
    **params
        Any field of the task's config; unknown names are rejected before anything runs.
    """
    spec = task_spec(name)
    config = spec.config.create(profile, **params)
    if not config.force:
        entry = spec.run(config, compute=False)  # as lookup_task, with the config made once
        if entry.exists:
            return entry
    if not notebook:
        return spec.run(config)
    return _run_notebook(spec, config, stderr or sys.stderr, kernel_env or {})


def _run_notebook(spec: TaskSpec, config: TaskConfig, stderr: TextIO, kernel_env: Mapping[str, str]) -> Entry:
    import jupytext
    import papermill

    with tempfile.TemporaryDirectory(prefix="pneumo-") as tmp:
        source = Path(tmp) / f"{spec.script.stem}.ipynb"
        executed = Path(tmp) / f"{spec.script.stem}.executed.ipynb"
        notebook = jupytext.read(spec.script)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        jupytext.write(notebook, source)
        log.info("running %s through papermill (profile %s)", spec.script.name, config.profile)
        # The notebook's log lines (task phase, grid variant k of n, epoch, time left) go to
        # this process's stderr as they come, so a long run shows where it is.
        papermill.execute_notebook(
            str(source), str(executed), parameters=config.to_dict(), kernel_name="python3",
            cwd=str(PROJECT_ROOT), progress_bar=False, log_output=False, stderr_file=stderr,
            kernel_manager_class=task_kernel_manager(kernel_env),
        )
        entry = _entry_printed_by(executed)
        if entry is None or not entry.exists:
            raise RuntimeError(f"{spec.script} ran but its last cell printed no cache entry path")
        # Copied next to the published entry (it is not in its manifest), then renamed, so a
        # reader never finds half a notebook.
        partial = entry.path / f".notebook-{uuid.uuid4().hex[:8]}.tmp"
        shutil.copy2(executed, partial)
        os.replace(partial, entry.path / "notebook.ipynb")
    return entry


def task_kernel_manager(env: Mapping[str, str]) -> type:
    """The Jupyter kernel manager papermill starts a task's kernel with.

    It adds ``env`` to the kernel's environment, and provisions CurveZMQ keys where the
    kernel supports them, so the kernel's traffic on localhost is encrypted and it does not
    warn that it runs over plain TCP.
    """
    from jupyter_client import AsyncKernelManager
    from traitlets import TraitError

    class TaskKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            with contextlib.suppress(TraitError):  # pyzmq built without CurveZMQ: plain TCP
                self.transport_encryption = "auto"

        async def start_kernel(self, **kw: Any) -> None:
            kw["env"] = {**os.environ, **kw.get("env", {}), **env}
            await super().start_kernel(**kw)

    return TaskKernelManager


def _entry_printed_by(notebook_path: Path) -> Entry | None:
    """The entry whose path the notebook's last code cell printed (the task scripts' contract).

    Reading it from the notebook, rather than recomputing the key here, stays right even when
    a source file changes while the notebook runs.
    """
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    if not code_cells:
        return None
    text = "".join(out.get("text", "") for out in code_cells[-1].get("outputs", [])
                   if out.get("output_type") == "stream" and out.get("name") == "stdout")
    lines = text.strip().splitlines()
    return Entry(lines[-1].strip()) if lines else None
