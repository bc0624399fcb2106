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


def sq_dists(x: Tensor, c: Tensor) -> Tensor:
    """[N, K] squared Euclidean distances between rows of x [N, D] and c [K, D] (clamped at 0)."""
    return (x.square().sum(1, keepdim=True) - 2 * x @ c.T + c.square().sum(1)).clamp_min_(0)


def kmeans_pp_init(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: [k, D] centroids, each next one drawn with probability ∝ D(x)^2."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator)
    centroids = [x[first]]
    d2 = sq_dists(x, centroids[0]).squeeze(1)  # [N] distance to the nearest chosen centroid
    for _ in range(1, k):  # loop over centroids; each step is vectorised over points
        total = d2.sum()
        weights = d2 if total > 0 else torch.ones_like(d2)
        pick = torch.multinomial(weights, 1, generator=generator)
        centroids.append(x[pick])
        d2 = torch.minimum(d2, sq_dists(x, x[pick]).squeeze(1))
    return torch.cat(centroids)


def capacity_assign(d2: Tensor, cap: int) -> Tensor:
    """Assignment [N] int64 from distances d2 [N, K] where no cluster takes more than `cap` points.

    Rounds of proposals: every unassigned point proposes to its nearest cluster that still has
    room; each cluster accepts its closest proposers up to its remaining room and is closed when
    full. Every round closes a cluster or assigns everyone, so there are at most K + 1 rounds.
    Needs cap · K >= N.
    """
    n, k = d2.shape
    assert cap * k >= n, "capacity too small for the points"
    d = d2.clone()
    labels = torch.full((n,), -1, dtype=torch.int64)
    room = torch.full((k,), cap, dtype=torch.int64)
    while True:
        idx = (labels < 0).nonzero().squeeze(1)  # [M] unassigned points
        if idx.numel() == 0:
            return labels
        choice = d[idx].argmin(1)  # [M] nearest open cluster
        dist = d[idx, choice]
        order = torch.sort(dist, stable=True).indices  # closest first ...
        order = order[torch.sort(choice[order], stable=True).indices]  # ... within each cluster
        sorted_choice = choice[order]
        counts = torch.bincount(sorted_choice, minlength=k)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(idx.numel()) - starts[sorted_choice]  # 0 = closest proposer of its cluster
        ok = rank < room[sorted_choice]
        labels[idx[order[ok]]] = sorted_choice[ok]
        room -= torch.bincount(sorted_choice[ok], minlength=k)
        d[:, room == 0] = float("inf")


def assign(x: Tensor, c: Tensor, opts: KMeansOptions) -> Tensor:
    """Cluster of each row of x [N, D] given centroids c [K, D]: [N] int64."""
    d2 = sq_dists(x, c)
    n, k = d2.shape
    if opts.balanced and k > 1:
        return capacity_assign(d2, math.ceil((1 + opts.slack) * n / k))
    return d2.argmin(1)


def kmeans(x: Tensor, k: int, opts: KMeansOptions, generator: torch.Generator, init: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Cluster x [N, D] (float) into k groups: returns (centroids [k, D], assignment [N] int64).

    Empty clusters are re-seeded with the points farthest from their centroid, so all k
    centroids stay in use whenever there are at least k distinct points.
    """
    x = x.float()
    n = x.shape[0]
    k = min(k, n)
    c = kmeans_pp_init(x, k, generator) if init is None else init.float().clone()
    labels = assign(x, c, opts)
    for _ in range(opts.iters):
        counts = torch.bincount(labels, minlength=k)  # [k]
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        empty = (counts == 0).nonzero().squeeze(1)
        if empty.numel():
            far = (x - c[labels]).square().sum(1).topk(empty.numel()).indices
            c[empty] = x[far]
        new = assign(x, c, opts)
        if torch.equal(new, labels) and not empty.numel():
            break
        labels = new
    return c, labels


def residual_kmeans(x: Tensor, levels: int, k: int, opts: KMeansOptions, generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
    """Residual quantisation by k-means: codes [N, levels] int64 and each level's centroids [k, D].

    Level 0 clusters x; level l clusters x minus the centroids chosen at levels < l.
    """
    residual = x.float().clone()
    codes, books = [], []
    for _ in range(levels):
        c, labels = kmeans(residual, k, opts, generator)
        codes.append(labels)
        books.append(c)
        residual = residual - c[labels]
    return torch.stack(codes, 1), books
