"""Any-order autoregressive decoding: one digit per step, in a digit order.

`ordered` is RADD's ancestral sampler: `max(beam, k)` samples per user, each digit drawn from
the tempered prediction restricted to digits some allowed item still has (`strategy` direct: the
whole distribution; top_k / top_p: its top-k digits / the smallest set with mass ≥ p). The order
is `order` (default left to right), or with `order: random` a fresh uniform order per sample
(RADD draws one per sample when none is given). Samples are ranked by their path log-probability
(temperature 1); duplicates keep the max. Noise is keyed by seed and user (see `noise.py`).

`ordered-beam` is the deterministic search: a beam of width `max(beam, k)` (`first_beam` after
the first digit) filling the digits in the given fixed order (the cpd beam step on one position).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.diffusion.schedules import Schedule
from stages.samplers.base import DiffusionSampler, SamplerOptions, State, check_strategy
from stages.samplers.cpd import beam_extend, settled
from stages.samplers.free import free_extend
from stages.samplers.tweedie import TweedieSampler
from stages.samplers.validity import CodeTable

ORDER_NOISE = 7
"""Noise purpose of the random orders (steps draw purposes 0 and 1)."""


def parse_order(order: object, n: int, *, allow_random: bool) -> list[int] | None:
    """A fixed fill order ([n] permutation, default left to right) or None for `random`."""
    if order == "random":
        if not allow_random:
            raise GdrError(
                "a random digit order needs the stochastic sampler",
                fix="use --sampler ordered, or give a fixed --order",
            )
        return None
    if isinstance(order, str):
        raise GdrError(
            f"bad digit order {order!r}", fix=f"give 'random' or a permutation like [{','.join(map(str, range(n)))}]"
        )
    fixed = list(range(n)) if order is None else [int(j) for j in order]  # type: ignore[attr-defined]
    if sorted(fixed) != list(range(n)):
        raise GdrError(
            f"digit order {fixed} is not a permutation of 0..{n - 1}",
            fix=f"e.g. --order {','.join(map(str, range(n)))}",
        )
    return fixed


class OrderedSampler(TweedieSampler):
    name = "ordered"

    def __init__(self, table: CodeTable, schedule: Schedule, options: SamplerOptions, k: int):
        DiffusionSampler.__init__(self, table, schedule, options)
        check_strategy(options)
        self.order = parse_order(options.order, table.n_digits, allow_random=True)
        self.free = [j for j in range(table.n_digits) if int(self.prefix[j]) < 0]
        self.samples = max(options.beam, k)

    def init_state(self, batch: int, device: torch.device, users: Tensor | None = None, round: int = 0) -> State:
        tokens = self.prefix.to(device).expand(batch, self.samples, -1).clone()
        state = self._state(tokens, users, round)
        n = self.table.n_digits
        if self.order is None:  # a uniform order of the free digits per sample (prefix digits sort last)
            key = self.uniform(state, ORDER_NOISE, (self.samples, n)).masked_fill(self.prefix.to(device) >= 0, 2.0)
            state.extra["order"] = key.argsort(dim=-1)[..., : len(self.free)]  # [B, S, m]
        else:
            fixed = torch.tensor([j for j in self.order if j in self.free], dtype=torch.long, device=device)
            state.extra["order"] = fixed.expand(batch, self.samples, -1)
        return state

    def done(self, state: State) -> bool:
        return state.step >= len(self.free)

    def step(self, state: State, logp: Tensor) -> State:
        b, s, n = state.tokens.shape
        r, v = b * s, logp.shape[-1]
        tok = state.tokens.reshape(r, n).clone()
        at = state.extra["order"][:, :, state.step].reshape(r)  # [R] the digit each row fills now
        ok = torch.zeros(r, v, dtype=torch.bool, device=logp.device)
        for j in range(n):  # digit positions (n ≤ 8): the allowed digits of the rows filling j
            rows = (at == j).nonzero().squeeze(1)
            if len(rows):
                ok[rows] = self.allowed_digits(state, tok, rows, j)
        lj = logp.reshape(r, n, v)[torch.arange(r, device=logp.device), at]  # [R, V]
        pick = self.draw(lj, ok, self.gumbel(state, 1, (s, v)).reshape(r, v))  # [R]
        tok[torch.arange(r, device=tok.device), at] = pick
        score = state.score.reshape(r) + self.digit_score(lj, ok, pick)
        return State(tok.view(b, s, n), score.view(b, s), step=state.step + 1, extra=state.extra)


class OrderedBeamSampler(DiffusionSampler):
    name = "ordered-beam"

    def __init__(self, table: CodeTable, schedule: Schedule, options: SamplerOptions, k: int):
        super().__init__(table, schedule, options)
        order = parse_order(options.order, table.n_digits, allow_random=False)
        self.positions = [j for j in order or [] if int(self.prefix[j]) < 0]
        self.width = max(options.beam, k)
        self.first_width = self.width if options.first_beam is None else options.first_beam

    def done(self, state: State) -> bool:
        return state.step >= len(self.positions)

    def needless(self, state: State) -> Tensor | None:
        return settled(self.table, state, self.opts.renormalize) if self.opts.constrained else None

    def step(self, state: State, logp: Tensor) -> State:
        n = state.tokens.shape[2]
        sets = torch.zeros(1, n, dtype=torch.bool, device=logp.device)
        sets[0, self.positions[state.step]] = True
        width = self.first_width if state.step == 0 else self.width
        if not self.opts.constrained:
            return free_extend(self.table, state, logp, sets, width)
        return beam_extend(self.table, state, logp, sets, width, self.opts.renormalize)
