"""Noise schedules of the absorbing (masking) process, in continuous time t ∈ [0, 1].

A schedule gives the probability that a digit is masked at time t, m(t) (m(0)=0, m(1)≈1), and
the ELBO weight of a masked digit's cross-entropy at t, w(t) = m'(t) / m(t). The time-free
(RADD) objective is E_t[w(t) Σ_masked -log p(x_i | unmasked)]; w(t)·dt is also the Euler step's
unmasking probability, and (m(t) - m(s)) / m(t) the exact (Tweedie) one from t down to s.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from gdr_cli.errors import GdrError


class Schedule(abc.ABC):
    """Two methods: `mask_prob(t)` and `weight(t)`, both elementwise on a float tensor."""

    name = ""

    @abc.abstractmethod
    def mask_prob(self, t: Tensor) -> Tensor:
        """m(t): probability that a digit is masked at time t."""

    @abc.abstractmethod
    def weight(self, t: Tensor) -> Tensor:
        """w(t) = m'(t) / m(t): ELBO weight of one masked digit's cross-entropy at time t."""


class LogLinear(Schedule):
    """σ(t) = -log(1 - (1-ε)t): m(t) = (1-ε)t, so w(t) = 1/t (RADD / SEDD default)."""

    name = "loglinear"

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def mask_prob(self, t: Tensor) -> Tensor:
        return (1.0 - self.eps) * t

    def weight(self, t: Tensor) -> Tensor:
        return 1.0 / t


class Geometric(Schedule):
    """σ(t) = σ_min^(1-t) σ_max^t, m(t) = 1 - exp(-σ(t)), w(t) = σ'(t) e^{-σ} / (1 - e^{-σ})."""

    name = "geometric"

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0):
        self.lo, self.hi = math.log(sigma_min), math.log(sigma_max)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.exp(self.lo + t * (self.hi - self.lo))

    def mask_prob(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.sigma(t))

    def weight(self, t: Tensor) -> Tensor:
        sigma = self.sigma(t)
        return sigma * (self.hi - self.lo) / torch.expm1(sigma)


class LinearBeta(Schedule):
    """Discrete time (D3PM): β_s = s/(T-1)·β_max for s = 0..T-1, ᾱ_s = Π_{r≤s}(1 - β_r), m = 1 - ᾱ.

    Continuous t ∈ (0, 1] maps to step s = ceil(t·(T-1)); the weight is the discrete ELBO's
    (ᾱ_{s-1} - ᾱ_s) / (1 - ᾱ_s) times T-1 (so E_{t~U} matches Σ_s of the discrete bound).
    β_max = 0.1 (the seed system's value) gives ᾱ_{T-1} ≈ e^{-0.1·T/2} ≈ 0.007 at T = 100: almost
    every digit is masked at t = 1 without the late steps masking everything at once (β_max = 1).
    """

    name = "linear_beta"

    def __init__(self, steps: int = 100, beta_max: float = 0.1):
        if steps < 2 or not 0.0 < beta_max <= 1.0:
            raise GdrError(f"linear_beta needs steps >= 2 and 0 < beta_max <= 1 (got {steps}, {beta_max})")
        self.steps = steps
        beta = torch.arange(steps, dtype=torch.float64) / (steps - 1) * beta_max  # [T]
        self.alpha_bar = torch.cumprod(1.0 - beta, dim=0)  # [T]

    def index(self, t: Tensor) -> Tensor:
        return torch.ceil(t.double() * (self.steps - 1)).long().clamp(0, self.steps - 1)

    def mask_prob(self, t: Tensor) -> Tensor:
        ab = self.alpha_bar.to(t.device)
        return (1.0 - ab[self.index(t)]).to(t.dtype)

    def weight(self, t: Tensor) -> Tensor:
        ab = self.alpha_bar.to(t.device)
        s = self.index(t).clamp(min=1)
        w = (ab[s - 1] - ab[s]) / (1.0 - ab[s]).clamp(min=1e-12) * (self.steps - 1)
        return w.to(t.dtype)


SCHEDULES: dict[str, type[Schedule]] = {c.name: c for c in (LogLinear, Geometric, LinearBeta)}


def make_schedule(name: str, *, beta_max: float = 0.1) -> Schedule:
    """The schedule called `name` (`beta_max` is linear_beta's; the others take their defaults);
    unknown names list the known ones."""
    if name not in SCHEDULES:
        raise GdrError(f"unknown noise schedule {name!r}", fix=f"choose one of: {', '.join(SCHEDULES)}")
    if name == LinearBeta.name:
        return LinearBeta(beta_max=beta_max)
    return SCHEDULES[name]()
