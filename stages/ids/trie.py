"""The trie of valid codes: which next digit may follow a code prefix, as tensor lookups.

Nodes at depth d are the distinct length-d prefixes of the N codes (depth 0 = the root, node 0;
depth D = the leaves, one per item). Children of depth-d nodes are numbered by the sorted edge
key `parent * vocab_sizes[d] + digit`, so the sorted keys alone answer "child of (node, digit)"
with `torch.searchsorted` (and each node's edges form one run of them, so a batch of nodes gets its
children by scattering only the real edges); when nodes x vocabulary is small the same answer is
also kept as a dense [n_nodes, V_d] table (one gather). Either way a whole batch of beams gets its allowed
digits and next nodes in one call, with no Python loop over beams or tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gdr_cli.errors import GdrError

DENSE_LIMIT = 1 << 22
"""Depths with n_nodes * vocab at most this many entries also get a dense child table."""


def _lookup(keys: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """Position of each `query` in sorted `keys` and whether it is there. query: any shape int64."""
    if keys.numel() == 0:
        return torch.zeros_like(query), torch.zeros_like(query, dtype=torch.bool)
    pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
    return pos, keys[pos] == query


class Trie:
    """Valid codes `codes [N, D]` (row i = item i, digit d in [0, vocab_sizes[d])) as a prefix tree."""

    def __init__(self, codes: Tensor, vocab_sizes: Sequence[int], *, dense_limit: int = DENSE_LIMIT):
        codes = torch.as_tensor(codes, dtype=torch.int64)
        if codes.ndim != 2 or codes.shape[1] != len(vocab_sizes) or codes.shape[1] == 0:
            raise GdrError(f"codes of shape {tuple(codes.shape)} do not match {len(vocab_sizes)} vocabulary sizes")
        vocab = torch.as_tensor(list(vocab_sizes), dtype=torch.int64, device=codes.device)
        if codes.numel() and ((codes < 0).any() or (codes >= vocab).any()):
            raise GdrError("a code digit lies outside its vocabulary", fix="rebuild the ID set with `gdr build-ids`")
        n, depth = codes.shape
        self.depth = depth
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.n_nodes = [1]
        self.keys: list[Tensor] = []  # per depth: [n_nodes[d+1]] sorted edge keys parent * V_d + digit
        self.tables: list[Tensor | None] = []  # per depth: [n_nodes[d], V_d] child id, -1 = no edge
        self.starts: list[Tensor] = []  # per depth: [n_nodes[d] + 1] first edge of each node in keys[d]
        self.dead: list[Tensor | None] = []  # per depth: [n_nodes[d], V_d] bool, no edge (with a table)
        paths = [torch.zeros(n, dtype=torch.int64, device=codes.device)]  # node of each item per depth
        for d, v in enumerate(self.vocab_sizes):
            keys, child = torch.unique(paths[-1] * v + codes[:, d], sorted=True, return_inverse=True)
            self.keys.append(keys)
            table = None
            if self.n_nodes[d] * v <= dense_limit:
                table = torch.full((self.n_nodes[d] * v,), -1, dtype=torch.int64, device=codes.device)
                table[keys] = torch.arange(keys.numel(), device=codes.device)
                table = table.view(self.n_nodes[d], v)
            self.tables.append(table)
            self.dead.append(None if table is None else table < 0)
            # CSR: the children of node j are keys[starts[j]:starts[j+1]] (keys are sorted by parent first)
            self.starts.append(torch.searchsorted(keys, torch.arange(self.n_nodes[d] + 1, device=codes.device) * v))
            self.n_nodes.append(int(keys.numel()))
            paths.append(child)
        if self.n_nodes[-1] != n:
            raise GdrError(
                f"{n - self.n_nodes[-1]} items share their code with another item",
                fix="rebuild the ID set; its last digit must separate items with the same prefix",
            )
        self.paths = torch.stack(paths, dim=1)  # [N, D+1] node of item i at each depth
        self.leaf_item = torch.empty(n, dtype=torch.int64, device=codes.device)
        self.leaf_item[self.paths[:, -1]] = torch.arange(n, device=codes.device)  # [N] leaf -> item
        self.leaves_under = [torch.bincount(self.paths[:, d], minlength=self.n_nodes[d]) for d in range(depth + 1)]

    @property
    def n_items(self) -> int:
        return int(self.leaf_item.numel())

    def children(self, d: int, nodes: Tensor) -> Tensor:
        """Child of each depth-`d` node for every digit. nodes: [M] int64 -> [M, V_d] int64, -1 = invalid."""
        table = self.tables[d]
        if table is not None:
            return table[nodes]
        v = self.vocab_sizes[d]
        start, end = self.starts[d][nodes], self.starts[d][nodes + 1]  # [M] each node's edges in keys[d]
        count = end - start
        row = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), count)  # [E]
        first = torch.cumsum(count, 0) - count  # [M] where each node's edges start in the flat list
        pos = start[row] + torch.arange(row.numel(), device=nodes.device) - first[row]  # [E] child ids
        out = torch.full((nodes.numel(), v), -1, dtype=torch.int64, device=nodes.device)
        out[row, self.keys[d][pos] % v] = pos  # only the real edges are written: O(M * V_d + E), no search per digit
        return out

    def no_child(self, d: int, nodes: Tensor) -> Tensor:
        """Digits that extend no code below each depth-`d` node. nodes: [M] int64 -> [M, V_d] bool
        (from a dense bool table when there is one: an eighth of the memory traffic of `children`)."""
        dead = self.dead[d]
        return self.children(d, nodes) < 0 if dead is None else dead[nodes]

    def child(self, d: int, nodes: Tensor, digits: Tensor) -> Tensor:
        """Child of depth-`d` `nodes` by `digits` (same shapes, any) -> node ids, -1 = no such edge."""
        table = self.tables[d]
        if table is not None:
            return table[nodes, digits]
        pos, found = _lookup(self.keys[d], nodes * self.vocab_sizes[d] + digits)
        return torch.where(found, pos, -1)

    def items(self, leaves: Tensor) -> Tensor:
        """Item of each leaf id (any shape); -1 stays -1."""
        return torch.where(leaves >= 0, self.leaf_item[leaves.clamp(min=0)], -1)

    def blocked(self, exclude: Tensor) -> list[Tensor]:
        """Nodes whose every leaf is excluded, per row: the list of sorted keys `row * n_nodes[d] + node`
        for d = 0..D (depth 0 is blocked only when a row excludes the whole catalogue).

        exclude: [B, L] int64 item ids, -1 (or anything outside 0..N-1) = padding.
        """
        b, _ = exclude.shape
        n = self.n_items
        ok = (exclude >= 0) & (exclude < n)
        rows = torch.arange(b, device=exclude.device)[:, None].expand_as(exclude)[ok]
        pairs = torch.unique(rows * n + exclude[ok])  # distinct (row, item)
        rows, items = pairs // n, pairs % n
        out = []
        for d in range(self.depth + 1):
            keys, count = torch.unique(rows * self.n_nodes[d] + self.paths[items, d], return_counts=True)
            full = count == self.leaves_under[d][keys % self.n_nodes[d]]
            out.append(keys[full])
        return out

    def is_blocked(self, blocked: Tensor, d: int, rows: Tensor, nodes: Tensor) -> Tensor:
        """Whether depth-`d` `nodes` are blocked for their `rows` (same shapes) given `blocked[d]`."""
        _, found = _lookup(blocked, rows * self.n_nodes[d] + nodes.clamp(min=0))
        return found
