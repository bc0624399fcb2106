"""Discrete forward corruption of a recommender's *input* tokens (training-time augmentation).

Schedule over T timesteps t = 0..T-1 (linear in t):

    beta_t = t / (T - 1) * beta_max,   alpha_t = 1 - beta_t,   alphabar_t = prod_{s <= t} alpha_s

so t = 0 is the clean input (beta_0 = 0, alphabar_0 = 1). Per example a timestep t is drawn
uniformly from {0, ..., T-1}; each corruptible token is replaced with probability 1 - alphabar_t.
A replaced token becomes, with probability `cross_prob`, a uniformly drawn token of the other
view's exclusive vocabulary (`cross_pool`: tokens of the other view that never occur in this
view), otherwise a uniformly drawn token of this view's vocabulary [low, high). Padding and
special tokens (`protect`) are never corrupted.

Every draw takes the `generator` passed in; None = torch's default generator, which the training
loop (`stages/training/loop.py`) seeds from the run's seed in a fork and saves in its checkpoints,
so corrupted batches are reproducible and a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import torch
from torch import Tensor


def alpha_bar_schedule(timesteps: int, beta_max: float) -> Tensor:
    """alphabar_t for t = 0..T-1: [T] float64 (T = 1: the single timestep is clean)."""
    t = torch.arange(timesteps, dtype=torch.float64)
    beta = t / max(timesteps - 1, 1) * beta_max  # [T]
    return torch.cumprod(1.0 - beta, 0)


def draw_timesteps(
    n: int, timesteps: int, *, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> Tensor:
    """Uniform timesteps [n] int64 in {0, ..., T-1}."""
    return torch.randint(0, timesteps, (n,), device=device, generator=generator)


def corrupt_tokens(
    tokens: Tensor,
    t: Tensor,
    *,
    alpha_bar: Tensor,
    protect: Tensor,
    low: int,
    high: int,
    cross_pool: Tensor | None = None,
    cross_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Corrupt `tokens` [B, ...] int64 at per-example timesteps `t` [B] int64.

    alpha_bar: [T] schedule; protect: bool like `tokens` (True = padding/special, never corrupted);
    [low, high): this view's vocabulary of random replacements; cross_pool: [K] int64 token ids of the
    other view's exclusive vocabulary (None or empty = random tokens only).
    Returns (corrupted tokens like `tokens`, corruption mask bool like `tokens`).
    Draws (in this order, always, so the stream does not depend on the data): u ~ U[0,1) per token
    (corrupt when u < 1 - alphabar_t), a uniform random token per token, and, with a cross pool,
    a U[0,1) coin and a uniform pool index per token.
    """
    dev = tokens.device
    shape = tokens.shape
    rate = (1.0 - alpha_bar.to(dev)[t]).float()  # [B]
    rate = rate.view(-1, *([1] * (tokens.dim() - 1)))  # [B, 1, ...]
    u = torch.rand(shape, device=dev, generator=generator)
    mask = (u < rate) & ~protect
    replacement = torch.randint(low, high, shape, device=dev, generator=generator)
    if cross_pool is not None and cross_pool.numel() > 0:
        coin = torch.rand(shape, device=dev, generator=generator) < cross_prob
        pick = torch.randint(0, cross_pool.numel(), shape, device=dev, generator=generator)
        replacement = torch.where(coin, cross_pool.to(dev)[pick], replacement)
    return torch.where(mask, replacement, tokens), mask
