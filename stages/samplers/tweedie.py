"""RADD's τ-leaping sampler with the exact (Tweedie) unmasking probability.

Time runs from t=1 (all masked) to 0 over `steps` steps. From t to s each still-masked digit is
revealed with probability (m(t) - m(s)) / m(t) (m = the schedule's mask probability; the last
step reveals everything), its digit drawn from the denoiser's prediction restricted to digits
some real item still has. Digits revealed in the same step are drawn one position after the
other so that the result stays a real item. Rows whose tokens did not change keep their cached
log-probs: the next step costs no function evaluation for them.

To rank items, `max(beam, k)` samples are drawn per user (seeded from `options.seed`); duplicate
items are merged keeping the highest path log-probability (the sum of the temperature-1,
validity-renormalised log-probs of the digits as they were revealed), which ranks them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.diffusion.schedules import Schedule
from stages.samplers.base import DiffusionSampler, SamplerOptions, State
from stages.samplers.validity import CodeTable


def gumbel(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    u = torch.rand(shape, generator=generator).clamp(1e-10, 1.0 - 1e-7)
    return (-torch.log(-torch.log(u))).to(device)


class TweedieSampler(DiffusionSampler):
    name = "tweedie"

    def __init__(self, table: CodeTable, schedule: Schedule, options: SamplerOptions, k: int):
        super().__init__(table, schedule, options)
        if options.steps < 1:
            raise GdrError(f"steps must be >= 1, got {options.steps}", fix="use e.g. --steps 16")
        self.steps, self.samples = options.steps, max(options.beam, k)
        self.grid = torch.linspace(1.0, 0.0, options.steps + 1, dtype=torch.float64)

    def unmask_prob(self, t: Tensor, s: Tensor) -> float:
        m = self.schedule.mask_prob
        return float((m(t) - m(s)) / m(t))

    def init_state(self, batch: int, device: torch.device) -> State:
        tokens = self.prefix.to(device).expand(batch, self.samples, -1).clone()
        state = State(tokens=tokens, score=torch.zeros(batch, self.samples, device=device))
        state.extra["generator"] = self.generator()
        return state

    def done(self, state: State) -> bool:
        return state.step >= self.steps or bool((state.tokens >= 0).all())

    def step(self, state: State, logp: Tensor) -> State:
        b, s, n = state.tokens.shape
        r, v, gen = b * s, logp.shape[-1], state.extra["generator"]
        i = state.step
        p = 1.0 if i + 1 >= self.steps else self.unmask_prob(self.grid[i], self.grid[i + 1])
        u = torch.rand((r, n), generator=gen).to(logp.device)
        noise = gumbel((r, n, v), gen, logp.device)
        old = state.tokens.reshape(r, n)
        tok, score = old.clone(), state.score.reshape(r).clone()
        reveal = (tok < 0) & (u < p)  # [R, n]
        match = self.table.match(tok)  # [R, N]
        lp = logp.reshape(r, n, v)
        for j in range(n):  # digit positions (n ≤ 8), each step vectorised over all rows
            ok = self.table.allowed_at(match, j)  # [R, V]
            l1 = torch.log_softmax(lp[:, j].masked_fill(~ok, float("-inf")), dim=-1)
            lt = torch.log_softmax((lp[:, j] / self.opts.temperature).masked_fill(~ok, float("-inf")), dim=-1)
            pick = (lt + noise[:, j]).argmax(dim=-1)  # [R]
            rows = reveal[:, j]
            tok[:, j] = torch.where(rows, pick, tok[:, j])
            score = score + torch.where(rows, l1.gather(1, pick[:, None]).squeeze(1), torch.zeros_like(score))
            match &= ~rows[:, None] | (self.table.codes[:, j][None] == pick[:, None])
        fresh = ~(tok != old).any(dim=1)
        return State(tok.view(b, s, n), score.view(b, s), logp=logp, fresh=fresh.view(b, s), step=i + 1, extra=state.extra)
