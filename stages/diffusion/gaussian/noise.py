"""Gaussian noise keyed by (row key, stream, element): the same row gets the same noise in any batch.

A counter-based generator: each element's 32-bit value is a hash of (row key, stream, element
index), turned into a standard normal by the inverse normal CDF. Sampling with it, a user's
recommendations depend on the seed and that user's history only, never on the batch size or on
which users share the batch; and it is plain tensor code (no loop over rows).

Hashing every element costs ~20 tensor ops per value, fine for one vector per row ([B, d]) but
not for the per-position noise of a whole history ([B, L, d] at every step): `keyed_bank_rows`
draws those as rows of a fixed bank of P Gaussian vectors (made once from the seed), the row
chosen per (key, stream, position) by the same hash: i.i.d. picks from P i.i.d. vectors.

The 32-bit mixer is Chris Wellons' "lowbias32" (public domain); products are computed in 16-bit
halves so no int64 product overflows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x · c) mod 2^32 for x [...] int64 in [0, 2^32) and a constant c < 2^32."""
    return (x * (c & 0xFFFF) + ((x * (c >> 16)) & 0xFFFF) * 65536) & MASK32


def mix32(x: Tensor) -> Tensor:
    """A bijective 32-bit hash of x [...] int64 in [0, 2^32) -> same shape, same range."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _const(v: int, device: torch.device) -> Tensor:
    return mix32(torch.tensor([v & MASK32], dtype=torch.int64, device=device))


def row_keys(rows: Tensor, seed: int) -> Tensor:
    """One 32-bit key per row of ids rows [B, L] int64 (any values ≥ -1), a function of (seed, the row's
    ids in order) only.  -> [B] int64"""
    length = rows.shape[1]
    pos = mix32(torch.arange(length, dtype=torch.int64, device=rows.device) + 0x9E3779B9 & MASK32)  # [L]
    per = mix32(((rows + 1) & MASK32) ^ pos)  # [B, L]
    return mix32((per.sum(dim=1) & MASK32) ^ _const(seed, rows.device))


def keyed_normal(keys: Tensor, stream: int, shape: tuple[int, ...]) -> Tensor:
    """Standard normal noise [B, *shape] float32 for keys [B] int64: element e of row b is a function of
    (keys[b], stream, e) only (24-bit uniforms, so |z| < 5.4)."""
    size = math.prod(shape)
    counter = mix32(torch.arange(size, dtype=torch.int64, device=keys.device) ^ _const(stream * 2 + 1, keys.device))
    x = mix32(mix32(keys[:, None] ^ _const(stream, keys.device)) ^ counter[None, :])  # [B, size]
    u = ((x >> 8).float() + 0.5) * 2.0**-24
    return torch.special.ndtri(u).view(len(keys), *shape)


def normal_bank(seed: int, rows: int, dim: int, device: torch.device) -> Tensor:
    """A bank of `rows` standard normal vectors [rows, dim] float32, a function of (seed, rows, dim)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=gen).to(device)


def keyed_bank_rows(bank: Tensor, keys: Tensor, stream: int, n: int) -> Tensor:
    """n bank rows per key: row j of key b is bank[hash(keys[b], stream, j) mod P].  -> [B, n, dim]"""
    slot = mix32(torch.arange(n, dtype=torch.int64, device=keys.device) ^ _const(stream * 2 + 1, keys.device))
    pick = mix32(mix32(keys[:, None] ^ _const(stream, keys.device)) ^ slot[None, :]) % bank.shape[0]  # [B, n]
    return bank[pick]
