"""The contract every diffusion sampler keeps, so they swap freely (like diffusers schedulers).

The model's `recommend` runs one shared loop:

    state = sampler.init_state(batch, device)
    while not sampler.done(state):
        state.logp[need] = model(tokens of the rows that need a fresh pass)   # [B, S, n, V]
        state = sampler.step(state, state.logp)
    items, scores = sampler.finish(state, k)

A state holds S partial codes per user ([B, S, n], -1 = masked), their scores (float32
log-probabilities) and the per-row cache of model outputs: rows whose `fresh` flag is set reuse
their cached log-probs (no function evaluation). `finish` maps codes to items, merges duplicates
reached by different fill orders (keeping the max score) and returns the top-k distinct items.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.diffusion.schedules import Schedule
from stages.samplers.validity import CodeTable


@dataclass
class SamplerOptions:
    """The sampling settings a diffusion sampler reads (a view of `SampleConfig` or any object)."""

    beam: int = 10
    digits_per_step: int = 2
    steps: int = 16
    strategy: str = "direct"
    top_k: int = 50
    top_p: float = 0.9
    temperature: float = 1.0
    order: list[int] | None = None
    prefix: Any = None
    use_cache: bool = True
    seed: int = 0

    @classmethod
    def of(cls, options: Any) -> SamplerOptions:
        """Read the fields from any object (missing or None ones keep their defaults)."""
        if isinstance(options, cls):
            return options
        if isinstance(options, dict):
            given = options
        else:
            given = {f: getattr(options, f, None) for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in given.items() if k in cls.__dataclass_fields__ and v is not None})


@dataclass
class State:
    tokens: Tensor  # [B, S, n] int64, -1 = masked
    score: Tensor  # [B, S] float32 log-probability of the choices so far (-inf = dead row)
    logp: Tensor | None = None  # [B, S, n, V] cached model log-probs of each row
    fresh: Tensor | None = None  # [B, S] bool: the cache is valid for the row's tokens
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class DiffusionSampler(abc.ABC):
    name = ""

    def __init__(self, table: CodeTable, schedule: Schedule, options: SamplerOptions):
        self.table, self.schedule, self.opts = table, schedule, options
        if options.temperature <= 0:
            raise GdrError(f"temperature must be > 0, got {options.temperature}", fix="use e.g. --temperature 1.0")
        if options.beam < 1:
            raise GdrError(f"beam must be >= 1, got {options.beam}")
        self.prefix = table.parse_prefix(options.prefix)  # [n], -1 = free

    def init_state(self, batch: int, device: torch.device) -> State:
        """One all-masked (except the prefix) row per user."""
        tokens = self.prefix.to(device).expand(batch, 1, -1).clone()
        return State(tokens=tokens, score=torch.zeros(batch, 1, device=device))

    @abc.abstractmethod
    def step(self, state: State, logp: Tensor) -> State:
        """Fill some masked digits given the model's log-probs [B, S, n, V] of the current rows."""

    def done(self, state: State) -> bool:
        return bool((state.tokens >= 0).all())

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.opts.seed))

    def finish(self, state: State, k: int) -> tuple[Tensor, Tensor]:
        """Top-k distinct items per user. Returns (items [B, k] int64, -1 = none; scores [B, k] float32)."""
        b, s, n = state.tokens.shape
        items = self.table.item_of(state.tokens.reshape(-1, n)).view(b, s)
        drop = items < 0
        if "exclude" in state.extra:  # [B, N] items to leave out (the user's history)
            drop |= state.extra["exclude"].gather(1, items.clamp(min=0))
        score = state.score.float().masked_fill(drop, float("-inf"))
        return top_distinct(items, score, k)


def top_distinct(items: Tensor, score: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Merge duplicate items per row keeping the max score, then take the top k.

    items: [B, S] int64 (-1 = none), score: [B, S] float32. Returns ([B, k], [B, k]).
    """
    score, order = score.sort(dim=1, descending=True)
    items = items.gather(1, order)
    s = items.shape[1]
    same = items[:, :, None] == items[:, None, :]  # [B, S, S]
    earlier = torch.ones(s, s, dtype=torch.bool, device=items.device).tril(-1)
    dup = (same & earlier).any(dim=2)
    score = score.masked_fill(dup | (items < 0), float("-inf"))
    kk = min(k, s)
    top, idx = score.topk(kk, dim=1)
    out = items.gather(1, idx).masked_fill(torch.isinf(top), -1)
    if kk < k:
        out = torch.cat([out, out.new_full((out.shape[0], k - kk), -1)], dim=1)
        top = torch.cat([top, top.new_full((top.shape[0], k - kk), float("-inf"))], dim=1)
    return out, top
