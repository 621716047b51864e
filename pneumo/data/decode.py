"""Decode images once into a square 8-bit grey array and cache the result on disk.

Decoding thousands of JPEGs is the slowest step of loading the data, so it is done once per
(file list, resolution, decoder version) and stored as one ``.npy`` file::

    <cache_dir>/decoded/<key>.npy    uint8, shape (N, resolution, resolution)
    <cache_dir>/decoded/<key>.json   the rows it holds: relpath, size, mtime_ns, sha1,
                                     original height/width; plus the unreadable files

``key`` hashes the sorted relative paths, file sizes, ``mtime_ns``, the resolution and
:data:`DECODER_VERSION`, so touching or replacing any file, or changing the resolution,
invalidates the entry.  Both files are written to a temporary name in the same folder and
moved into place with :func:`os.replace`; the ``.json`` is written last and its presence
marks a complete entry, so an interrupted run never leaves a half-written cache behind.

Conversion choices (see :func:`to_grey_uint8` and :func:`decode_image`):

* colour, palette and alpha images become 8-bit grey with PIL's ITU-R 601-2 luma
  (identity for the grey-stored-as-RGB Kaggle JPEGs); alpha is ignored;
* 16-bit and 32-bit images are min-max scaled over their own value range to 0..255;
* center crop to a square on the shorter side (torchxrayvision's ``XRayCenterCrop``), then
  an antialiased bilinear resize.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm  # plain text bars: tqdm.auto warns in a kernel without ipywidgets

__all__ = [
    "DECODER_VERSION",
    "to_grey_uint8",
    "center_crop_box",
    "decode_bytes",
    "decode_image",
    "decode_files",
    "cache_key",
    "load_decoded",
]

logger = logging.getLogger(__name__)

#: Bump when decoding output changes (conversion, crop, filter): it is part of the cache key
#: and of the dataset fingerprint, so stale arrays and results are never reused.
DECODER_VERSION = "pneumo-decode-v1:L601:minmax16:crop-center:bilinear-rg3:jpeg-draft2x"

# Below this many files the process pool costs more than it saves (start-up ~0.1-0.3 s).
_MIN_FILES_FOR_POOL = 64

_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def to_grey_uint8(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit grey (mode ``L``).

    Parameters
    ----------
    img
        A loaded image of any mode: ``L``, ``1``, ``P``, ``RGB``, ``RGBA``, ``LA``, ``CMYK``,
        16-bit ``I;16*``, 32-bit ``I`` or float ``F``.

    Returns
    -------
    PIL.Image.Image
        Mode ``L``, same size.

    Notes
    -----
    High-bit-depth images are min-max scaled over their own range,
    ``(x - min) * 255 / (max - min)``.  Medical 16-bit PNGs usually hold 10-14 significant bits
    (e.g. a maximum of 4095), so the common ``x >> 8`` would map them to nearly black images;
    scaling by the nominal bit depth instead would still depend on a header we do not have.
    Using the image's actual range gives every image the full 8-bit range, which is what a
    display window would do.  A constant image maps to all zeros.  8-bit images are left
    unscaled: their range is already the one the exporter chose.
    """
    if img.mode == "L":
        return img
    if img.mode in _HIGH_BIT_MODES:
        # (H, W) uint16/int32/float32 -> float64 for an exact, overflow-free rescale.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if hi > lo:
            arr = (arr - lo) * (255.0 / (hi - lo))
        else:
            arr = np.zeros_like(arr)
        return Image.fromarray(np.rint(arr).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode == "P" and "transparency" in img.info
    ):
        # Alpha is dropped rather than composited: exported radiographs with an alpha channel
        # are opaque, and compositing on an arbitrary background would invent intensities.
        img = img.convert("RGBA").convert("RGB")
    if img.mode not in ("RGB",):
        img = img.convert("RGB")  # palette, 1-bit, CMYK, YCbCr, ... -> RGB first
    return img.convert("L")  # ITU-R 601-2 luma; identity when R == G == B


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The centred square ``(left, upper, right, lower)`` box on the shorter side.

    Same convention as torchxrayvision's ``XRayCenterCrop``: the longer side is cropped
    equally on both ends (the extra pixel of an odd difference goes to the far end).
    """
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


@contextlib.contextmanager
def _strict_truncation():
    """Make PIL raise on truncated files instead of padding them with grey.

    The flag is process-global in PIL; it is forced off for the duration of a decode and
    restored afterwards so that code elsewhere that relies on it is not affected.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def decode_bytes(data: bytes, resolution: int) -> tuple[np.ndarray, int, int]:
    """Decode an encoded image to a square grey array.

    Parameters
    ----------
    data
        The file's bytes (JPEG, PNG, or anything PIL reads).
    resolution
        Side of the output square, in pixels.

    Returns
    -------
    image : numpy.ndarray
        uint8, shape ``(resolution, resolution)``.
    orig_height, orig_width : int
        Size of the stored image before any crop or resize (after EXIF orientation).

    Raises
    ------
    Exception
        Whatever PIL raises for unreadable, truncated or unsupported data
        (``PIL.UnidentifiedImageError``, ``OSError``, ``SyntaxError``, ``ValueError``, ...).

    Notes
    -----
    The resize is PIL's bilinear filter with ``reducing_gap=3``.  PIL widens the bilinear
    (triangle) kernel by the downscale factor, so it is properly antialiased and matches
    ``torchvision``'s ``Resize(antialias=True)``; unlike Lanczos it does not ring around the
    sharp collimator edges and lead markers of radiographs.  ``reducing_gap`` first box-reduces
    large originals by an integer factor, which makes 2000-pixel inputs fast at no visible cost.
    For JPEGs, :meth:`PIL.Image.Image.draft` additionally lets libjpeg decode at 1/2..1/8 scale
    (DCT scaling), never below twice the target resolution.
    """
    with _strict_truncation(), Image.open(io.BytesIO(data)) as img:
        # EXIF orientation is applied before measuring, so the size is the displayed one.
        orientation = img.getexif().get(0x0112, 1)
        width, height = img.size
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        if img.format == "JPEG" and img.mode in ("L", "RGB", "YCbCr"):
            # Shorter side after draft stays >= 2 * resolution, so the final filter still
            # does the antialiasing; draft only picks power-of-two DCT scales.
            side = min(img.size)
            scale = 2 * resolution / side
            img.draft("L", (max(1, int(img.size[0] * scale)), max(1, int(img.size[1] * scale))))
        img.load()  # forces the full decode now: truncated data raises here
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
        grey = to_grey_uint8(img)
    # draft() may have shrunk the image; crop in its own pixel grid.  Crop first, then resize:
    # resize(box=...) would let the filter reach pixels outside the box at the edges.
    square = grey.crop(center_crop_box(*grey.size))
    out = square.resize((resolution, resolution), Image.Resampling.BILINEAR, reducing_gap=3.0)
    arr = np.asarray(out, dtype=np.uint8)  # (resolution, resolution)
    return arr, int(height), int(width)


def decode_image(path: str | os.PathLike, resolution: int):
    """Read and decode one file, never raising.

    Parameters
    ----------
    path
        Image file.
    resolution
        Output side in pixels.

    Returns
    -------
    tuple
        ``(image, orig_height, orig_width, sha1, error)``: ``image`` is a uint8
        ``(resolution, resolution)`` array or None when the file cannot be decoded, in which
        case ``error`` says why (``"OSError: image file is truncated ..."``).  ``sha1`` is the
        hex SHA-1 of the file's bytes (None if the file cannot be read at all); it comes for
        free here because the bytes are in memory anyway, and is used to find duplicates.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return None, 0, 0, None, f"{type(err).__name__}: {err}"
    sha1 = hashlib.sha1(data).hexdigest()
    if not data:
        return None, 0, 0, sha1, "empty file (0 bytes)"
    try:
        image, height, width = decode_bytes(data, resolution)
    except UnidentifiedImageError:
        # PIL's own message names the in-memory buffer (<_io.BytesIO object at 0x...>), not
        # the file; the caller lists the file next to this reason.
        return None, 0, 0, sha1, "not an image PIL can read (unknown or damaged format)"
    except Exception as err:  # noqa: BLE001 - any decoder failure means "skip this file"
        return None, 0, 0, sha1, f"{type(err).__name__}: {err}".strip()
    return image, height, width, sha1, None


def _decode_star(args: tuple[str, int]):
    return decode_image(*args)


def decode_files(
    paths: Sequence[str], resolution: int, *, num_workers: int | None = None, desc: str = "decode"
) -> list[tuple]:
    """Decode many files, in parallel when worth it, with a progress bar.

    Parameters
    ----------
    paths
        Files to decode, in output order.
    resolution
        Output side in pixels.
    num_workers
        Worker processes; None means ``os.cpu_count()``.  With 1 worker, or fewer than
        64 files, decoding runs in this process.
    desc
        Progress bar label.

    Returns
    -------
    list of tuple
        One :func:`decode_image` result per path, in the order of ``paths``.
    """
    n_workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    jobs = [(str(p), int(resolution)) for p in paths]
    bar = dict(total=len(jobs), desc=desc, unit="img", disable=None, leave=False)
    if n_workers <= 1 or len(jobs) < _MIN_FILES_FOR_POOL:
        return [decode_image(*job) for job in tqdm(jobs, **bar)]
    # Chunks amortise inter-process overhead (each result is ~resolution^2 bytes) while still
    # giving the progress bar and load balancing something to work with.
    chunksize = max(1, min(64, len(jobs) // (n_workers * 8)))
    with concurrent.futures.ProcessPoolExecutor(max_workers=n_workers) as pool:
        return list(tqdm(pool.map(_decode_star, jobs, chunksize=chunksize), **bar))


# ---------------------------------------------------------------------------------------
# On-disk cache
# ---------------------------------------------------------------------------------------
def cache_key(
    relpaths: Iterable[str], sizes: Iterable[int], mtimes_ns: Iterable[int], resolution: int
) -> str:
    """Hex key of a decoded-array cache entry.

    Hashes the sorted ``(relpath, size, mtime_ns)`` triples, the resolution and
    :data:`DECODER_VERSION`.  ``mtime_ns`` makes the key change when a file is rewritten in
    place; it also means that copying the data to another machine re-decodes once there.
    """
    triples = sorted(zip(relpaths, (int(s) for s in sizes), (int(m) for m in mtimes_ns)))
    h = hashlib.sha256()
    h.update(json.dumps([DECODER_VERSION, int(resolution)]).encode())
    for rel, size, mtime in triples:
        h.update(f"\n{rel}\t{size}\t{mtime}".encode())
    return h.hexdigest()[:24]


def _atomic_write(target: Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``target``, then rename it over."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_decoded(
    paths: Sequence[str],
    relpaths: Sequence[str],
    sizes: Sequence[int],
    mtimes_ns: Sequence[int],
    resolution: int,
    cache_dir: str | os.PathLike | None,
    *,
    num_workers: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Decoded images for the given files, from the cache or by decoding (then cached).

    Parameters
    ----------
    paths, relpaths, sizes, mtimes_ns
        Row-aligned file facts from :func:`~pneumo.data.scan.scan_folder`.
    resolution
        Output side in pixels.
    cache_dir
        Folder that holds ``decoded/``; None disables the on-disk cache.
    num_workers
        Decoding processes (None: ``os.cpu_count()``).

    Returns
    -------
    images : numpy.ndarray
        uint8, shape ``(N, resolution, resolution)``, row-aligned with the input; rows of
        unreadable files are all zero.
    info : dict
        ``sha1`` (list of str or None), ``orig_height``, ``orig_width`` (lists of int),
        ``errors`` (dict relpath -> reason for unreadable files), ``cache_hit`` (bool),
        ``cache_file`` (str or None), ``key`` (str).
    """
    n = len(relpaths)
    key = cache_key(relpaths, sizes, mtimes_ns, resolution)
    npy = json_path = None
    if cache_dir is not None:
        folder = Path(cache_dir).expanduser() / "decoded"
        npy, json_path = folder / f"{key}.npy", folder / f"{key}.json"
        cached = _read_entry(npy, json_path, relpaths, resolution)
        if cached is not None:
            images, meta = cached
            logger.info("loaded %d decoded images from cache %s", n, npy)
            return images, {**meta, "cache_hit": True, "cache_file": str(npy), "key": key}

    results = decode_files(paths, resolution, num_workers=num_workers)
    images = np.zeros((n, resolution, resolution), dtype=np.uint8)
    meta: dict = {"sha1": [], "orig_height": [], "orig_width": [], "errors": {}}
    for i, (image, height, width, sha1, error) in enumerate(results):
        if image is not None:
            images[i] = image
        else:
            meta["errors"][relpaths[i]] = error
        meta["sha1"].append(sha1)
        meta["orig_height"].append(height)
        meta["orig_width"].append(width)

    if npy is not None:
        try:
            _atomic_write(npy, lambda fh: np.save(fh, images, allow_pickle=False))
            record = {
                "decoder_version": DECODER_VERSION,
                "resolution": int(resolution),
                "relpath": list(relpaths),
                "size": [int(s) for s in sizes],
                "mtime_ns": [int(m) for m in mtimes_ns],
                **meta,
            }
            # The json goes last: its presence marks a complete entry.
            _atomic_write(json_path, lambda fh: fh.write(json.dumps(record).encode()))
            logger.info("cached %d decoded images at %s", n, npy)
        except OSError as err:
            # A read-only or full cache folder must not stop the run; the next run re-decodes.
            logger.warning("could not write the decode cache %s: %s", npy, err)
    return images, {**meta, "cache_hit": False, "cache_file": str(npy) if npy else None, "key": key}


def _read_entry(npy: Path, json_path: Path, relpaths: Sequence[str], resolution: int):
    """``(images, meta)`` of a complete, consistent cache entry, or None."""
    if not (json_path.is_file() and npy.is_file()):
        return None
    try:
        record = json.loads(json_path.read_text())
        images = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable decode cache entry %s: %s", npy, err)
        return None
    expected_shape = (len(relpaths), resolution, resolution)
    if (
        record.get("decoder_version") != DECODER_VERSION
        or record.get("relpath") != list(relpaths)
        or images.shape != expected_shape
        or images.dtype != np.uint8
    ):
        # Same key but different content: only possible with a hash collision or an edited
        # file; decoding again is always safe.
        logger.warning("decode cache entry %s does not match the files; decoding again", npy)
        return None
    meta = {k: record[k] for k in ("sha1", "orig_height", "orig_width", "errors")}
    return images, meta
