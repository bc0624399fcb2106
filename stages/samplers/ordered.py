"""Any-order autoregressive decoding in a fixed digit order (`options.order`, default left to right).

`--strategy direct` is a deterministic beam search filling one digit per step in that order;
`top_k` / `top_p` draw `max(beam, k)` samples per user (seeded), each digit from the tempered,
validity-restricted prediction filtered to the top-k digits / the smallest set with mass ≥ p.
Samples are ranked by their path log-probability (temperature 1); duplicates keep the max.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.diffusion.schedules import Schedule
from stages.samplers.base import DiffusionSampler, SamplerOptions, State
from stages.samplers.cpd import beam_extend
from stages.samplers.tweedie import gumbel
from stages.samplers.validity import CodeTable

STRATEGIES = ("direct", "top_k", "top_p")


def filter_logits(lp: Tensor, strategy: str, top_k: int, top_p: float) -> Tensor:
    """Keep the top-k digits or the smallest set with probability ≥ top_p. lp: [R, V] -> [R, V]."""
    if strategy == "top_k":
        kth = lp.topk(min(top_k, lp.shape[-1]), dim=-1).values[:, -1:]
        return lp.masked_fill(lp < kth, float("-inf"))
    sorted_lp, order = lp.sort(dim=-1, descending=True)
    before = torch.cumsum(sorted_lp.exp(), dim=-1) - sorted_lp.exp()  # mass strictly above each digit
    drop = torch.zeros_like(before, dtype=torch.bool).scatter(1, order, before >= top_p)
    return lp.masked_fill(drop, float("-inf"))


class OrderedSampler(DiffusionSampler):
    name = "ordered"

    def __init__(self, table: CodeTable, schedule: Schedule, options: SamplerOptions, k: int):
        super().__init__(table, schedule, options)
        n = table.n_digits
        order = list(range(n)) if options.order is None else [int(j) for j in options.order]
        if sorted(order) != list(range(n)):
            raise GdrError(f"digit order {order} is not a permutation of 0..{n - 1}", fix=f"e.g. --set order=[{','.join(map(str, range(n)))}]")
        if options.strategy not in STRATEGIES:
            raise GdrError(f"unknown strategy {options.strategy!r}", fix=f"choose one of: {', '.join(STRATEGIES)}")
        if (options.strategy == "top_k" and options.top_k < 1) or (options.strategy == "top_p" and not 0 < options.top_p <= 1):
            raise GdrError("top_k must be >= 1 and top_p in (0, 1]", fix="fix --top-k / --top-p")
        self.positions = [j for j in order if int(self.prefix[j]) < 0]
        self.width = max(options.beam, k)

    def init_state(self, batch: int, device: torch.device) -> State:
        if self.opts.strategy == "direct":
            return super().init_state(batch, device)
        tokens = self.prefix.to(device).expand(batch, self.width, -1).clone()
        state = State(tokens=tokens, score=torch.zeros(batch, self.width, device=device))
        state.extra["generator"] = self.generator()
        return state

    def done(self, state: State) -> bool:
        return state.step >= len(self.positions)

    def step(self, state: State, logp: Tensor) -> State:
        b, s, n = state.tokens.shape
        j = self.positions[state.step]
        if self.opts.strategy == "direct":
            sets = torch.zeros(1, n, dtype=torch.bool, device=logp.device)
            sets[0, j] = True
            return beam_extend(self.table, state, logp, sets, self.width)
        r = b * s
        tok = state.tokens.reshape(r, n).clone()
        ok = self.table.allowed_at(self.table.match(tok), j)  # [R, V]
        lj = logp.reshape(r, n, -1)[:, j]
        l1 = torch.log_softmax(lj.masked_fill(~ok, float("-inf")), dim=-1)
        lt = torch.log_softmax((lj / self.opts.temperature).masked_fill(~ok, float("-inf")), dim=-1)
        lt = filter_logits(lt, self.opts.strategy, self.opts.top_k, self.opts.top_p)
        pick = (lt + gumbel(tuple(lt.shape), state.extra["generator"], lt.device)).argmax(dim=-1)  # [R]
        tok[:, j] = pick
        score = state.score.reshape(r) + l1.gather(1, pick[:, None]).squeeze(1)
        return State(tok.view(b, s, n), score.view(b, s), step=state.step + 1, extra=state.extra)
