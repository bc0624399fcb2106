"""The contract every diffusion sampler keeps, so they swap freely (like diffusers schedulers).

The model's `recommend` runs one shared loop:

    state = sampler.init_state(batch, device, users, round)
    state.extra["exclude"] = items each user must not get      # ItemSets (sparse [B, N]; a bool mask is converted)
    while not sampler.done(state):
        state.logp[need] = model(tokens of the rows that need a fresh pass)   # [B, S, n, V]
                           # (not `sampler.needless(state)` rows: their log-probs are not read)
        state = sampler.step(state, state.logp)
    items, scores = sampler.finish(state, k)

Excluded items (`--exclude-history`, and the items earlier rounds found) are invalid completions
during the search: every sampler keeps only partial codes that some allowed item completes, so
every finished row is an allowed item. Users left with fewer than k distinct items get another
round with the found items excluded too (each round adds at least one), so exactly k come out
whenever the catalogue minus the excluded items allows. Stochastic samplers draw their noise
from `noise.user_uniform`, keyed by (seed, user, round, step): lists do not depend on the batch.

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
from stages.samplers.exclusion import ItemSets, item_sets
from stages.samplers.noise import user_uniform
from stages.samplers.validity import CodeTable

STRATEGIES = ("direct", "top_k", "top_p")
"""How a stochastic sampler draws a digit: from the whole (tempered, valid) prediction, or from its
top-k digits, or from the smallest set of digits with probability ≥ top_p (RADD's strategies)."""


@dataclass
class SamplerOptions:
    """The sampling settings a diffusion sampler reads (a view of `SampleConfig` or any object)."""

    beam: int = 10
    first_beam: int | None = None
    digits_per_step: int = 2
    whole_code: str = "exact"  # cpd with the whole code in one step: score every item, or "beam" (`SampleConfig`)
    steps: int = 16
    strategy: str = "direct"
    top_k: int = 50
    top_p: float = 0.9
    temperature: float = 1.0
    order: list[int] | str | None = None
    prefix: Any = None
    use_cache: bool = True
    renormalize: bool = False  # raw log-probs (`SampleConfig.renormalize`)
    constrained: bool = True  # only codes of real items (False: every code, invalid ones come back as INVALID, -2)
    sample_steps: int | None = None  # diffurec: reverse steps (None = the run's own)
    seed: int = 0
    users: Tensor | None = None  # [B] int64 user IDs keying each user's noise; None = row index

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

    def init_state(self, batch: int, device: torch.device, users: Tensor | None = None, round: int = 0) -> State:
        """One all-masked (except the prefix) row per user. users [B] int64 keys of their noise."""
        tokens = self.prefix.to(device).expand(batch, 1, -1).clone()
        return self._state(tokens, users, round)

    def _state(self, tokens: Tensor, users: Tensor | None, round: int) -> State:
        b, s, _ = tokens.shape
        state = State(tokens=tokens, score=torch.zeros(b, s, device=tokens.device))
        state.extra["users"] = torch.arange(b, device=tokens.device) if users is None else users.to(tokens.device)
        state.extra["round"] = round
        return state

    def uniform(self, state: State, purpose: int, shape: tuple[int, ...]) -> Tensor:
        """This step's uniform noise per user -> [B, *shape] (keyed by seed, user, round, step, purpose)."""
        return user_uniform(self.opts.seed, state.extra["users"], (state.extra["round"], state.step, purpose), shape)

    def gumbel(self, state: State, purpose: int, shape: tuple[int, ...]) -> Tensor:
        """This step's Gumbel noise per user -> [B, *shape]."""
        return -torch.log(-torch.log(self.uniform(state, purpose, shape)))

    def allowed_digits(self, state: State, tokens: Tensor, rows: Tensor, j: int) -> Tensor:
        """Digits each row may take at position j: some item not excluded for its user has them with the
        row's other filled digits. tokens: [B*S, n] the state's rows; rows: [r] the rows asked -> [r, V] bool.
        Memory follows r·V and the rows' excluded items, not the catalogue (`CodeTable.digit_counts`).
        Unconstrained (`constrained` off): every digit of position j's codebook."""
        if not self.opts.constrained:
            ok = torch.arange(self.table.vmax, device=tokens.device) < self.table.vocab_sizes[j]
            return ok.expand(len(rows), -1)
        excluded, ex = None, item_sets(state.extra, "exclude")
        if ex is not None:
            s = tokens.shape[0] // max(1, len(ex))
            excluded = self._excluded_pairs(ex, rows // s)
        return self.table.digit_counts(tokens[rows], j, excluded) > 0

    @staticmethod
    def _excluded_pairs(ex: ItemSets, user: Tensor) -> tuple[Tensor, Tensor]:
        """(query [E], item [E]): the excluded items of each query's user. user: [r] row index in the batch."""
        sub = ex.rows(user)
        return sub.pairs()

    @abc.abstractmethod
    def step(self, state: State, logp: Tensor) -> State:
        """Fill some masked digits given the model's log-probs [B, S, n, V] of the current rows."""

    def done(self, state: State) -> bool:
        return bool((state.tokens >= 0).all())

    def one_pass(self) -> bool:
        """True when the search reads the model once per user (the all-masked pass), so per-user
        precomputation that pays off over many rows (folding cross-attention into keys) is not worth it."""
        return False

    def needless(self, state: State) -> Tensor | None:
        """[B, S] bool: rows whose model log-probs the next `step` does not read (the loop skips their
        function evaluation and hands the step zeros there), or None when every row's are read."""
        return None

    def finish(self, state: State, k: int) -> tuple[Tensor, Tensor]:
        """Top-k distinct items per user. Returns (items [B, k] int64, -1 = none; scores [B, k] float32).
        Unconstrained: codes of no item are kept as INVALID (-2), one per distinct code (`free.py`)."""
        if not self.opts.constrained:
            from stages.samplers.free import free_finish

            return free_finish(self.table, state, k)
        b, s, n = state.tokens.shape
        items = self.table.item_of(state.tokens.reshape(-1, n)).view(b, s)
        drop = items < 0
        ex = item_sets(state.extra, "exclude")
        if ex is not None:  # items to leave out (the user's history)
            drop |= ex.contains(torch.arange(b, device=items.device)[:, None].expand_as(items), items)
        score = state.score.float().masked_fill(drop, float("-inf"))
        return top_distinct(items, score, k)


def filter_logits(lp: Tensor, strategy: str, top_k: int, top_p: float) -> Tensor:
    """Apply a strategy: keep the top-k digits or the smallest set with probability ≥ top_p
    (`direct` keeps all). lp: [R, V] log-probs -> [R, V] (-inf where dropped; the best digit stays)."""
    if strategy == "direct":
        return lp
    if strategy == "top_k":
        kth = lp.topk(min(top_k, lp.shape[-1]), dim=-1).values[:, -1:]
        return lp.masked_fill(lp < kth, float("-inf"))
    sorted_lp, order = lp.sort(dim=-1, descending=True)
    before = torch.cumsum(sorted_lp.exp(), dim=-1) - sorted_lp.exp()  # mass strictly above each digit
    drop = torch.zeros_like(before, dtype=torch.bool).scatter(1, order, before >= top_p)
    return lp.masked_fill(drop, float("-inf"))


def check_strategy(options: SamplerOptions) -> None:
    if options.strategy not in STRATEGIES:
        raise GdrError(f"unknown strategy {options.strategy!r}", fix=f"choose one of: {', '.join(STRATEGIES)}")
    if (options.strategy == "top_k" and options.top_k < 1) or (
        options.strategy == "top_p" and not 0 < options.top_p <= 1
    ):
        raise GdrError("top_k must be >= 1 and top_p in (0, 1]", fix="fix --top-k / --top-p")


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
