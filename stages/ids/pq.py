"""Product quantisation (PQ) and optimised PQ (OPQ): L parallel digits, one per subspace.

Residual k-means makes digit l a refinement of digits < l, so a code is a path in a tree: what an
autoregressive decoder wants. A masked-diffusion decoder fills digits in any order; DiffGRM
(Liu et al., 2025) gives it parallel digits instead: the vector (rotated by R) is cut into L
subspaces, and digit l is the k-means cluster of the vector's l-th block. No digit depends on
another, so any subset of digits is a meaningful partial code.

OPQ (Ge et al., CVPR 2013): R starts as the PCA basis with its dimensions dealt to the subspaces
so that their variances are balanced (the parametric solution), then alternates a few times
between k-means in every subspace of X R and the orthogonal Procrustes update of R toward the
reconstruction (`R = U V^T` from the SVD of X^T Y). `rotation_iters = 0` is plain PQ on the
PCA-balanced basis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stages.ids.kmeans import KMeansOptions, kmeans


@dataclass(frozen=True)
class PQResult:
    codes: Tensor  # [N, L] int64, digit l = the cluster of the l-th block
    rotation: Tensor  # [D, D] orthogonal, applied as x @ rotation
    distortion: list[float]  # mean squared reconstruction error after the PCA start and each rotation update


def balanced_blocks(variance: Tensor, levels: int) -> list[Tensor]:
    """Deal the dimensions (variance [D], any order) to `levels` blocks of near-equal size so that
    the blocks' variance products are balanced: each dimension, largest first, goes to the block
    with the smallest log-variance sum that still has room (Ge et al.'s eigenvalue allocation).
    -> `levels` index tensors, each sorted."""
    d = variance.shape[0]
    room = [d // levels + (1 if b < d % levels else 0) for b in range(levels)]
    logs = [0.0] * levels
    blocks: list[list[int]] = [[] for _ in range(levels)]
    for j in variance.argsort(descending=True).tolist():  # loop over dimensions (D ≤ a few hundred), once
        b = min((i for i in range(levels) if room[i] > 0), key=lambda i: logs[i])
        blocks[b].append(j)
        room[b] -= 1
        logs[b] += float(torch.log(variance[j].clamp_min(1e-12)))
    return [torch.tensor(sorted(b), dtype=torch.long) for b in blocks]


def product_quantize(
    x: Tensor, sizes: list[int], opts: KMeansOptions, generator: torch.Generator, rotation_iters: int = 10
) -> PQResult:
    """Codes [N, L] of x [N, D] with L = len(sizes) subspaces (k_l clusters in block l).

    Needs D >= L. Blocks are contiguous slices of the rotated vector after the PCA start reorders
    the dimensions (`balanced_blocks`); each later iteration warm-starts k-means from the last
    centroids, so the whole thing is a function of the generator's seed.
    """
    x = x.float()
    n, d = x.shape
    levels = len(sizes)
    assert d >= levels, "fewer dimensions than subspaces"
    x = x - x.mean(0)
    variance, basis = torch.linalg.eigh(x.T @ x / max(n - 1, 1))  # [D], [D, D] (columns: eigenvectors)
    blocks = balanced_blocks(variance, levels)
    rotation = basis[:, torch.cat(blocks)]  # [D, D] PCA basis, dimensions grouped block by block
    bounds = torch.tensor([0] + [len(b) for b in blocks]).cumsum(0).tolist()
    books: list[Tensor | None] = [None] * levels
    distortion = []
    for it in range(rotation_iters + 1):  # loop over rotation updates only
        xr = x @ rotation  # [N, D]
        recon = torch.empty_like(xr)
        codes = []
        for level, k in enumerate(sizes):  # loop over subspaces only
            part = xr[:, bounds[level] : bounds[level + 1]]
            c, labels = kmeans(part, k, opts, generator, init=books[level])
            books[level] = c
            codes.append(labels)
            recon[:, bounds[level] : bounds[level + 1]] = c[labels]
        distortion.append(float((xr - recon).square().sum(1).mean()))
        if it == rotation_iters:
            break
        u, _, vh = torch.linalg.svd(x.T @ recon)  # Procrustes: the rotation R maximising tr(R^T X^T Y)
        rotation = u @ vh
    return PQResult(codes=torch.stack(codes, 1), rotation=rotation, distortion=distortion)
