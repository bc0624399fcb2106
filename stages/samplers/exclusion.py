"""Items excluded per user, stored sparsely: what a dense [users, items] bool mask said, in memory
that follows the excluded pairs (a user's history, the items earlier rounds found), not the catalogue.

`ItemSets` keeps one sorted int64 key per (user, item) pair (user · N + item), so membership is a
binary search, a user's items are one run (`ptr`), and a subset of users is a gather of runs.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ItemSets:
    """B users' sets of items out of N. keys: [E] sorted distinct int64 user · N + item."""

    def __init__(self, keys: Tensor, n_users: int, n_items: int):
        self.keys, self.n_users, self.n_items = keys, n_users, n_items
        self._ptr: Tensor | None = None

    @classmethod
    def from_pairs(cls, user: Tensor, item: Tensor, n_users: int, n_items: int) -> ItemSets:
        """(user [E], item [E]) pairs, in any order, repeats allowed."""
        return cls(torch.unique(user.long() * n_items + item.long()), n_users, n_items)

    @classmethod
    def from_lists(cls, lists: Tensor, n_items: int) -> ItemSets:
        """lists [B, M] item ids per user (-1 = padding)."""
        user = torch.arange(lists.shape[0], device=lists.device)[:, None].expand_as(lists)
        keep = lists >= 0
        return cls.from_pairs(user[keep], lists[keep], lists.shape[0], n_items)

    @classmethod
    def from_mask(cls, mask: Tensor) -> ItemSets:
        """A dense [B, N] bool mask."""
        user, item = mask.nonzero(as_tuple=True)
        return cls(user * mask.shape[1] + item, mask.shape[0], mask.shape[1])

    @classmethod
    def empty(cls, n_users: int, n_items: int, device: torch.device | None = None) -> ItemSets:
        return cls(torch.zeros(0, dtype=torch.long, device=device), n_users, n_items)

    def __len__(self) -> int:
        return self.n_users

    def pairs(self) -> tuple[Tensor, Tensor]:
        """-> (user [E], item [E]), grouped by user, items ascending."""
        return self.keys // self.n_items, self.keys % self.n_items

    def ptr(self) -> Tensor:
        """[B+1] start of each user's run in `pairs()`."""
        if self._ptr is None:
            bounds = torch.arange(self.n_users + 1, device=self.keys.device) * self.n_items
            self._ptr = torch.searchsorted(self.keys, bounds)
        return self._ptr

    def contains(self, user: Tensor, item: Tensor) -> Tensor:
        """Whether each item is in its user's set: user, item of one shape (item < 0: False) -> bool."""
        query = user * self.n_items + item
        if not len(self.keys):
            return torch.zeros_like(query, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, query.reshape(-1)).clamp(max=len(self.keys) - 1).view(query.shape)
        return (self.keys[pos] == query) & (item >= 0)

    def rows(self, index: Tensor) -> ItemSets:
        """The sets of users `index` [r] (any order), renumbered 0..r-1."""
        ptr = self.ptr()
        start, count = ptr[index], ptr[index + 1] - ptr[index]
        user = torch.repeat_interleave(torch.arange(len(index), device=index.device), count)
        within = torch.arange(len(user), device=index.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
        return ItemSets(user * self.n_items + self.keys[start[user] + within] % self.n_items, len(index), self.n_items)

    def slice(self, lo: int, hi: int) -> ItemSets:
        """Users lo..hi-1, renumbered from 0."""
        ptr = self.ptr()
        return ItemSets(self.keys[int(ptr[lo]) : int(ptr[hi])] - lo * self.n_items, hi - lo, self.n_items)

    def add(self, user: Tensor, item: Tensor) -> ItemSets:
        """A new ItemSets with the pairs (user [E], item [E]) added."""
        return ItemSets(
            torch.unique(torch.cat([self.keys, user.long() * self.n_items + item.long()])), self.n_users, self.n_items
        )

    def lists(self) -> Tensor:
        """[B, M] each user's items, ascending, -1 = padding (M = the longest set, at least 1)."""
        user, item = self.pairs()
        ptr = self.ptr()
        count = ptr[1:] - ptr[:-1]
        out = torch.full((self.n_users, max(int(count.max()) if self.n_users else 0, 1)), -1, dtype=torch.long,
                         device=self.keys.device)  # fmt: skip
        out[user, torch.arange(len(user), device=user.device) - ptr[user]] = item
        return out

    def dense(self) -> Tensor:
        """[B, N] bool (tests and small catalogues only)."""
        out = torch.zeros(self.n_users * self.n_items, dtype=torch.bool, device=self.keys.device)
        out[self.keys] = True
        return out.view(self.n_users, self.n_items)


def item_sets(extra: dict, name: str) -> ItemSets | None:
    """extra[name] as ItemSets (a dense [B, N] mask given there is converted once, in place); None if absent."""
    value = extra.get(name)
    if isinstance(value, Tensor):
        value = extra[name] = ItemSets.from_mask(value)
    return value
