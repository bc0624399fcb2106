"""K-means in torch (k-means++ init, Lloyd iterations, optional capacity-constrained balanced
assignment) and residual k-means: level l clusters what levels < l left unexplained.

Everything is vectorised over points and clusters; randomness comes only from the given
`torch.Generator`, so results are a function of the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class KMeansOptions:
    iters: int = 30
    balanced: bool = True
    slack: float = 0.25
    """Balanced: a cluster holds at most ceil((1 + slack) · N / K) points."""
    spread: str = "overflow"
    """Residual k-means' last level (`spread_last_level`): "overflow" = no full code is shared by more items than the
    level has codes; "all" = items sharing a full code get distinct ones wherever their prefix has room; "off"."""


def sq_dists(x: Tensor, c: Tensor, x_sq: Tensor | None = None) -> Tensor:
    """[N, K] squared Euclidean distances between rows of x [N, D] and c [K, D] (clamped at 0).

    `x_sq` [N, 1] = the rows' squared norms, when the caller has them already.
    """
    x_sq = x.square().sum(1, keepdim=True) if x_sq is None else x_sq
    return (x_sq - 2 * x @ c.T + c.square().sum(1)).clamp_min_(0)


def kmeans_pp_init(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: [k, D] centroids, each next one drawn with probability ∝ D(x)^2."""
    n = x.shape[0]
    x_sq = x.square().sum(1, keepdim=True)  # [N, 1]
    picks = [torch.randint(n, (1,), generator=generator)]
    d2 = sq_dists(x, x[picks[0]], x_sq).squeeze(1)  # [N] distance to the nearest chosen centroid
    for _ in range(1, k):  # loop over centroids; each step is vectorised over points
        weights = d2 if d2.sum() > 0 else torch.ones_like(d2)
        picks.append(torch.multinomial(weights, 1, generator=generator))
        d2 = torch.minimum(d2, sq_dists(x, x[picks[-1]], x_sq).squeeze(1))
    return x[torch.cat(picks)]


def capacity_assign(d2: Tensor, cap: int) -> Tensor:
    """Assignment [N] int64 from distances d2 [N, K] where no cluster takes more than `cap` points.

    Rounds of proposals: every unassigned point proposes to its nearest cluster that still has
    room; each cluster accepts its closest proposers up to its remaining room and is closed when
    full. Every round closes a cluster or assigns everyone, so there are at most K + 1 rounds.
    Needs cap · K >= N.
    """
    n, k = d2.shape
    assert cap * k >= n, "capacity too small for the points"
    labels = torch.full((n,), -1, dtype=torch.int64)
    room = torch.full((k,), cap, dtype=torch.int64)
    idx = torch.arange(n)  # [M] still unassigned
    d = d2  # [M, K] their distances (a shrinking copy after the first round)
    while idx.numel():
        choice = d.argmin(1)  # [M] nearest open cluster
        dist = d.gather(1, choice[:, None]).squeeze(1)
        order = torch.sort(dist, stable=True).indices  # closest first ...
        order = order[torch.sort(choice[order], stable=True).indices]  # ... within each cluster
        sorted_choice = choice[order]
        counts = torch.bincount(sorted_choice, minlength=k)
        rank = torch.arange(idx.numel()) - (torch.cumsum(counts, 0) - counts)[sorted_choice]
        ok = rank < room[sorted_choice]
        labels[idx[order[ok]]] = sorted_choice[ok]
        room -= torch.bincount(sorted_choice[ok], minlength=k)
        left = order[~ok]  # rejected proposers: their clusters are now full
        idx, d = idx[left], d[left]
        d[:, room == 0] = float("inf")
    return labels


def assign(x: Tensor, c: Tensor, opts: KMeansOptions, x_sq: Tensor | None = None) -> Tensor:
    """Cluster of each row of x [N, D] given centroids c [K, D] (x_sq: [N, 1] squared norms): [N] int64."""
    d2 = sq_dists(x, c, x_sq)
    n, k = d2.shape
    if opts.balanced and k > 1:
        return capacity_assign(d2, math.ceil((1 + opts.slack) * n / k))
    return d2.argmin(1)


def kmeans(
    x: Tensor, k: int, opts: KMeansOptions, generator: torch.Generator, init: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Cluster x [N, D] (float) into k groups: returns (centroids [k, D], assignment [N] int64).

    Centroids start from `init` or k-means++ seeding; empty clusters are re-seeded with the points
    farthest from their centroid, so all k centroids stay in use whenever there are k distinct points.
    """
    x = x.float()
    n = x.shape[0]
    k = min(k, n)
    if init is None:  # seed from a random subset of 32·k points at most: same quality, k× fewer passes over x
        sub = torch.randperm(n, generator=generator)[: 32 * k] if n > 32 * k else torch.arange(n)
        init = kmeans_pp_init(x[sub], k, generator)
    c = init.float().clone()
    x_sq = x.square().sum(1, keepdim=True)
    labels = assign(x, c, opts, x_sq)
    for _ in range(opts.iters):
        counts = torch.bincount(labels, minlength=k)  # [k]
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        empty = (counts == 0).nonzero().squeeze(1)
        if empty.numel():
            far = (x - c[labels]).square().sum(1).topk(empty.numel()).indices
            c[empty] = x[far]
        new = assign(x, c, opts, x_sq)
        if torch.equal(new, labels) and not empty.numel():
            break
        labels = new
    return c, labels


def residual_kmeans(
    x: Tensor, sizes: list[int], opts: KMeansOptions, generator: torch.Generator
) -> tuple[Tensor, list[Tensor]]:
    """Residual quantisation by k-means: codes [N, L] int64 and each level's centroids [k_l, D].

    `sizes` = the L codebook sizes k_l (levels may differ; each is capped at N). Level 0 clusters
    x; level l clusters x minus the centroids chosen at levels < l.
    """
    residual = x.float().clone()
    codes, books = [], []
    for level, k in enumerate(sizes):  # loop over levels only
        c, labels = kmeans(residual, k, opts, generator)
        if opts.spread != "off" and level == len(sizes) - 1:
            prefix = torch.stack(codes, 1) if codes else torch.zeros(len(x), 0, dtype=torch.int64)
            labels = spread_last_level(residual, c, prefix, labels, cap=len(c) if opts.spread == "overflow" else 1)
        codes.append(labels)
        books.append(c)
        residual = residual - c[labels]
    return torch.stack(codes, 1), books


def spread_last_level(residual: Tensor, c: Tensor, prefix: Tensor, labels: Tensor, cap: int) -> Tensor:
    """Move items off over-full last-level codes so that no full code holds more than `cap` items.

    residual: [N, D] what the earlier levels left; c: [K, D] the last level's centroids; prefix: [N, L-1] the
    earlier levels' codes; labels: [N] the last level's assignment -> [N] new assignment. Items with
    (near-)identical vectors share every digit and are told apart only by the appended collision digit
    (`collisions.disambiguate`), whose codebook is the largest such group: on a 1M-item synthetic catalogue,
    1,553 wide against 256 codes per level. Here the items of a group beyond its `cap` closest move to the
    nearest codes of their prefix that hold fewer than `cap` (rounds of proposals, closest first, as in
    `capacity_assign`), so the collision digit stays within `cap` while the prefix has room: the level's size for
    `spread` "overflow" (MovieLens 100K's and Last.fm 2K's groups, at most 10 of 37 and 19 of 65, are untouched),
    1 for "all" (every code distinct where the prefix has room)."""
    k = len(c)
    pk = torch.unique(prefix, dim=0, return_inverse=True)[1] if prefix.shape[1] else torch.zeros_like(labels)
    key = pk * k + labels  # [N] the full code
    count = torch.bincount(key)
    over = count[key] > cap
    if not bool(over.any()):
        return labels
    items = over.nonzero().squeeze(1)  # [M] items of over-full codes: the cap closest stay
    own = (residual[items] - c[labels[items]]).square().sum(1)  # [M] distance to their own code
    order = own.argsort(stable=True)
    order = order[key[items][order].argsort(stable=True)]  # grouped by code, closest first
    rank = torch.arange(len(order)) - torch.searchsorted(key[items][order], key[items][order])
    movers = items[order[rank >= cap]]  # [M'] the items beyond each group's cap
    labels = labels.clone()
    # room of each (prefix, code) among the movers' prefixes, after the staying items
    prefixes, slot = torch.unique(pk[movers], return_inverse=True)  # [P'], [M']
    staying = torch.isin(pk, prefixes)
    taken = torch.zeros(len(prefixes) * k, dtype=torch.int64)
    kept = torch.ones_like(labels, dtype=torch.bool)
    kept[movers] = False
    at = torch.searchsorted(prefixes, pk[staying & kept])
    taken.index_add_(0, at * k + labels[staying & kept], torch.ones_like(at))
    room = (cap - taken).clamp(min=0).view(len(prefixes), k)  # [P', K]
    d = torch.empty(len(movers), k)  # [M', K], filled in row chunks (no [M', K] temporaries)
    for lo in range(0, len(movers), 65536):
        d[lo : lo + 65536] = sq_dists(residual[movers[lo : lo + 65536]], c)
    idx = torch.arange(len(movers))
    while idx.numel():
        d[room[slot[idx]] == 0] = float("inf")
        choice = d.argmin(1)
        dist = d.gather(1, choice[:, None]).squeeze(1)
        open_ = torch.isfinite(dist)
        if not bool(open_.any()):
            break  # prefixes without room: those items keep their code (a wider collision digit)
        idx, d, choice, dist = idx[open_], d[open_], choice[open_], dist[open_]
        target = slot[idx] * k + choice  # [m] (prefix, code) proposed
        order = dist.argsort(stable=True)
        order = order[target[order].argsort(stable=True)]  # closest first within each target
        sorted_target = target[order]
        rank = torch.arange(len(order)) - torch.searchsorted(sorted_target, sorted_target)
        ok = rank < room.view(-1)[sorted_target]
        labels[movers[idx[order[ok]]]] = choice[order[ok]]
        room.view(-1).index_add_(0, sorted_target[ok], -torch.ones_like(sorted_target[ok]))
        left = order[~ok]
        idx, d = idx[left], d[left]
    return labels
