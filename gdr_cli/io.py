"""Atomic writes: a crash or Ctrl-C leaves the old artifact or the new one, never half of one.

Single files go to a temporary name in the same folder and are renamed over the target.
Whole artifact folders are built in a hidden staging folder next to the final one
(manifest last) and swapped in by `staged_dir`; `recover_dir` undoes a swap cut short.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
"""Mode of files we write: what `open()` would give (mkstemp alone would make them 0600)."""


def _tmp_name(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; on success it is renamed to `path`.

    For writers that want a file name (polars `write_parquet`, `torch.save`, matplotlib).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(path: Path, frame: Any) -> None:
    """Write a polars DataFrame to Parquet atomically (zstd)."""
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, compression="zstd")


def recover_dir(final: Path) -> None:
    """Finish or undo a folder swap that a crash cut short, so `final` holds a whole artifact.

    If `final` is missing but the previous version was moved aside, move it back.
    Leftover staging folders of dead writers are removed.
    """
    parent = final.parent
    if not parent.exists():
        return
    old = sorted(parent.glob(f".{final.name}.old-*"))
    if not final.exists() and old:
        os.replace(old[-1], final)
        old = old[:-1]
    for leftover in old:
        shutil.rmtree(leftover, ignore_errors=True)
    for staging in parent.glob(f".{final.name}.staging-*"):
        pid = staging.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Build an artifact folder in a staging folder and swap it in when the block succeeds.

    Usage: `with staged_dir(out) as tmp: write files into tmp; write_manifest(tmp, m)  # last`.
    On an exception (including KeyboardInterrupt) the staging folder is removed and the
    previous `final` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    staging = final.parent / f".{final.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    aside = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, aside)
    os.replace(staging, final)
    shutil.rmtree(aside, ignore_errors=True)
