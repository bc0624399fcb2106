"""K-means in torch (k-means++ init, Lloyd iterations, optional Sinkhorn-balanced assignment)
and residual k-means: level l clusters what levels < l left unexplained.

Everything is vectorised over points and clusters; randomness comes only from the given
`torch.Generator`, so results are a function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class KMeansOptions:
    iters: int = 30
    balanced: bool = True
    sinkhorn_iters: int = 30
    sinkhorn_eps: float = 0.05


def sq_dists(x: Tensor, c: Tensor) -> Tensor:
    """[N, K] squared Euclidean distances between rows of x [N, D] and c [K, D] (clamped at 0)."""
    return (x.square().sum(1, keepdim=True) - 2 * x @ c.T + c.square().sum(1)).clamp_min_(0)


def kmeans_pp_init(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: [k, D] centroids, each next one drawn with probability ∝ D(x)^2."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator)
    centroids = [x[first]]
    d2 = sq_dists(x, centroids[0]).squeeze(1)  # [N] distance to the nearest chosen centroid
    for _ in range(1, k):
        total = d2.sum()
        weights = d2 if total > 0 else torch.ones_like(d2)
        pick = torch.multinomial(weights, 1, generator=generator)
        centroids.append(x[pick])
        d2 = torch.minimum(d2, sq_dists(x, x[pick]).squeeze(1))
    return torch.cat(centroids)


def sinkhorn_assign(d2: Tensor, iters: int, eps: float) -> Tensor:
    """Balanced assignment [N] int64 from distances d2 [N, K].

    Entropic optimal transport with uniform marginals (each cluster should receive N/K points),
    solved in log space; each point then goes to the cluster where its transport plan is largest.
    `eps` is the temperature relative to the mean distance.
    """
    n, k = d2.shape
    scale = d2.mean().clamp_min(1e-12)
    logits = -d2 / (eps * scale)  # [N, K]
    log_v = torch.zeros(k, dtype=d2.dtype)
    log_a, log_b = -torch.log(torch.tensor(float(n))), -torch.log(torch.tensor(float(k)))
    for _ in range(iters):
        log_u = log_a - torch.logsumexp(logits + log_v, dim=1)  # [N]
        log_v = log_b - torch.logsumexp(logits + log_u[:, None], dim=0)  # [K]
    return (logits + log_v).argmax(1)


def assign(x: Tensor, c: Tensor, opts: KMeansOptions) -> Tensor:
    """Cluster of each row of x [N, D] given centroids c [K, D]: [N] int64."""
    d2 = sq_dists(x, c)
    if opts.balanced and c.shape[0] > 1:
        return sinkhorn_assign(d2, opts.sinkhorn_iters, opts.sinkhorn_eps)
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
