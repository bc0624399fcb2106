"""Forward masking of item codes: the absorbing state is the digit value MASK (-1).

Random numbers are drawn on the CPU from the caller's `torch.Generator` and then moved to the
codes' device, so a seed gives the same masks on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK = -1
"""Digit value of a masked (absorbed) position."""


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(shape, generator=generator).to(device)


def mask_by_prob(
    codes: Tensor, p: Tensor, generator: torch.Generator, *, at_least_one: bool = False
) -> tuple[Tensor, Tensor]:
    """Mask each digit independently with its row's probability.

    codes: [B, n] int64; p: [B] float mask probability per row.
    With `at_least_one`, a row that drew no mask gets one uniformly random masked digit.
    Returns (noisy [B, n] int64 with MASK at masked digits, mask [B, n] bool).
    """
    b, n = codes.shape
    u = _uniform((b, n), generator, codes.device)
    mask = u < p[:, None]
    if at_least_one:
        pick = torch.zeros_like(mask).scatter_(1, u.argmin(dim=1, keepdim=True), True)  # [B, n]
        mask = mask | (pick & ~mask.any(dim=1, keepdim=True))
    return codes.masked_fill(mask, MASK), mask


def mask_exactly(codes: Tensor, k: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Mask exactly k[b] digits of row b, chosen uniformly among the n positions.

    codes: [B, n] int64; k: [B] int64 in 0..n. Returns (noisy [B, n], mask [B, n] bool).
    """
    b, n = codes.shape
    u = _uniform((b, n), generator, codes.device)
    rank = u.argsort(dim=1).argsort(dim=1)  # [B, n] a uniform random permutation
    mask = rank < k[:, None]
    return codes.masked_fill(mask, MASK), mask
