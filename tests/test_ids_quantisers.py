"""K-means (balanced vs plain), residual k-means, RQ-VAE training, collision digits, sequential digits."""

from __future__ import annotations

import numpy as np
import torch

from stages.ids.collisions import disambiguate
from stages.ids.kmeans import KMeansOptions, capacity_assign, kmeans, residual_kmeans, spread_last_level
from stages.ids.rqvae import RQVAEOptions, train_rqvae


def skewed(seed: int = 0) -> torch.Tensor:
    """300 points in one tight blob plus 20 far outliers: plain k-means spends its centroids on outliers."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([0.05 * torch.randn(300, 8, generator=g), 5 * torch.randn(20, 8, generator=g)])


def perplexity(labels: torch.Tensor) -> float:
    p = torch.bincount(labels).float()
    p = p[p > 0] / p.sum()
    return float(2 ** -(p * p.log2()).sum())


def test_kmeans_is_deterministic_and_recovers_blobs() -> None:
    g = torch.Generator().manual_seed(0)
    centers = 4 * torch.eye(4, 6)
    x = (centers[:, None] + 0.1 * torch.randn(4, 25, 6, generator=g)).reshape(100, 6)
    opts = KMeansOptions(iters=20, balanced=False)
    c1, l1 = kmeans(x, 4, opts, torch.Generator().manual_seed(3))
    c2, l2 = kmeans(x, 4, opts, torch.Generator().manual_seed(3))
    assert torch.equal(l1, l2) and torch.equal(c1, c2)
    # every blob maps to one cluster and the clusters differ
    blobs = l1.reshape(4, 25)
    assert (blobs == blobs[:, :1]).all() and len(set(blobs[:, 0].tolist())) == 4


def test_balanced_assignment_uses_more_codes_on_skewed_input() -> None:
    x = skewed()
    plain, _ = residual_kmeans(x, [16, 16], KMeansOptions(iters=20, balanced=False), torch.Generator().manual_seed(1))
    bal, _ = residual_kmeans(x, [16, 16], KMeansOptions(iters=20, balanced=True), torch.Generator().manual_seed(1))
    assert perplexity(plain[:, 0]) < 3 and perplexity(bal[:, 0]) > 10  # effective number of level-0 codes
    assert torch.bincount(bal[:, 0]).max() < torch.bincount(plain[:, 0]).max() / 4
    assert len(torch.unique(bal, dim=0)) > len(torch.unique(plain, dim=0))


def test_residual_kmeans_shapes_and_caps_k() -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    codes, books = residual_kmeans(x, [256, 256, 256], KMeansOptions(iters=5), torch.Generator().manual_seed(0))
    assert codes.shape == (5, 3) and codes.dtype == torch.int64
    assert all(b.shape == (5, 3) for b in books) and int(codes.max()) < 5


def test_groups_of_identical_items_are_spread_within_the_last_codebook() -> None:
    # 4 distinct vectors, 3 of them repeated 30 times: 3 x 8 codes cannot tell the copies apart
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    x = torch.cat([base[:3].repeat_interleave(30, 0), base[3:]])  # [91, 6]
    gen = torch.Generator().manual_seed(1)
    plain, _ = residual_kmeans(x, [3, 8], KMeansOptions(iters=10, balanced=False, spread="off"), gen)
    spread, _ = residual_kmeans(
        x, [3, 8], KMeansOptions(iters=10, balanced=False, spread="overflow"), torch.Generator().manual_seed(1)
    )
    largest = int(torch.unique(plain, dim=0, return_counts=True)[1].max())
    assert largest >= 30  # the copies share every digit: a collision digit of >= 30
    counts = torch.unique(spread, dim=0, return_counts=True)[1]
    assert int(counts.max()) <= 8 and torch.equal(spread[:, 0], plain[:, 0])  # only the last level moves
    # by hand: one prefix, 2 codes of cap 2; items 0-3 on code 0 (nearest first: 0, 1), item 4 alone on code 1
    c = torch.tensor([[0.0], [10.0]])
    res = torch.tensor([[0.0], [1.0], [2.0], [3.0], [9.0]])
    moved = spread_last_level(res, c, torch.zeros(5, 1, dtype=torch.long), torch.tensor([0, 0, 0, 0, 1]), cap=2)
    # items 2, 3 are beyond the cap; item 3 (nearer code 1) takes its one free place, item 2 finds no room and stays
    assert moved.tolist() == [0, 0, 0, 1, 1]
    # groups within the cap are untouched
    same = spread_last_level(res, c, torch.zeros(5, 1, dtype=torch.long), torch.tensor([0, 0, 1, 1, 1]), cap=3)
    assert same.tolist() == [0, 0, 1, 1, 1]


def test_rqvae_loss_decreases_and_dead_codes_restart() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 16, generator=g)
    x = (centers[torch.arange(120) % 6] + 0.05 * torch.randn(120, 16, generator=g)).float()
    opts = RQVAEOptions(hidden=[32], latent_dim=8, epochs=12, batch_size=64, lr=3e-3, beta=0.25)
    res = train_rqvae(
        x,
        sizes=[32, 32],
        opts=opts,
        kmeans=KMeansOptions(iters=5, balanced=False),
        generator=torch.Generator().manual_seed(0),
    )
    assert res.codes.shape == (120, 2)
    assert res.epoch_loss[-1] < 0.7 * res.epoch_loss[0]
    assert res.restarts > 0  # 32 codes for 6 tight clusters: many go unused and are re-seeded
    again = train_rqvae(
        x,
        sizes=[32, 32],
        opts=opts,
        kmeans=KMeansOptions(iters=5, balanced=False),
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(res.codes, again.codes)


def test_disambiguate_numbers_collision_groups_in_index_order() -> None:
    sem = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    codes, stats = disambiguate(sem)
    assert codes[:, -1].tolist() == [0, 0, 1, 2, 0]
    assert (
        stats["max_collisions"] == 3 and stats["collision_rate_before"] == 0.4 and stats["collision_rate_after"] == 0.0
    )
    assert len(np.unique(codes, axis=0)) == 5


def test_capacity_assign_respects_capacity_and_prefers_near_clusters() -> None:
    d2 = torch.tensor([[0.0, 5.0], [0.1, 5.0], [0.2, 0.3], [9.0, 0.0]])
    assert capacity_assign(d2, 2).tolist() == [0, 0, 1, 1]  # point 2 is the farthest proposer to cluster 0
    assert capacity_assign(d2, 4).tolist() == [0, 0, 0, 1]  # with room, everyone gets its nearest
    x = skewed()
    labels = capacity_assign(torch.rand(x.shape[0], 7, generator=torch.Generator().manual_seed(0)), 46)
    assert (labels >= 0).all() and torch.bincount(labels).max() <= 46
