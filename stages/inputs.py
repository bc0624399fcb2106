"""Opening upstream artifacts: check their manifests first, then read their tables.

Every consumer stage goes through these helpers so that a missing input names the command
that builds it and a stale one names the command that rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from gdr_cli.errors import GdrError
from gdr_cli.manifest import InputRef, Manifest, check_fresh, input_ref, read_manifest
from gdr_cli.paths import DataPaths


@dataclass
class Processed:
    """The output of `gdr preprocess` for one dataset."""

    manifest: Manifest
    ref: InputRef
    folder: Path

    def table(self, name: str) -> pl.DataFrame:
        path = self.folder / f"{name}.parquet"
        try:
            return pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise GdrError(
                f"unreadable table: {exc}", where=str(path), fix=f"rerun `{self.manifest.command}`"
            ) from None

    @property
    def n_items(self) -> int:
        return int(self.manifest.stats["items"])

    @property
    def n_users(self) -> int:
        return int(self.manifest.stats["users"])


def open_processed(paths: DataPaths) -> Processed:
    """The processed dataset, or a one-line error telling how to build it."""
    folder = paths.processed
    manifest = read_manifest(
        folder,
        what=f"processed data for dataset {paths.dataset!r}",
        fix=f"run `gdr preprocess {paths.dataset}` first (or pass --data-dir where it lives)",
    )
    return Processed(manifest=manifest, ref=input_ref(folder, paths.root, manifest), folder=folder)


@dataclass
class Run:
    """A trained run folder (train-rec / diffuse)."""

    manifest: Manifest
    ref: InputRef
    folder: Path


def open_run(paths: DataPaths, name: str, *, model: str = "pop") -> Run:
    """A trained run, checked fresh against the inputs it was trained on; `model` is the one a missing
    run's error suggests training."""
    folder = paths.run(name)
    manifest = read_manifest(
        folder,
        what=f"run {name!r} of dataset {paths.dataset!r}",
        fix=f"train it first, e.g. `gdr train-rec {paths.dataset} --model {model} --run {name}`",
    )
    check_fresh(manifest, paths.root, what=f"run {name!r}")
    return Run(manifest=manifest, ref=input_ref(folder, paths.root, manifest), folder=folder)
