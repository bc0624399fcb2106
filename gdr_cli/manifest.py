"""Artifact manifests (PROTOCOL.md §2): what built an artifact, from what, and with which config.

Every artifact folder ends with a `manifest.json`, written last. A consumer records each
input as (path, sha256 of that input's manifest) and refuses to run when an input's
manifest changed since, naming the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gdr_cli import __version__
from gdr_cli.errors import GdrError, StaleInputError
from gdr_cli.io import atomic_write_text, recover_dir

MANIFEST = "manifest.json"


class InputRef(BaseModel):
    """An upstream artifact: where it is (relative to the data root) and its manifest's hash."""

    model_config = ConfigDict(extra="forbid")
    path: str
    stage: str
    sha256: str


class Manifest(BaseModel):
    """The description of one artifact folder."""

    model_config = ConfigDict(extra="forbid")
    stage: str = Field(description="Stage that wrote the artifact, e.g. 'preprocess'.")
    tool_version: str = __version__
    dataset: str
    name: str = Field(description="Artifact name: dataset, ID-set, run or recs name.")
    command: str = Field(description="A command line that rebuilds this artifact.")
    config: dict[str, Any] = Field(default_factory=dict, description="Resolved config.")
    seed: int | None = None
    inputs: dict[str, InputRef] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(
        default_factory=dict,
        description="Files in the folder -> sha256 of their content (so a rebuilt input always reads as changed).",
    )
    stats: dict[str, Any] = Field(default_factory=dict)
    wall_time_s: float = 0.0
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


_COMMAND: list[str] | None = None


def set_command(argv: list[str]) -> None:
    """Record the `gdr ...` command being run (the CLI calls this; tests calling stages directly need not)."""
    global _COMMAND
    _COMMAND = list(argv)


def command_line() -> str:
    """The command that is running now, as a user would retype it."""
    if _COMMAND is not None:
        return shlex.join(_COMMAND)
    argv = list(sys.argv)
    if argv and argv[0].endswith(("gdr", "__main__.py")):
        argv[0] = "gdr"
    return shlex.join(argv)


def manifest_hash(folder: Path) -> str:
    return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()


def read_manifest(folder: Path, *, what: str, fix: str) -> Manifest:
    """Load `folder/manifest.json`; a missing or unreadable one is a one-line `GdrError`.

    `what` names the artifact for the message ("processed data for 'ml'"), `fix` says how to build it.
    """
    recover_dir(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise GdrError(f"{what} not found", where=str(folder), fix=fix)
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise GdrError(f"unreadable manifest for {what}: {first}", where=str(path), fix=fix) from None


def input_ref(folder: Path, root: Path, manifest: Manifest) -> InputRef:
    try:
        rel = str(folder.resolve().relative_to(root.resolve()))
    except ValueError:
        rel = str(folder.resolve())
    return InputRef(path=rel, stage=manifest.stage, sha256=manifest_hash(folder))


def check_fresh(manifest: Manifest, root: Path, *, what: str) -> None:
    """Raise `StaleInputError` if any input of `manifest` changed since it was built."""
    for role, ref in manifest.inputs.items():
        folder = Path(ref.path) if Path(ref.path).is_absolute() else root / ref.path
        if not (folder / MANIFEST).exists():
            raise StaleInputError(
                f"{what} is stale: its {role} input {ref.path} no longer exists",
                fix=f"rebuild it with `{manifest.command}` after rebuilding its inputs",
            )
        if manifest_hash(folder) != ref.sha256:
            raise StaleInputError(
                f"{what} is stale: its {role} input {ref.path} changed since it was built",
                fix=f"rebuild it with `{manifest.command}`",
            )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest (last, atomically), recording a content hash of every other file in `folder`."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    manifest.outputs = {p.name: file_sha256(p) for p in files}
    atomic_write_text(folder / MANIFEST, manifest.model_dump_json(indent=2) + "\n")


class Stopwatch:
    """Wall time of a stage, for `Manifest.wall_time_s`."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 3)


def dump_config(cfg: BaseModel) -> dict[str, Any]:
    return json.loads(cfg.model_dump_json())
