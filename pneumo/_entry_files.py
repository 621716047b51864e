"""An entry folder's files on disk: checking them against the manifest, publishing the folder.

Low-level helpers of :mod:`pneumo.results`.  The manifest (:data:`MANIFEST`) lists every
file of an entry with its size and SHA-256; :func:`check_all` and :func:`check_file` compare
files with it, reading through a descriptor of the entry folder so that a check sees one
version of the entry.  :func:`publish` moves a finished temporary folder into place in one
step, replacing an entry already there.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "Damaged", "file_sha256", "read_at", "manifest_at", "check_file", "check_all",
           "exchange", "publish"]

#: The file listing every other file of an entry with its size and SHA-256, written last.
MANIFEST = "manifest.json"


def file_sha256(fh) -> str:
    """Hex SHA-256 of what is left to read in the binary file object ``fh``."""
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


class Damaged(Exception):
    """What is wrong with an entry's files (becomes a CorruptEntryError or a warning in pneumo.results)."""


def read_at(folder: int, name: str) -> bytes:
    """The bytes of ``name`` in the folder opened as file descriptor ``folder``."""
    with os.fdopen(os.open(name, os.O_RDONLY, dir_fd=folder), "rb") as fh:
        return fh.read()


def manifest_at(folder: int) -> dict[str, Any]:
    """The ``files`` of the manifest in the folder opened as ``folder``: name -> size and SHA-256."""
    try:
        files = json.loads(read_at(folder, MANIFEST))["files"]
    except FileNotFoundError:
        raise Damaged(f"no {MANIFEST} (unfinished, or written by an older version)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise Damaged(f"unreadable {MANIFEST} ({type(error).__name__}: {error})") from None
    if not isinstance(files, dict) or "params.json" not in files:
        raise Damaged(f"{MANIFEST} lists no params.json")
    return files


def check_file(name: str, record: Any, size: int, sha256) -> None:
    """Raise :class:`Damaged` unless a file of ``size`` bytes (``sha256()``) matches ``record``."""
    if not isinstance(record, dict):
        raise Damaged(f"{name} is not listed in {MANIFEST}")
    if size != record.get("size"):
        raise Damaged(f"{name} has {size} bytes, {MANIFEST} says {record.get('size')}")
    if sha256() != record.get("sha256"):
        raise Damaged(f"{name} differs from the file that was written (its SHA-256 in {MANIFEST})")


def check_all(folder: int) -> None:
    """Raise :class:`Damaged` unless every file of the manifest matches it."""
    for name, record in manifest_at(folder).items():
        with os.fdopen(os.open(name, os.O_RDONLY, dir_fd=folder), "rb") as fh:
            check_file(name, record, os.fstat(fh.fileno()).st_size, lambda: file_sha256(fh))


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported.

    A reader then finds either the old or the new folder at ``b``, never no folder.
    """
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def publish(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing an entry already there."""
    try:
        os.rename(tmp, final)
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    # An entry is in place (a forced recompute, or a damaged entry being replaced): swap.
    if exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old entry
        return
    trash = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
    os.rename(final, trash)
    os.rename(tmp, final)
    shutil.rmtree(trash, ignore_errors=True)
