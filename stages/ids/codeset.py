"""A set of token codes, one per item (or per user for the social view).

On disk (`<root>/<dataset>/ids/<name>/codes.parquet`): `item:int32` (or `user:int32`) and
`code:list[int32]`, every row of the same length D; the per-digit vocabulary sizes travel in the
Parquet schema metadata (`gdr.vocab_sizes`), so the file alone rebuilds the `CodeSet`.

Two kinds of ID set share this format: `codes` (`gdr build-ids`: digit d has its own vocabulary of
vocab_sizes[d] values) and `text` (`gdr train-gen`: every position is a word of ONE shared word
vocabulary, so all vocab_sizes are equal; `gdr.kind` and the words `gdr.tokens` travel in the
metadata too, so an ID reads back as its phrase).

Other stages call `load_codeset(paths, name)`: it checks the ID set belongs to this dataset and
view, matches the processed catalogue and is not stale, and returns `(CodeSet, Manifest)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gdr_cli.errors import GdrError
from gdr_cli.io import atomic_path
from gdr_cli.manifest import Manifest, check_fresh, read_manifest
from gdr_cli.paths import DataPaths

if TYPE_CHECKING:
    import torch

CODES = "codes.parquet"
VIEWS = {"item": "item", "social": "user"}
"""View -> key column of codes.parquet (and the processed table it must match)."""
_META = b"gdr.vocab_sizes"
_KIND = b"gdr.kind"
_TOKENS = b"gdr.tokens"
KINDS = ("codes", "text")
ID_STAGES = ("build_ids", "train_gen")
"""Stages whose output folders are ID sets."""


@dataclass
class CodeSet:
    """Codes of N entities with D digits each.

    codes: [N, D] int64, row i = code of item (or user) i; digit d lies in [0, vocab_sizes[d]).
    vocab_sizes: D ints, the size of each digit's vocabulary (the last digit separates
    entities that share the first D-1 digits).
    key: "item" or "user" — what a row is.
    kind: "codes" (per-digit vocabularies) or "text" (one shared word vocabulary: a row is a phrase of
    word ids, every vocab_sizes[d] = len(tokens)).
    tokens: for kind "text", the word of each word id (for display); None for codes.
    """

    codes: np.ndarray
    vocab_sizes: list[int]
    key: str = field(default="item")
    kind: str = field(default="codes")
    tokens: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        self.vocab_sizes = [int(v) for v in self.vocab_sizes]
        if self.codes.ndim != 2:
            raise ValueError(f"codes must be [N, D], got shape {self.codes.shape}")
        if len(self.vocab_sizes) != self.codes.shape[1]:
            raise ValueError(f"{len(self.vocab_sizes)} vocab sizes for {self.codes.shape[1]} digits")
        if self.codes.size and ((self.codes < 0).any() or (self.codes >= np.asarray(self.vocab_sizes)).any()):
            raise ValueError("a code digit lies outside its vocabulary")
        if self.kind not in KINDS:
            raise ValueError(f"unknown ID kind {self.kind!r}")
        if self.kind == "text" and (self.tokens is None or any(v != len(self.tokens) for v in self.vocab_sizes)):
            raise ValueError("a textual ID set needs its words, and every position's vocabulary is all of them")

    @property
    def shared_vocab(self) -> bool:
        """True when every position draws from one shared vocabulary (textual IDs)."""
        return self.kind == "text"

    def phrases(self, rows: np.ndarray | None = None) -> list[str]:
        """The IDs of `rows` (default all) as text: words joined by spaces (digits for codes)."""
        codes = self.codes if rows is None else self.codes[rows]
        if self.tokens is None:
            return [" ".join(map(str, c)) for c in codes.tolist()]
        words = np.asarray(self.tokens, dtype=object)
        return [" ".join(w) for w in words[codes].tolist()]

    @property
    def n_digits(self) -> int:
        """D, the code length."""
        return int(self.codes.shape[1])

    @property
    def n_items(self) -> int:
        """N, the number of coded entities (items or users)."""
        return int(self.codes.shape[0])

    @property
    def offsets(self) -> np.ndarray:
        """[D] int64 start of each digit in one flat token vocabulary of size sum(vocab_sizes)."""
        return np.concatenate([[0], np.cumsum(self.vocab_sizes)[:-1]]).astype(np.int64)

    def as_tensor(self) -> torch.Tensor:
        """The codes as a [N, D] int64 tensor (a copy, safe to register as a buffer)."""
        import torch

        return torch.from_numpy(self.codes.copy())

    def save(self, folder: Path) -> Path:
        """Write `folder/codes.parquet` atomically; returns its path."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        n, d = self.codes.shape
        flat = pa.array(self.codes.reshape(-1).astype(np.int32), type=pa.int32())
        offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32) if n else np.zeros(1, np.int32))
        table = pa.table(
            {
                self.key: pa.array(np.arange(n, dtype=np.int32)),
                "code": pa.ListArray.from_arrays(offsets, flat),
            }
        )
        meta = {_META: json.dumps(self.vocab_sizes).encode(), _KIND: self.kind.encode()}
        if self.tokens is not None:
            meta[_TOKENS] = json.dumps(self.tokens).encode()
        table = table.replace_schema_metadata(meta)
        path = Path(folder) / CODES
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return path

    @classmethod
    def load(cls, folder: Path) -> CodeSet:
        """Read `folder/codes.parquet`; a missing or malformed file is a one-line `GdrError`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(folder) / CODES
        if not path.exists():
            raise GdrError("codes file not found", where=str(path), fix="rebuild the ID set with `gdr build-ids`")
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise GdrError(
                f"unreadable codes file: {exc}", where=str(path), fix="rebuild it with `gdr build-ids`"
            ) from None
        key = next((k for k in VIEWS.values() if k in table.column_names), None)
        if key is None or "code" not in table.column_names:
            raise GdrError(
                "codes file needs columns item (or user) and code",
                where=str(path),
                fix="rebuild it with `gdr build-ids`",
            )
        ids = table[key].to_numpy()
        lists = table["code"].combine_chunks()
        lengths = lists.value_lengths().to_numpy(zero_copy_only=False)
        if len(ids) and (lengths.min() != lengths.max() or lists.null_count):
            raise GdrError("codes have different lengths", where=str(path), fix="rebuild it with `gdr build-ids`")
        if not np.array_equal(np.sort(ids), np.arange(len(ids))):
            raise GdrError(f"{key} ids are not 0..N-1", where=str(path), fix="rebuild it with `gdr build-ids`")
        d = int(lengths[0]) if len(ids) else 0
        codes = np.empty((len(ids), d), dtype=np.int64)
        codes[ids] = lists.flatten().to_numpy().reshape(len(ids), d)
        metadata = table.schema.metadata or {}
        meta = metadata.get(_META)
        vocab = json.loads(meta) if meta else (codes.max(axis=0) + 1).tolist()
        kind = metadata.get(_KIND, b"codes").decode()
        tokens = json.loads(metadata[_TOKENS]) if _TOKENS in metadata else None
        try:
            return cls(codes, vocab, key=key, kind=kind, tokens=tokens)
        except ValueError as exc:
            raise GdrError(f"invalid codes: {exc}", where=str(path), fix="rebuild it with `gdr build-ids`") from None


def build_fix(dataset: str, name: str, view: str) -> str:
    """The command that (re)builds ID set `name` (method = the name when it is a known method)."""
    from stages.ids.methods import METHODS

    if name.startswith("gen-"):  # a textual ID set of `gdr train-gen`
        return f"rebuild it with `gdr train-gen {dataset}{' --view social' if view == 'social' else ''}`"
    base = name.removesuffix("-social")
    method = base if base in METHODS else "rqkmeans"
    social = " --view social" if view == "social" else ""
    return f"build it with `gdr build-ids {dataset} --method {method} --ids {name}{social}`"


def load_codeset(paths: DataPaths, name: str, *, view: str = "item") -> tuple[CodeSet, Manifest]:
    """Load ID set `name` of `paths.dataset` and check it can be used with the current processed data.

    Raises a one-line `GdrError` (with the command that fixes it) when the ID set is missing,
    was built for another dataset or view, does not cover exactly the processed items (users
    for view "social"), or is stale (the processed data changed since it was built).
    """
    if view not in VIEWS:
        raise GdrError(f"unknown view {view!r}", fix=f"use one of: {', '.join(VIEWS)}")
    folder = paths.ids(name)
    fix = build_fix(paths.dataset, name, view)
    manifest = read_manifest(folder, what=f"ID set {name!r} of dataset {paths.dataset!r}", fix=fix)
    if manifest.stage not in ID_STAGES:
        raise GdrError(f"{folder} was written by stage {manifest.stage!r}, not build_ids", where=str(folder), fix=fix)
    if manifest.dataset != paths.dataset:
        raise GdrError(
            f"ID set {name!r} was built for dataset {manifest.dataset!r}, not {paths.dataset!r}",
            where=str(folder),
            fix=fix,
        )
    built_view = manifest.stats.get("view", "item")
    if built_view != view:
        raise GdrError(f"ID set {name!r} is for the {built_view} view, not {view}", where=str(folder), fix=fix)
    check_fresh(manifest, paths.root, what=f"ID set {name!r}")
    codeset = CodeSet.load(folder)
    expected = _processed_rows(paths, VIEWS[view])
    if codeset.n_items != expected:
        raise GdrError(
            f"ID set {name!r} has {codeset.n_items} {VIEWS[view]}s but the processed data has {expected}",
            where=str(folder),
            fix=fix,
        )
    return codeset, manifest


def _processed_rows(paths: DataPaths, key: str) -> int:
    import pyarrow.parquet as pq

    table = paths.processed / f"{key}s.parquet"
    if not table.exists():
        raise GdrError(
            f"processed {key}s table not found",
            where=str(table),
            fix=f"run `gdr preprocess {paths.dataset}` first",
        )
    return int(pq.read_metadata(table).num_rows)
