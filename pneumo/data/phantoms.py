"""Writing a synthetic phantom data set in the Kaggle layout, for tests and data-free runs.

:func:`make_phantoms` writes PNG files with Kaggle-style names (``NORMAL/IM-0001-0001.png``,
``NORMAL/NORMAL2-IM-0007-0001.png``, ``PNEUMONIA/person12_bacteria_40.png``,
``PNEUMONIA/person13_virus_41.png``), several images for some patients, and each patient in
exactly one of ``train/``, ``val/`` (a handful) or ``test/`` (~15 %).  Each image is drawn by
:func:`~pneumo.data.phantom_render.render_phantom` (normal, bacterial or viral lungs).  The
default of 200 images per class (600 in all) is enough for a smoke training run at 64 px to
learn in seconds, and takes a few seconds to generate.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm  # plain text bars: tqdm.auto warns in a kernel without ipywidgets

from pneumo.data.labels import CLASSES
from pneumo.data.phantom_render import draw_anatomy, render_phantom

__all__ = [
    "PHANTOM_VERSION",
    "MARKER_NAME",
    "DEFAULT_N_PER_CLASS",
    "make_phantoms",
    "is_phantom_folder",
]

logger = logging.getLogger(__name__)

#: Bump when rendering (:mod:`pneumo.data.phantom_render`) changes; stored in the marker
#: file, so old folders are regenerated.
PHANTOM_VERSION = "pneumo-phantom-v1"

#: Marker written last into the generated ``chest_xray`` folder (hidden: scanning ignores it).
MARKER_NAME = ".pneumo_phantoms.json"

#: Images per class (normal, bacterial, viral) over all splits.
DEFAULT_N_PER_CLASS: tuple[int, int, int] = (200, 200, 200)

# Fractions of each class's images in test/ and (roughly) the number of patients in val/.
_TEST_FRACTION = 0.15
_VAL_PATIENTS = 2


def _plan(n_per_class: Sequence[int], seed: int) -> list[dict]:
    """Files to write: one dict per image with its relpath, class, patient and image index.

    Patients get 1-3 images (55 % / 30 % / 15 %).  Per class, whole patients go to test until
    ~15 % of the images are there, :data:`_VAL_PATIENTS` patients go to val and the rest to
    train, so no patient is in two folders.
    """
    rng = np.random.default_rng([seed, 9999])
    plan: list[dict] = []
    person = 0  # person ids are unique across bacterial and viral patients
    for cls, n in enumerate(n_per_class):
        label = CLASSES[cls]
        sizes: list[int] = []
        while sum(sizes) < n:
            sizes.append(int(min(rng.choice([1, 2, 3], p=[0.55, 0.30, 0.15]), n - sum(sizes))))
        order = rng.permutation(len(sizes))
        folders = ["train"] * len(sizes)
        in_test = 0
        for rank, p in enumerate(order):
            # Keep at least one patient in train; test is filled first so it is never empty.
            if in_test < _TEST_FRACTION * n and rank < len(sizes) - 1:
                folders[p] = "test"
                in_test += sizes[p]
            elif folders.count("val") < _VAL_PATIENTS and rank < len(sizes) - 1 and len(sizes) > 4:
                folders[p] = "val"
        image_no = 0
        for p, count in enumerate(sizes):
            person += 1
            normal2 = label == "normal" and p % 3 == 2  # some normals use the NORMAL2- prefix
            for j in range(count):
                image_no += 1
                if label == "normal":
                    prefix = "NORMAL2-IM" if normal2 else "IM"
                    name = f"{prefix}-{person:04d}-{j + 1:04d}.png"
                    folder = "NORMAL"
                else:
                    word = "bacteria" if label == "bacterial" else "virus"
                    name = f"person{person}_{word}_{image_no}.png"
                    folder = "PNEUMONIA"
                plan.append(
                    {
                        "relpath": f"{folders[p]}/{folder}/{name}",
                        "label": label,
                        "class_index": cls,
                        "patient_index": p,
                        "image_index": image_no,
                    }
                )
    return plan


def _render_file(job: tuple[str, dict, int, int]) -> None:
    """Render one planned image and write it as PNG (worker entry point)."""
    out_root, item, size, seed = job
    cls, p, i = item["class_index"], item["patient_index"], item["image_index"]
    # Independent streams per patient (anatomy) and per image (everything else): an image
    # depends only on (seed, class, patient, image), not on generation order or workers.
    anatomy = draw_anatomy(np.random.default_rng([seed, cls, 1, p]))
    rng = np.random.default_rng([seed, cls, 2, i])
    result = render_phantom(item["label"], rng, size, anatomy=anatomy)
    path = Path(out_root, item["relpath"])
    Image.fromarray(result["image"], mode="L").save(path, format="PNG", compress_level=6)


def is_phantom_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a complete folder written by :func:`make_phantoms`."""
    return Path(root, MARKER_NAME).is_file()


def make_phantoms(
    root: str | os.PathLike,
    *,
    n_per_class: int | Sequence[int] = DEFAULT_N_PER_CLASS,
    size: int = 160,
    seed: int = 0,
    num_workers: int | None = None,
) -> Path:
    """Write a synthetic chest X-ray data set in the Kaggle layout (idempotent).

    Parameters
    ----------
    root
        Parent folder; the data set is written to ``<root>/chest_xray``.
    n_per_class
        Images per class (normal, bacterial, viral) over all splits, or one int for all three.
        The default, 200 each, trains a small CNN at 64 px in seconds.
    size
        Side of the square images in pixels.
    seed
        Seed; the same seed, counts and size give byte-identical files (same Pillow/zlib).
    num_workers
        Processes used to render; None means ``os.cpu_count()``.  Does not change the output.

    Returns
    -------
    pathlib.Path
        ``<root>/chest_xray``.

    Notes
    -----
    The folder is generated in a temporary sibling and renamed into place, with the marker
    file :data:`MARKER_NAME` (holding the parameters) written last; a complete folder with the
    same parameters is reused as is.  A previous phantom folder with other parameters is
    replaced; a ``chest_xray`` folder that is not a phantom folder is never touched (error).
    """
    if np.isscalar(n_per_class):
        counts = (int(n_per_class),) * 3
    else:
        counts = tuple(int(n) for n in n_per_class)
    if len(counts) != 3 or min(counts) < 2:
        raise ValueError(
            "n_per_class must be 3 counts of at least 2 (normal, bacterial, viral), "
            f"got {n_per_class!r}"
        )
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    root = Path(root).expanduser().absolute()
    target = root / "chest_xray"
    params = {
        "version": PHANTOM_VERSION,
        "n_per_class": list(counts),
        "size": int(size),
        "seed": int(seed),
    }

    root.mkdir(parents=True, exist_ok=True)
    # Tasks started at once (the report computes some concurrently) must not both generate:
    # the second waits for the first, then reuses its folder.
    lock = os.open(root / ".chest_xray.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _generate_or_reuse(target, params, num_workers)
    finally:
        os.close(lock)  # releases the lock


def _generate_or_reuse(target: Path, params: dict, num_workers: int | None) -> Path:
    """:func:`make_phantoms` once its lock is held."""
    counts, size, seed = tuple(params["n_per_class"]), params["size"], params["seed"]
    if target.exists():
        marker = target / MARKER_NAME
        if not marker.is_file():
            raise FileExistsError(
                f"{target} exists but is not a phantom folder (no {MARKER_NAME}); refusing to "
                "overwrite it. Pass another root."
            )
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = {}
        if {k: previous.get(k) for k in params} == params:
            logger.info("reusing phantom data set %s", target)
            return target
        logger.info(
            "phantom parameters changed (%s -> %s); regenerating %s", previous, params, target
        )

    plan = _plan(counts, seed)
    tmp = Path(tempfile.mkdtemp(prefix=".chest_xray.", suffix=".tmp", dir=target.parent))
    try:
        for folder in sorted({str(Path(item["relpath"]).parent) for item in plan}):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        jobs = [(str(tmp), item, int(size), int(seed)) for item in plan]
        n_workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
        bar = dict(total=len(jobs), desc="phantoms", unit="img", disable=None, leave=False)
        if n_workers <= 1 or len(jobs) < 64:
            for job in tqdm(jobs, **bar):
                _render_file(job)
        else:
            import concurrent.futures

            with concurrent.futures.ProcessPoolExecutor(max_workers=n_workers) as pool:
                for _ in tqdm(pool.map(_render_file, jobs, chunksize=8), **bar):
                    pass
        record = {**params, "n_images": len(plan)}
        (tmp / MARKER_NAME).write_text(json.dumps(record, indent=1))  # written last
        if target.exists():
            # Only reached for an outdated phantom folder (checked above).
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %d phantom images to %s", len(plan), target)
    return target
