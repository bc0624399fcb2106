"""Training objectives of the time-free masked-diffusion denoiser (one base class + factory).

Every objective turns a batch of clean codes [B, n] into masked *views* (several per example
for `diffgrm`) and a weight per digit; the loss is Σ weight · (-log p(x_i | view)) / B, where the
weight is zero on unmasked digits (the denoiser only predicts masked ones).
With `label_smoothing` ε the cross-entropy's target is (1-ε)·onehot + ε·uniform over the
position's real digits (DIFF_GRM trains with ε = 0.1); ε > 0 is no longer the likelihood bound.

- `t_dce`:      t ~ U(ε, 1) stratified over the batch, mask rate m(t) from the schedule, weight w(t)
                (= 1/t under log-linear): the RADD / SEDD continuous-time ELBO.
- `t_dse`:      the same views as `t_dce`, scored by SEDD's denoising score entropy with RADD's
                parametrisation of the concrete score (see `TimeDSE`); equal to `t_dce` for a
                normalised denoiser, and a check of that.
- `lambda_dce`: mask rate λ ~ U(0, 1) stratified over the batch, weight 1/max(λ, floor). The floor
                biases the bound (see `LambdaDCE`); floor 0 is unbiased but of infinite variance.
- `k_dce`:      any-order: exactly k of n digits masked, k ~ U{1..n} (stratified), weight n/k —
                in expectation exactly the any-order bound computed by `likelihood.py`.
- `diffgrm`:    DIFF_GRM augmentation: `augment_factor` views per example, each digit masked with
                `mask_prob` (at least one per view); each view's loss is the mean cross-entropy over
                its masked digits, averaged over the views. An example's views are consecutive rows
                (example-major), so the model reads the example's history encoding without a copy per view.
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


def smoothed_nll(logp: Tensor, target: Tensor, smoothing: float) -> Tensor:
    """Cross-entropy of logp [R, n, V] against target [R, n] with label smoothing -> [R, n].

    (1-ε)·(-log p(target)) + ε·mean over the position's real digits of -log p(v); the real digits
    are those with a finite log-prob (the model gives -inf to digits beyond a level's codebook).
    """
    nll = -logp.gather(-1, target[..., None]).squeeze(-1)
    if smoothing == 0.0:
        return nll
    real = torch.isfinite(logp)
    mean = -torch.where(real, logp, torch.zeros_like(logp)).sum(-1) / real.sum(-1).clamp(min=1)
    return (1.0 - smoothing) * nll + smoothing * mean


class DiffusionLoss(abc.ABC):
    name = ""
    label_smoothing = 0.0

    @abc.abstractmethod
    def views(self, codes: Tensor, generator: torch.Generator) -> Views:
        """Masked views of clean codes [B, n] and their per-digit weights."""

    def per_digit(self, logp: Tensor, target: Tensor) -> Tensor:
        """The loss of each digit before weighting: logp [R, n, V], target [R, n] -> [R, n]."""
        return smoothed_nll(logp, target, self.label_smoothing)

    def __call__(self, logp_fn: LogProbFn, codes: Tensor, generator: torch.Generator) -> Tensor:
        v = self.views(codes, generator)
        logp = logp_fn(v.rows, v.noisy)  # [R, n, V]
        nll = self.per_digit(logp, codes[v.rows])  # [R, n]
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


class TimeDSE(TimeDCE):
    """Denoising score entropy (SEDD, Lou et al. 2024) of the absorbing process, RADD parametrisation.

    Derivation. With total noise σ̄(t) the mask probability is m = 1 - e^{-σ̄} and the absorbing
    rate σ'(t) = dσ̄/dt = m'/(1-m). SEDD's loss at a noisy x_t sums, over the states y one forward
    jump away from x_t (a masked digit i of x_t replaced by a real digit v), the forward rate
    Q(y -> x_t) = σ'(t) times the score entropy
        s_y - r_y log s_y + r_y (log r_y - 1),   r_y = p_{t|0}(y | x_0) / p_{t|0}(x_t | x_0),
    where r_y = e^{-σ̄}/(1 - e^{-σ̄}) =: ρ(t) if v = x_0^i and 0 otherwise. RADD writes the concrete
    score as s_{i,v} = ρ(t) · c(v | unmasked digits), c the time-free denoiser. Per masked digit:
        σ' Σ_v [ρ c_v] - σ' ρ log(ρ c_{x0}) + σ' ρ (log ρ - 1) = σ'ρ · (Σ_v c_v - 1 - log c_{x0}).
    The per-digit weight is σ'(t)·ρ(t) = (m'/(1-m))·((1-m)/m) = m'/m = w(t), the schedule's
    weight (1/t under log-linear: σ' = (1-ε)/(1-(1-ε)t), ρ = (1-(1-ε)t)/((1-ε)t)); the extra term
    Σ_v c_v - 1 vanishes for a normalised c, so in value and gradient t_dse = t_dce (RADD's
    equivalence), while a denoiser whose outputs do not sum to one pays for the excess mass.
    """

    name = "t_dse"

    def per_digit(self, logp: Tensor, target: Tensor) -> Tensor:
        mass = torch.where(torch.isfinite(logp), logp.exp(), torch.zeros_like(logp)).sum(-1)  # [R, n] Σ_v c_v
        return mass - 1.0 + super().per_digit(logp, target)


class LambdaDCE(DiffusionLoss):
    """Mask rate λ ~ U(0, 1), weight 1/max(λ, floor).

    The unbiased weight 1/λ has infinite variance (a digit is masked with probability λ and then
    weighs 1/λ: E[w²] = ∫ λ/λ² dλ diverges), hence the floor. Its bias: a view with λ < floor is
    weighted λ/floor of its due, so the objective falls short of the bound by
    Σ_digits ∫_0^floor (1 - λ/floor) nll(λ) dλ ≈ n · floor/2 · nll(λ → 0) (nll(λ): a digit's
    expected -log p when the others are masked at rate λ), i.e. ~2.5% of the nearly-unmasked
    per-digit loss at floor 0.05. floor = 0 is the unbiased estimator (λ is clamped at 1e-6 only
    to stay finite).
    """

    name = "lambda_dce"

    def __init__(self, floor: float = 0.05):
        self.floor = max(floor, 1e-6)

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
        rows = torch.arange(b, device=codes.device).repeat_interleave(self.factor)  # [B*F] example-major
        p = torch.full((b * self.factor,), self.mask_prob, device=codes.device)
        noisy, mask = mask_by_prob(codes[rows], p, generator, at_least_one=True)
        weight = mask.float() / (mask.sum(dim=1, keepdim=True).float() * self.factor)
        return Views(rows, noisy, weight)


LOSSES = ("t_dce", "t_dse", "lambda_dce", "k_dce", "diffgrm")


def make_loss(
    name: str,
    *,
    schedule: str = "loglinear",
    lambda_floor: float = 0.05,
    augment_factor: int = 4,
    mask_prob: float = 0.5,
    label_smoothing: float = 0.0,
    beta_max: float = 0.1,
) -> DiffusionLoss:
    """The objective called `name`; unknown names list the known ones."""
    if not 0.0 <= label_smoothing < 1.0:
        raise GdrError(f"label smoothing must be in [0, 1), got {label_smoothing}", fix="use e.g. 0.1 (DIFF_GRM) or 0")
    loss: DiffusionLoss
    if name in ("t_dce", "t_dse"):
        loss = (TimeDCE if name == "t_dce" else TimeDSE)(make_schedule(schedule, beta_max=beta_max))
    elif name == "lambda_dce":
        loss = LambdaDCE(lambda_floor)
    elif name == "k_dce":
        loss = KDCE()
    elif name == "diffgrm":
        loss = DiffGRMAugment(augment_factor, mask_prob)
    else:
        raise GdrError(f"unknown diffusion loss {name!r}", fix=f"choose one of: {', '.join(LOSSES)}")
    loss.label_smoothing = label_smoothing
    return loss
