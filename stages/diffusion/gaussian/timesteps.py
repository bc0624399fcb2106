"""Training-time samplers of the diffusion step t, with importance weights.

Both return (t [B] int64, weights [B] float32) with weights = 1 / (T · p_t), so that
mean(weights · loss_t) is an unbiased estimate of the loss averaged uniformly over t.

    uniform     p_t = 1 / T (weights all 1)
    lossaware   importance sampling by the loss's second moment (improved DDPM's resampler):
                each step keeps its last `history` training losses; once every step has a full
                history, p_t ∝ sqrt(mean of the squared losses of t), mixed with the uniform
                distribution: p = (1 - floor) · p + floor / T. Until then p is uniform.

The loss-aware state (loss history and counts) lives in module buffers, so it is saved in
checkpoints and restored on resume; draws come from the caller's generator only. Under torchrun
every rank feeds every rank's losses (all-gather), so all ranks keep the same history.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gdr_cli.errors import GdrError

TIMESTEP_SAMPLERS = ("uniform", "lossaware")


class TimestepSampler(nn.Module):
    """p_t over the T steps (`probs`), sampling with importance weights, and `update` from losses."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def probs(self) -> Tensor:
        """[T] float64 sampling distribution of t."""
        return torch.full((self.steps,), 1.0 / self.steps, dtype=torch.float64)

    def sample(self, n: int, gen: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        """n steps drawn from `probs` with `gen` (a generator on `device`) -> (t [n] int64, weights [n] float32)."""
        p = self.probs().to(device)
        t = torch.multinomial(p, n, replacement=True, generator=gen)
        return t, (1.0 / (self.steps * p[t])).float()

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record the per-example losses [B] of steps t [B] (no-op for a fixed distribution)."""


class UniformSampler(TimestepSampler):
    def sample(self, n: int, gen: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        t = torch.randint(0, self.steps, (n,), generator=gen, device=device)
        return t, torch.ones(n, dtype=torch.float32, device=device)


class LossSecondMomentSampler(TimestepSampler):
    def __init__(self, steps: int, *, history: int = 10, uniform_floor: float = 0.001):
        super().__init__(steps)
        if history < 1:
            raise GdrError(f"loss history must be at least 1, got {history}", fix="set loss_history to e.g. 10")
        if not 0.0 <= uniform_floor <= 1.0:
            raise GdrError(
                f"uniform_floor must be in [0, 1], got {uniform_floor}", fix="set uniform_floor to e.g. 0.001"
            )
        self.history, self.uniform_floor = history, uniform_floor
        self.register_buffer("losses", torch.zeros(steps, history, dtype=torch.float64))  # [T, N] oldest first
        self.register_buffer("counts", torch.zeros(steps, dtype=torch.int64))  # [T] losses recorded (≤ N)

    def warm(self) -> bool:
        """Every step has a full history of losses."""
        return bool((self.counts == self.history).all())

    def probs(self) -> Tensor:
        """Computed on the buffers' device without a host sync (the training loop never waits on it)."""
        uniform = torch.full_like(self.counts, 1, dtype=torch.float64) / self.steps
        second = self.losses.pow(2).mean(dim=1).sqrt()  # [T] sqrt(E[L^2]) per step
        p = second / second.sum().clamp(min=1e-300)
        p = p * (1.0 - self.uniform_floor) + self.uniform_floor / self.steps
        return torch.where((self.counts == self.history).all(), p, uniform)

    @torch.no_grad()
    def update(self, t: Tensor, losses: Tensor) -> None:
        """Append each example's loss to its step's history (in batch order), keeping the last N per step.

        Vectorised: per step, the old entries (left-aligned, `counts` of them) and this batch's new
        ones form one sequence; its last N entries become the history.
        """
        t, losses = t.detach().long(), losses.detach().double()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t, losses = _all_gather(t), _all_gather(losses)
        t, losses = t.to(self.losses.device), losses.to(self.losses.device)
        steps, n = self.steps, self.history
        order = torch.argsort(t, stable=True)  # examples grouped by step, batch order within a step
        ts = t[order]
        new_count = torch.zeros(steps, dtype=torch.int64, device=ts.device).scatter_add_(
            0, ts, torch.ones_like(ts)
        )  # [T]
        first = torch.cumsum(new_count, 0) - new_count  # [T] first sorted index of each step
        rank = torch.arange(len(ts), device=ts.device) - first[ts]  # [B] order within its step
        total = self.counts + new_count  # [T] entries per step, old + new
        drop = (total - n).clamp(min=0)  # [T] oldest entries pushed out
        # column of every entry in its step's combined sequence, shifted left by the dropped ones;
        # entries that fall out (or old slots never filled) go to a scratch column n
        col = torch.arange(n, device=ts.device)[None, :]
        old_col = torch.where((col < self.counts[:, None]) & (col >= drop[:, None]), col - drop[:, None], n)  # [T, N]
        new_pos = self.counts[ts] + rank - drop[ts]  # [B]
        new_col = torch.where(new_pos >= 0, new_pos, n)
        out = torch.zeros(steps, n + 1, dtype=self.losses.dtype, device=ts.device)
        out.scatter_(1, old_col, self.losses)
        out[ts, new_col] = losses[order]
        self.losses.copy_(out[:, :n])
        self.counts.copy_(total.clamp(max=n))


def _all_gather(x: Tensor) -> Tensor:
    """Concatenate x [B] of every rank (equal B on all ranks, as the training loop's shards are)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def make_timestep_sampler(name: str, steps: int, *, history: int = 10, uniform_floor: float = 0.001) -> TimestepSampler:
    if name == "uniform":
        return UniformSampler(steps)
    if name == "lossaware":
        return LossSecondMomentSampler(steps, history=history, uniform_floor=uniform_floor)
    raise GdrError(f"unknown timestep sampler {name!r}", fix=f"choose one of: {', '.join(TIMESTEP_SAMPLERS)}")
