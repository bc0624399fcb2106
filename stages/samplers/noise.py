"""Per-user random numbers for the stochastic samplers: a counter-based generator.

A user's noise is a pure function of (seed, user key, round, step, purpose, index within the
user's block), computed by integer hashing (the SplitMix64 finaliser) on whatever device the
sampler runs: no generator state is shared between users, so a user's list does not depend on
which other users share its batch (`--batch-size`), nor on the device. The user key is the
user's ID when the caller gives one (`SamplerOptions.users`), else the row's index in the call.
"""

from __future__ import annotations

import torch
from torch import Tensor

_M1 = 0xBF58476D1CE4E5B9 - 2**64  # SplitMix64 multipliers as signed int64
_M2 = 0x94D049BB133111EB - 2**64
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64


def _wrap(v: int) -> int:
    """A Python int as the signed int64 with the same low 64 bits."""
    v &= 2**64 - 1
    return v - 2**64 if v >= 2**63 else v


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64(x: Tensor) -> Tensor:
    """SplitMix64 finaliser on int64 (wrapping arithmetic): a bijective, well-mixed hash."""
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def user_uniform(seed: int, users: Tensor, stream: tuple[int, ...], shape: tuple[int, ...]) -> Tensor:
    """Uniform numbers in (0, 1) per user: users [B] int64 keys -> [B, *shape] float32.

    `stream` names the draw (e.g. (round, step, purpose)); equal (seed, user, stream) give the
    same block, whatever the batch.
    """
    key = mix64(torch.tensor(_wrap(int(seed) + _GOLDEN), dtype=torch.long, device=users.device))
    for part in stream:
        key = mix64(key ^ _wrap((int(part) + 1) * _GOLDEN))
    base = mix64(key ^ mix64(users.long() * _GOLDEN + 1))  # [B]
    count = 1
    for size in shape:
        count *= size
    index = torch.arange(count, device=users.device)
    bits = mix64(base[:, None] + (index[None] + 1) * _GOLDEN)  # [B, count]
    u = (_shr(bits, 11).double() + 0.5) / float(2**53)  # 53 random bits, never 0 or 1
    return u.float().clamp(1e-10, 1.0 - 1e-7).view(len(users), *shape)


def user_gumbel(seed: int, users: Tensor, stream: tuple[int, ...], shape: tuple[int, ...]) -> Tensor:
    """Standard Gumbel noise per user -> [B, *shape] float32 (argmax of logits + noise samples)."""
    return -torch.log(-torch.log(user_uniform(seed, users, stream, shape)))
