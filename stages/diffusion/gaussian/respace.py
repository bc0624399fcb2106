"""Fewer-step reverse chains: keep k of the T trained steps and re-derive the betas between them.

The kept steps are k evenly spaced ones from 0 to T-1, both ends included:
s_i = round(i · (T-1) / (k-1)) for i = 0..k-1 (halves round up; k = 1 keeps only T-1, one jump
from pure noise to the model's x_0). The respaced chain has the same ᾱ at its kept steps as the
trained one: β'_i = 1 - ᾱ_{s_i} / ᾱ_{s_{i-1}} (ᾱ_{s_{-1}} = 1), and the model is always called with
the original step index s_i.

One reverse step from x at chain position i (DDPM posterior q(x_{i-1} | x_i, x̂_0) with the
"fixed large" variance β'_i):  x ← c1_i · x̂_0 + c2_i · x + σ_i · ε,  σ_0 = 0 (the last step adds no noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gdr_cli.errors import GdrError


def spaced_timesteps(steps: int, k: int) -> list[int]:
    """The k evenly spaced kept steps of 0..steps-1, increasing (exact integer rounding, halves up)."""
    if not 1 <= k <= steps:
        raise GdrError(f"cannot sample with {k} steps of a {steps}-step diffusion",
                       fix=f"choose sample_steps between 1 and diffusion_steps ({steps})")  # fmt: skip
    if k == 1:
        return [steps - 1]
    return [(2 * i * (steps - 1) + (k - 1)) // (2 * (k - 1)) for i in range(k)]


def respace(alphas_cumprod: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(kept steps [k] int64, betas of the k-step chain [k] float64) for ᾱ [T] of the trained chain."""
    kept = torch.tensor(spaced_timesteps(len(alphas_cumprod), k), dtype=torch.int64)
    ab = alphas_cumprod.double()[kept]
    prev = torch.cat([ab.new_ones(1), ab[:-1]])
    return kept, 1.0 - ab / prev


@dataclass
class ReverseChain:
    """The k-step reverse chain: steps [k] int64 (original indices) and per-position coefficients [k] float32."""

    steps: Tensor
    c1: Tensor  # weight of the predicted x_0
    c2: Tensor  # weight of the current x
    sigma: Tensor  # noise scale (0 at position 0)

    @classmethod
    def of(cls, alphas_cumprod: Tensor, k: int) -> ReverseChain:
        kept, betas = respace(alphas_cumprod, k)
        ab = torch.cumprod(1.0 - betas, 0)  # equals alphas_cumprod[kept]
        prev = torch.cat([ab.new_ones(1), ab[:-1]])
        c1 = betas * prev.sqrt() / (1.0 - ab)
        c2 = (1.0 - prev) * (1.0 - betas).sqrt() / (1.0 - ab)
        sigma = betas.sqrt()
        sigma[0] = 0.0
        return cls(kept, c1.float(), c2.float(), sigma.float())
