"""The one place where the compute device, seeds and numeric precision are chosen."""

from __future__ import annotations

import contextlib
import logging
import os
import random

import numpy as np
import torch

from pneumo.config import ConfigError

log = logging.getLogger(__name__)


def default_profile(data: str | os.PathLike | None = None) -> str:
    """The profile that fits this machine and data: ``"smoke"`` without chest X-rays, else
    ``"gpu"`` when CUDA is available, else ``"cpu"``.

    With no data folder (``data``, ``$PNEUMO_DATA``, ``data/chest_xray``) the tasks run on
    synthetic phantoms, which the small ``smoke`` models learn in minutes; the larger
    profiles would spend ten times longer for the same demonstration.
    """
    from pneumo.data import locate_data

    if locate_data(data) is None:
        return "smoke"
    return "gpu" if torch.cuda.is_available() else "cpu"


def pick_device(name: str = "auto") -> torch.device:
    """Resolve ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` to a device.

    This is also the ``check`` of every config's ``device`` field, so an accelerator that is
    missing is reported when the config is built, before any data are read.

    Raises
    ------
    ConfigError
        When ``name`` is not a device, or names an accelerator this machine does not have;
        the message says what to use instead.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was asked for but CUDA is not available on this "
                              "machine; use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r} was asked for but this machine has {count} CUDA "
                              f"device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"device {name!r} was asked for but Apple's MPS is not available on "
                              "this machine; use --device cpu (or auto)")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def worker_devices(name: str = "auto") -> list[str]:
    """The devices that worker processes share out (:func:`pneumo.pool.map_in_workers`).

    ``"auto"`` and ``"cuda"`` mean every visible GPU (``$CUDA_VISIBLE_DEVICES`` narrows them),
    so independent trainings spread over all of them; any other name is that one device.
    """
    device = pick_device(name)
    if device.type == "cuda" and device.index is None:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [str(device)]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (bfloat16 where supported), a no-op elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


#: Images per forward pass when a network only scores (no gradients). On CPU, 64 images keep a
#: 64-pixel network's activations in cache: measured on 2 cores, the 1a network scores ~1100
#: images/s in batches of 64 against ~400 in batches of 256, an autoencoder ~1000 against ~400.
INFERENCE_BATCH = 64


def memory_format(device: torch.device) -> torch.memory_format:
    """The memory format networks and image batches use on ``device``.

    channels_last on CUDA and on CPU, where oneDNN runs these convolutions faster (VGG at
    128 px on 2 cores: ~75 vs ~55 images/s; the autoencoder ~1.5x); MPS support is patchy,
    so the default layout there.
    """
    return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format


def available_cores() -> int:
    """The cores this process may run on (its affinity, which containers may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_budget() -> int:
    """The CPU threads this process should use: ``$OMP_NUM_THREADS`` where set (e.g. a task
    kernel sharing the machine with another, :func:`pneumo.report.build.compute_all`), else
    every core."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return available_cores()


def configure_threads() -> int:
    """Use :func:`thread_budget` threads for intra-op parallelism (torch's default can be
    lower in containers)."""
    n = thread_budget()
    torch.set_num_threads(n)
    return n
