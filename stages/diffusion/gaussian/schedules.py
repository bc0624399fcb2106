"""The named beta schedules of the improved-DDPM / Diffusion-LM / DiffuSeq family (DiffuRec's choices).

T steps s = 0..T-1; β_s is the variance added at step s, α_s = 1 - β_s, ᾱ_s = Π_{r ≤ s} α_r.
With c = 1000 / T (so that every T spans the same total noise as Ho et al.'s 1000-step schedule):

    linear      β_s evenly spaced from c·1e-4 to c·0.02 (Ho et al. 2020, rescaled to T steps)
    trunc_lin   the same line lifted by 0.01: c·1e-4 + 0.01 .. c·0.02 + 0.01; when that end
                exceeds 1 (T < ~20.4) the end becomes c·1e-3 + 0.01 (DiffuRec's default schedule)
    pw_lin      piecewise linear: 10 steps from c·1e-4 + 0.01 down to c·1e-4, then T - 10 steps
                from c·1e-4 up to c·0.02 (needs T > 10)
    cosine      from ᾱ(τ) = cos²((τ + 0.008) / 1.008 · π/2) on τ ∈ [0, 1] (Nichol & Dhariwal 2021):
                β_s = min(1 - ᾱ((s+1)/T) / ᾱ(s/T), 0.999)
    sqrt        the same discretisation of ᾱ(τ) = 1 - sqrt(τ + 1e-4) (Li et al. 2022, Diffusion-LM):
                much noise early, little late
    trunc_cos   ᾱ(τ) = cos²((τ + 0.1) / 1.1 · π/2) discretised one step to the left, so that the
                discrete ᾱ_s equals ᾱ(s/T) exactly: β_0 = min(1 - ᾱ(0), 0.999),
                β_s = min(1 - ᾱ(s/T) / ᾱ((s-1)/T), 0.999); ᾱ never reaches ᾱ(1) = 0 (truncated)

A schedule whose betas fall outside (0, 1) for the asked T (e.g. linear with T ≤ 20, whose last
beta c·0.02 = 20/T is ≥ 1) is rejected with the smallest T that works.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from gdr_cli.errors import GdrError

MAX_BETA = 0.999
"""Cap of the betas derived from a continuous ᾱ(τ) (avoids a singular last step where ᾱ → 0)."""


def _line(start: float, end: float, n: int) -> Tensor:
    """n evenly spaced values from start to end inclusive (n = 1: [start]).  # [n] float64"""
    return torch.linspace(start, end, n, dtype=torch.float64)


def _from_alpha_bar(steps: int, alpha_bar: Callable[[float], float], *, left: bool) -> Tensor:
    """Betas whose cumulative product follows ᾱ(τ) on the grid τ = s/T.

    left=False: ᾱ_s = ᾱ((s+1)/T) / ᾱ(0) (ends at τ = 1); left=True: ᾱ_s = ᾱ(s/T) (starts at τ = 0,
    stops one step before τ = 1). Each beta is capped at MAX_BETA.  # [T] float64
    """
    grid = [alpha_bar(s / steps) for s in range(steps + 1)]  # ᾱ(0), ᾱ(1/T), ..., ᾱ(1)
    if left:
        betas = [1.0 - grid[0]] + [1.0 - grid[s] / grid[s - 1] for s in range(1, steps)]
    else:
        betas = [1.0 - grid[s + 1] / grid[s] for s in range(steps)]
    return torch.tensor(betas, dtype=torch.float64).clamp(max=MAX_BETA)


def _linear(steps: int) -> Tensor:
    c = 1000.0 / steps
    return _line(c * 1e-4, c * 0.02, steps)


def _trunc_lin(steps: int) -> Tensor:
    c = 1000.0 / steps
    end = c * 0.02 + 0.01
    if end > 1.0:
        end = c * 1e-3 + 0.01
    return _line(c * 1e-4 + 0.01, end, steps)


def _pw_lin(steps: int) -> Tensor:
    if steps <= 10:
        raise GdrError(f"noise schedule 'pw_lin' needs more than 10 diffusion steps, got {steps}",
                       fix="raise diffusion_steps above 10 or choose another schedule")  # fmt: skip
    c = 1000.0 / steps
    return torch.cat([_line(c * 1e-4 + 0.01, c * 1e-4, 10), _line(c * 1e-4, c * 0.02, steps - 10)])


def _cosine(steps: int) -> Tensor:
    return _from_alpha_bar(steps, lambda tau: math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2, left=False)


def _sqrt(steps: int) -> Tensor:
    return _from_alpha_bar(steps, lambda tau: 1.0 - math.sqrt(tau + 1e-4), left=False)


def _trunc_cos(steps: int) -> Tensor:
    return _from_alpha_bar(steps, lambda tau: math.cos((tau + 0.1) / 1.1 * math.pi / 2) ** 2, left=True)


SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "linear": _linear,
    "cosine": _cosine,
    "sqrt": _sqrt,
    "trunc_cos": _trunc_cos,
    "trunc_lin": _trunc_lin,
    "pw_lin": _pw_lin,
}


def beta_schedule(name: str, steps: int) -> Tensor:
    """β_0 .. β_{T-1} of the named schedule for T = `steps`.  # [T] float64, each in (0, 1)"""
    if name not in SCHEDULES:
        raise GdrError(f"unknown noise schedule {name!r}", fix=f"choose one of: {', '.join(SCHEDULES)}")
    if steps < 1:
        raise GdrError(f"diffusion_steps must be at least 1, got {steps}", fix="set diffusion_steps to e.g. 32")
    betas = SCHEDULES[name](steps)
    if not bool(((betas > 0) & (betas < 1)).all()):
        least = next((t for t in range(steps + 1, 10 * steps + 100) if _valid(name, t)), None)
        raise GdrError(
            f"noise schedule {name!r} with {steps} diffusion steps has betas outside (0, 1)",
            fix=f"use at least {least} diffusion steps with {name!r}, or choose another schedule"
            if least
            else "choose another schedule",
        )
    return betas


def _valid(name: str, steps: int) -> bool:
    try:
        betas = SCHEDULES[name](steps)
    except GdrError:
        return False
    return bool(((betas > 0) & (betas < 1)).all())


def alphas_cumprod(betas: Tensor) -> Tensor:
    """ᾱ_s = Π_{r ≤ s} (1 - β_r).  betas [T] -> [T] (same dtype)"""
    return torch.cumprod(1.0 - betas, dim=0)
