"""Training examples and evaluation histories from the leave-one-out splits (PROTOCOL.md §1).

Input is the `splits.parquet` table (user:int32, train:list[int32], valid:int32, test:int32).
Histories are the last `max_len` items before a position, left-padded with -1, most recent
item last. Everything is vectorised over one flat array of all sequences (no loop over users).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from gdr_cli.errors import GdrError

PAD = -1
SPLITS = ("valid", "test")


def _check(splits: pl.DataFrame, max_len: int, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in splits.columns]
    if missing:
        raise GdrError(
            f"splits table lacks column(s) {', '.join(missing)}",
            fix="rebuild it with `gdr preprocess` (schema: user, train, valid, test)",
        )
    if max_len < 1:
        raise GdrError(f"max_len must be at least 1, got {max_len}", fix="set max_len to a positive number of items")


def _flatten(seqs: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One flat array of every sequence: (items [M] int64, starts [U] int64, lengths [U] int64)."""
    lengths = seqs.list.len().fill_null(0).to_numpy().astype(np.int64)
    items = seqs.explode().drop_nulls().to_numpy().astype(np.int64)
    if items.size != lengths.sum():
        raise GdrError("splits table has null items inside sequences", fix="rebuild it with `gdr preprocess`")
    starts = np.cumsum(lengths) - lengths
    return items, starts, lengths


def _windows(items: np.ndarray, lengths: np.ndarray, rows: np.ndarray, ends: np.ndarray, max_len: int) -> torch.Tensor:
    """For each output row r: the `max_len` items of sequence `rows[r]` before flat index `ends[r]`
    (exclusive), left-padded with -1.

    items: [M] int64 (all sequences, flat); lengths: [U] int64; rows, ends: [R] int64.
    Every sequence is laid out behind `max_len` pads, so each window is one contiguous slice
    (a row gather from torch's strided `unfold` view: ~3x numpy's sliding_window_view).
    Returns [R, max_len] int64.
    """
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)  # [M] sequence of each item
    padded = np.full(len(items) + len(lengths) * max_len, PAD, dtype=np.int64)
    padded[np.arange(len(items), dtype=np.int64) + (owner + 1) * max_len] = items
    return torch.from_numpy(padded).unfold(0, max_len, 1)[torch.from_numpy(ends + rows * max_len)]


def training_examples(splits: pl.DataFrame, max_len: int) -> dict[str, torch.Tensor]:
    """Every prefix of each user's training sequence: for position i >= 1 the history is the last
    `max_len` items before i and the target is item i.

    Returns {"history": [N, max_len] int64, "target": [N] int64, "user": [N] int64}, ordered by
    user (table order) then position.
    """
    _check(splits, max_len, ("user", "train"))
    items, starts, lengths = _flatten(splits["train"])
    per_user = np.maximum(lengths - 1, 0)  # [U] examples per user
    n = int(per_user.sum())
    row = np.repeat(np.arange(len(lengths), dtype=np.int64), per_user)  # [N] user row of each example
    first = np.cumsum(per_user) - per_user  # [U] index of each user's first example
    pos = np.arange(n, dtype=np.int64) - first[row] + 1  # [N] position i >= 1 in the sequence
    ends = starts[row] + pos  # [N] flat index of the target
    users = splits["user"].to_numpy().astype(np.int64)
    return {
        "history": _windows(items, lengths, row, ends, max_len),
        "target": torch.from_numpy(items[ends]),
        "user": torch.from_numpy(users[row]),
    }


def validation_rows(n_users: int, keep: int, seed: int) -> torch.Tensor | None:
    """Rows of a seeded subset of `keep` of n_users validation users, ascending -> [keep] int64; None when keep is
    0 or covers them all (validate on everyone). The same seed draws the same users."""
    if keep <= 0 or keep >= n_users:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_users, generator=gen)[:keep].sort().values


def validation_subset(
    val: dict[str, torch.Tensor], keep: int, seed: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """`eval_histories` output restricted to the users of `validation_rows` -> (the subset, its rows or None = all)."""
    rows = validation_rows(len(next(iter(val.values()))), keep, seed)
    return (val, None) if rows is None else ({key: value[rows] for key, value in val.items()}, rows)


def eval_histories(splits: pl.DataFrame, split: str, max_len: int, *, with_target: bool) -> dict[str, torch.Tensor]:
    """Histories of every user for ranking on `split`.

    "valid": the training sequence; "test": training sequence + validation item. Returns
    {"user": [U] int64, "history": [U, max_len] int64} and, if `with_target`, "target": [U] int64
    (the item of `split`; the test target is only for `gdr evaluate`).
    """
    if split not in SPLITS:
        raise GdrError(f"unknown split {split!r}", fix=f"use one of: {', '.join(SPLITS)}")
    _check(splits, max_len, ("user", "train", "valid", "test"))
    seqs = splits["train"]
    if split == "test":
        seqs = splits.select(pl.concat_list([pl.col("train"), pl.col("valid").cast(seqs.dtype.inner)])).to_series()
    items, starts, lengths = _flatten(seqs)
    out = {
        "user": torch.from_numpy(splits["user"].to_numpy().astype(np.int64)),
        "history": _windows(items, lengths, np.arange(len(lengths), dtype=np.int64), starts + lengths, max_len),
    }
    if with_target:
        out["target"] = torch.from_numpy(splits[split].to_numpy().astype(np.int64))
    return out


def training_windows(splits: pl.DataFrame, max_len: int, stride: int | None = None) -> torch.Tensor:
    """Whole training sequences cut into windows of `max_len + 1` items, for models that predict at
    every position (SASRec-style): in a window, item i+1 is the target of the items up to i.

    A user's training sequence of T items has T-1 targets (items 1..T-1). Windows are cut from its
    end, each `stride` (default `max_len`) items before the next: the last window ends at item T-1.
    The new targets of a window are its last `stride` ones (the targets before them belong to an
    earlier window and are history only), so every target is trained exactly once, with at least
    `max_len - stride` items of history where the user has them. With the default stride the
    windows share one item (the first item of a window is only an input). The earliest window is
    left-padded with -1; users with one training item give no window.

    Returns [W, max_len + 1] int64, ordered by user (table order) then time.
    """
    _check(splits, max_len, ("user", "train"))
    stride = max_len if stride is None else stride
    if not 1 <= stride <= max_len:
        raise GdrError(f"window stride {stride} is outside 1..max_len ({max_len})", fix="use a stride in that range")
    items, starts, lengths = _flatten(splits["train"])
    targets = np.maximum(lengths - 1, 0)  # [U] targets per user
    per_user = -(-targets // stride)  # [U] windows per user (ceil)
    row = np.repeat(np.arange(len(lengths), dtype=np.int64), per_user)  # [W] user row of each window
    first = np.cumsum(per_user) - per_user  # [U] index of each user's first window
    back = per_user[row] - 1 - (np.arange(len(row), dtype=np.int64) - first[row])  # [W] windows after this one
    ends = starts[row] + lengths[row] - back * stride  # [W] flat index after the window's last item
    return _windows(items, lengths, row, ends, max_len + 1)


def _reversed(items: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The flat item array with every sequence reversed in place. [M] -> [M]."""
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    offset = np.arange(len(items), dtype=np.int64) - starts[owner]
    return items[starts[owner] + lengths[owner] - 1 - offset]


def training_futures(splits: pl.DataFrame, length: int) -> torch.Tensor:
    """For every example of `training_examples` (position i >= 1 of each training sequence, same order): the
    `length` items from i on (item i first), right-padded with -1. Returns [N, length] int64.

    Windows of the reversed sequences, flipped: items i..i+length-1 are the `length` reversed items before
    reversed index n - i."""
    _check(splits, length, ("user", "train"))
    items, starts, lengths = _flatten(splits["train"])
    per_user = np.maximum(lengths - 1, 0)
    row = np.repeat(np.arange(len(lengths), dtype=np.int64), per_user)
    first = np.cumsum(per_user) - per_user
    pos = np.arange(int(per_user.sum()), dtype=np.int64) - first[row] + 1  # [N] position i >= 1
    ends = starts[row] + lengths[row] - pos
    return _windows(_reversed(items, starts, lengths), lengths, row, ends, length).flip(1)


def leading_items(splits: pl.DataFrame, length: int) -> torch.Tensor:
    """The first `length` items of each training sequence (table order), right-padded with -1. [U, length] int64."""
    _check(splits, length, ("user", "train"))
    items, starts, lengths = _flatten(splits["train"])
    rows = np.arange(len(lengths), dtype=np.int64)
    return _windows(_reversed(items, starts, lengths), lengths, rows, starts + lengths, length).flip(1)
