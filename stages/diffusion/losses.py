"""Training objectives of the time-free masked-diffusion denoiser (one base class + factory).

Every objective turns a batch of clean codes [B, n] into masked *views* (several per example
for `diffgrm`) and a weight per digit; the loss is Σ weight · (-log p(x_i | view)) / B, where the
weight is zero on unmasked digits (the denoiser only predicts masked ones).

- `t_dce`:      t ~ U(ε, 1) stratified over the batch, mask rate m(t) from the schedule, weight w(t)
                (= 1/t under log-linear): the RADD / SEDD continuous-time ELBO.
- `lambda_dce`: mask rate λ ~ U(0, 1) stratified over the batch, weight 1/max(λ, floor).
- `k_dce`:      any-order: exactly k of n digits masked, k ~ U{1..n} (stratified), weight n/k —
                in expectation exactly the any-order bound computed by `likelihood.py`.
- `diffgrm`:    DIFF_GRM augmentation: `augment_factor` views per example, each digit masked with
                `mask_prob` (at least one per view); each view's loss is the mean cross-entropy over
                its masked digits, averaged over the views.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.diffusion.corruption import mask_by_prob, mask_exactly
from stages.diffusion.schedules import Schedule, make_schedule

LogProbFn = Callable[[Tensor, Tensor], Tensor]
"""(rows [R] int64 example index, noisy [R, n]) -> log-probabilities [R, n, V] float32."""


@dataclass
class Views:
    rows: Tensor  # [R] int64: the example each view belongs to
    noisy: Tensor  # [R, n] int64, MASK (-1) at masked digits
    weight: Tensor  # [R, n] float32, zero on unmasked digits
    level: Tensor | None = None  # [R] the noise level drawn per view: t, λ or k (None for diffgrm)


def _stratified(b: int, generator: torch.Generator) -> Tensor:
    """[B] values in [0, 1): one uniform offset plus an even grid, so a batch covers [0, 1) evenly."""
    u = torch.rand((), generator=generator)
    return torch.remainder(u + torch.arange(b, dtype=torch.float32) / b, 1.0)


class DiffusionLoss(abc.ABC):
    name = ""

    @abc.abstractmethod
    def views(self, codes: Tensor, generator: torch.Generator) -> Views:
        """Masked views of clean codes [B, n] and their per-digit weights."""

    def __call__(self, logp_fn: LogProbFn, codes: Tensor, generator: torch.Generator) -> Tensor:
        v = self.views(codes, generator)
        logp = logp_fn(v.rows, v.noisy)  # [R, n, V]
        nll = -logp.gather(-1, codes[v.rows][..., None]).squeeze(-1)  # [R, n]
        return torch.where(v.weight > 0, v.weight * nll, torch.zeros_like(nll)).sum() / codes.shape[0]


class TimeDCE(DiffusionLoss):
    name = "t_dce"

    def __init__(self, schedule: Schedule, eps: float = 1e-3):
        self.schedule, self.eps = schedule, eps

    def views(self, codes: Tensor, generator: torch.Generator) -> Views:
        b = codes.shape[0]
        t = (self.eps + (1.0 - self.eps) * _stratified(b, generator)).to(codes.device)  # [B]
        noisy, mask = mask_by_prob(codes, self.schedule.mask_prob(t), generator)
        weight = mask.float() * self.schedule.weight(t).float()[:, None]
        return Views(torch.arange(b, device=codes.device), noisy, weight, t)


class LambdaDCE(DiffusionLoss):
    name = "lambda_dce"

    def __init__(self, floor: float = 0.05):
        self.floor = floor

    def views(self, codes: Tensor, generator: torch.Generator) -> Views:
        b = codes.shape[0]
        lam = _stratified(b, generator).to(codes.device)  # [B]
        noisy, mask = mask_by_prob(codes, lam, generator)
        weight = mask.float() / lam.clamp(min=self.floor)[:, None]
        return Views(torch.arange(b, device=codes.device), noisy, weight, lam)


class KDCE(DiffusionLoss):
    name = "k_dce"

    def views(self, codes: Tensor, generator: torch.Generator) -> Views:
        b, n = codes.shape
        offset = torch.randint(n, (), generator=generator)
        k = (torch.remainder(offset + torch.arange(b), n) + 1).to(codes.device)  # [B] in 1..n
        noisy, mask = mask_exactly(codes, k, generator)
        weight = mask.float() * (n / k.float())[:, None]
        return Views(torch.arange(b, device=codes.device), noisy, weight, k)


class DiffGRMAugment(DiffusionLoss):
    name = "diffgrm"

    def __init__(self, factor: int = 4, mask_prob: float = 0.5):
        self.factor, self.mask_prob = factor, mask_prob

    def views(self, codes: Tensor, generator: torch.Generator) -> Views:
        b = codes.shape[0]
        rows = torch.arange(b, device=codes.device).repeat(self.factor)  # [B*F]
        p = torch.full((b * self.factor,), self.mask_prob, device=codes.device)
        noisy, mask = mask_by_prob(codes[rows], p, generator, at_least_one=True)
        weight = mask.float() / (mask.sum(dim=1, keepdim=True).float() * self.factor)
        return Views(rows, noisy, weight)


LOSSES = ("t_dce", "lambda_dce", "k_dce", "diffgrm")


def make_loss(
    name: str, *, schedule: str = "loglinear", lambda_floor: float = 0.05, augment_factor: int = 4, mask_prob: float = 0.5
) -> DiffusionLoss:
    """The objective called `name`; unknown names list the known ones."""
    if name == "t_dce":
        return TimeDCE(make_schedule(schedule))
    if name == "lambda_dce":
        return LambdaDCE(lambda_floor)
    if name == "k_dce":
        return KDCE()
    if name == "diffgrm":
        return DiffGRMAugment(augment_factor, mask_prob)
    raise GdrError(f"unknown diffusion loss {name!r}", fix=f"choose one of: {', '.join(LOSSES)}")
