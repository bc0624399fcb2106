"""The exact any-order likelihood bound of the masked denoiser on held-out codes.

Derivation. An any-order autoregressive model fills the n digits in a uniformly random order σ;
its likelihood is a mixture over orders, so by Jensen
    -log p(x) ≤ E_σ Σ_{i=1..n} -log p(x_σ(i) | x_σ(<i)).
At step i the unmasked set U = σ(<i) is a uniform random subset of size i-1 and σ(i) is uniform
over the k = n-i+1 still-masked digits, so step i contributes
    E_{|mask|=k} (1/k) Σ_{j∈mask} -log p(x_j | x_unmasked).
Summing over k = 1..n gives
    bound(x) = Σ_k (1/k) E_{|mask|=k} Σ_{j∈mask} -log p(x_j | x_unmasked)
             = E_{k~U{1..n}} (n/k) E_{|mask|=k} Σ_{j∈mask} -log p(x_j | x_unmasked),
which is exactly the expectation of the `k_dce` objective. With n ≤ 8 we enumerate all 2^n - 1
non-empty masks, each with weight 1 / (k · C(n, k)): no Monte Carlo.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stages.diffusion.corruption import MASK
from stages.diffusion.losses import LogProbFn

MAX_DIGITS = 8


def all_masks(n: int) -> tuple[Tensor, Tensor]:
    """Every non-empty mask of n digits and its weight in the bound.

    Returns (masks [2^n - 1, n] bool, weight [2^n - 1] float64 = 1 / (k · C(n, k)), k = #masked).
    """
    ids = torch.arange(1, 2**n)
    masks = (ids[:, None] >> torch.arange(n)) & 1 == 1  # [M, n]
    k = masks.sum(dim=1)
    comb = torch.tensor([math.comb(n, int(j)) for j in range(n + 1)], dtype=torch.float64)
    return masks, 1.0 / (k.double() * comb[k])


def any_order_bound(logp_fn: LogProbFn, codes: Tensor) -> Tensor:
    """Exact bound on -log p(x) in nats for each clean code.

    codes: [B, n] int64 (n ≤ 8); logp_fn(rows [R], noisy [R, n]) -> [R, n, V] log-probabilities.
    Returns [B] float64.
    """
    b, n = codes.shape
    if n > MAX_DIGITS:
        raise ValueError(f"exact enumeration needs n <= {MAX_DIGITS} digits, got {n}")
    masks, weight = all_masks(n)
    masks, weight = masks.to(codes.device), weight.to(codes.device)
    m = masks.shape[0]
    rows = torch.arange(b, device=codes.device).repeat_interleave(m)  # [B*M]
    mask = masks.repeat(b, 1)  # [B*M, n]
    clean = codes[rows]
    logp = logp_fn(rows, clean.masked_fill(mask, MASK))  # [B*M, n, V]
    nll = -logp.gather(-1, clean[..., None]).squeeze(-1).double()  # [B*M, n]
    per_mask = torch.where(mask, nll, torch.zeros_like(nll)).sum(dim=1).view(b, m)  # [B, M]
    return per_mask @ weight  # [B]
