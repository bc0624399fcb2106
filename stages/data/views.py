"""The two views a recommender is trained, sampled and scored on (PROTOCOL.md §1).

    item:   the next item of the user's item sequence (`splits.parquet`); ranks every item.
    social: the next friend of the user's friend sequence (`social_splits.parquet`); the "items"
            are users, and a user is ranked against every user except themself.

Both split tables have one schema (user, train, valid, test), so the training flow, the samplers
and the scorer are the same code for both: only the table, the catalogue size and the per-user
exclusions (the user themself in the social view) differ. Recommendations and metrics of the
social view live under split folders `social-valid` / `social-test`, so they never collide with
item-view ones of the same name.
"""

from __future__ import annotations

import polars as pl
import torch

from gdr_cli.errors import GdrError
from stages.inputs import Processed

VIEWS: tuple[str, ...] = ("item", "social")

FRIEND_SOURCES = (
    "`gdr preprocess lastfm-2k --input DIR` (HetRec Last.fm 2K), `gdr preprocess synthetic` (synthetic.friends > 0) "
    "or `gdr preprocess sequences --input DIR` with a friend_sequence.txt"
)
"""Sources whose preprocessing writes a friend graph (named by the no-friend-graph error)."""


def check_view(view: str) -> str:
    if view not in VIEWS:
        raise GdrError(f"unknown view {view!r}", fix=f"use one of: {', '.join(VIEWS)}")
    return view


def view_splits(processed: Processed, view: str) -> pl.DataFrame:
    """The split table of `view` (user, train, valid, test); the social view of a dataset without
    friend lists is a one-line GdrError naming the sources that have them."""
    if check_view(view) == "item":
        return processed.table("splits")
    path = processed.folder / "social_splits.parquet"
    dataset = processed.manifest.dataset
    if not path.exists():
        raise GdrError(
            f"dataset {dataset!r} has no social graph (no social_splits.parquet: processed by an older gdr)",
            where=str(path),
            fix=f"rerun `{processed.manifest.command}`, or use --view item",
        )
    splits = processed.table("social_splits")
    if splits.height == 0:
        edges = int(processed.manifest.stats.get("social_edges", 0))
        why = f"its {edges:,} friendships leave no user with 3 friends" if edges else "it has no friend lists"
        raise GdrError(
            f"dataset {dataset!r} has no social graph for friend recommendation ({why})",
            where=str(path),
            fix=f"use --view item, or preprocess a source with friends: {FRIEND_SOURCES}",
        )
    return splits


def n_entities(processed: Processed, view: str) -> int:
    """Size of the catalogue ranked in `view`: items, or users in the social view."""
    return processed.n_items if check_view(view) == "item" else processed.n_users


def split_folder(view: str, split: str) -> str:
    """Folder name of a split's recommendations, metrics and report: 'test' (item), 'social-test' (social)."""
    return split if check_view(view) == "item" else f"social-{split}"


def with_self(users: torch.Tensor, exclude: torch.Tensor | None, view: str) -> torch.Tensor | None:
    """The per-user exclusions of `view`: in the social view the user themself is prepended to `exclude`
    (a user is never their own friend); the item view returns `exclude` unchanged.

    users: [U] int64; exclude: [U, M] int64 ids (-1 = padding) or None -> [U, M + 1] / [U, 1] / None.
    """
    if check_view(view) == "item":
        return exclude
    own = users.long()[:, None]  # [U, 1]
    return own if exclude is None else torch.cat([own, exclude.long()], dim=1)


def view_note(view: str) -> str:
    """Text for a stage's one-line summary: '' for the item view, ' (social view)' otherwise."""
    return "" if check_view(view) == "item" else f" ({view} view)"
