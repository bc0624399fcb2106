"""Training splits a model can be trained on: the base split or an augmented one (`--train-split`).

    base                 <root>/<dataset>/processed/splits.parquet (what `preprocess` wrote)
    augmented/<name>     <root>/<dataset>/augmented/<name>/splits.parquet (what `gdr augment` wrote):
                         same users, same validation and test items, longer `train` lists

An augmented split is checked before use: its manifest must be fresh (its processed input unchanged)
and its users, validation and test items must equal the base split's, so a model trained on it is
scored on exactly the protocol's targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from gdr_cli.errors import GdrError
from gdr_cli.manifest import InputRef, check_fresh, input_ref, read_manifest
from gdr_cli.paths import DataPaths
from stages.inputs import Processed

BASE = "base"
PREFIX = "augmented/"


@dataclass
class TrainSplit:
    name: str  # "base" or "augmented/<name>"
    splits: pl.DataFrame  # user, train, valid, test
    ref: InputRef | None  # the augmented folder's manifest ref (None for the base split)


def split_name(value: str | None) -> str:
    """Canonical name of a `--train-split` value: None / 'base' -> 'base', 'augmented/<name>' kept."""
    if value in (None, "", BASE, "processed"):
        return BASE
    if not value.startswith(PREFIX) or len(value) == len(PREFIX):
        raise GdrError(f"unknown training split {value!r}", fix="use 'base' or 'augmented/<name>' (from `gdr augment`)")
    return value


def open_train_split(paths: DataPaths, processed: Processed, value: str | None) -> TrainSplit:
    """The training split named by `value` (checked against the base split), or the base split."""
    name = split_name(value)
    base = processed.table("splits")
    if name == BASE:
        return TrainSplit(BASE, base, None)
    folder = paths.augmented(name[len(PREFIX) :])
    manifest = read_manifest(
        folder,
        what=f"training split {name!r} of dataset {paths.dataset!r}",
        fix=f"build it with `gdr augment {paths.dataset} --method diffuasr --name {name[len(PREFIX) :]}`",
    )
    check_fresh(manifest, paths.root, what=f"training split {name!r}")
    ref = manifest.inputs.get("processed")
    if ref is None or ref.sha256 != processed.ref.sha256:
        raise GdrError(f"training split {name!r} was built from other processed data than dataset {paths.dataset!r} has now",
                       where=str(folder), fix=f"rebuild it with `{manifest.command}`")  # fmt: skip
    path = folder / "splits.parquet"
    try:
        splits = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise GdrError(
            f"unreadable table: {exc}", where=str(path), fix=f"rebuild it with `{manifest.command}`"
        ) from None
    check_same_targets(base, splits, where=str(path))
    return TrainSplit(name, splits, input_ref(folder, paths.root, manifest))


def check_same_targets(base: pl.DataFrame, other: pl.DataFrame, *, where: str) -> None:
    """An augmented split must keep the base split's users and validation/test items, row for row."""
    same = other.columns == base.columns and other.height == base.height
    if same:
        same = all(other[c].equals(base[c]) for c in ("user", "valid", "test"))
    if not same:
        raise GdrError("augmented split does not keep the base split's users and validation/test items",
                       where=where, fix="rebuild it with `gdr augment`")  # fmt: skip
