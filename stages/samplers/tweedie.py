"""RADD's τ-leaping sampler with the exact (Tweedie) unmasking probability.

Time runs from t=1 (all masked) to 0 over `steps` steps. From t to s each still-masked digit is
revealed with probability (m(t) - m(s)) / m(t) (m = the schedule's mask probability; the last
step reveals everything), its digit drawn from the denoiser's prediction restricted to digits
some allowed item still has (`strategy`: the whole tempered prediction, its top-k digits or its
top-p nucleus). Digits revealed in the same step are drawn one position after the other so
that the result stays an allowed item. Rows whose tokens did not change keep their cached
log-probs: the next step costs no function evaluation for them.

To rank items, `max(beam, k)` samples are drawn per user (noise keyed by seed and user, see
`noise.py`); duplicate items are merged keeping the highest path log-probability (the sum of the
temperature-1 log-probs of the digits as they were revealed: raw, or renormalised over the
allowed digits with `renormalize`), which ranks them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.diffusion.schedules import Schedule
from stages.samplers.base import DiffusionSampler, SamplerOptions, State, check_strategy, filter_logits
from stages.samplers.validity import CodeTable


class TweedieSampler(DiffusionSampler):
    name = "tweedie"

    def __init__(self, table: CodeTable, schedule: Schedule, options: SamplerOptions, k: int):
        super().__init__(table, schedule, options)
        if options.steps < 1:
            raise GdrError(f"steps must be >= 1, got {options.steps}", fix="use e.g. --steps 16")
        check_strategy(options)
        self.steps, self.samples = options.steps, max(options.beam, k)
        self.grid = torch.linspace(1.0, 0.0, options.steps + 1, dtype=torch.float64)

    def unmask_prob(self, t: Tensor, s: Tensor) -> float:
        m = self.schedule.mask_prob
        return float((m(t) - m(s)) / m(t))

    def init_state(self, batch: int, device: torch.device, users: Tensor | None = None, round: int = 0) -> State:
        tokens = self.prefix.to(device).expand(batch, self.samples, -1).clone()
        return self._state(tokens, users, round)

    def done(self, state: State) -> bool:
        return state.step >= self.steps or bool((state.tokens >= 0).all())

    def step(self, state: State, logp: Tensor) -> State:
        b, s, n = state.tokens.shape
        r, v = b * s, logp.shape[-1]
        i = state.step
        p = 1.0 if i + 1 >= self.steps else self.unmask_prob(self.grid[i], self.grid[i + 1])
        u = self.uniform(state, 0, (s, n)).reshape(r, n)
        noise = self.gumbel(state, 1, (s, n, v)).reshape(r, n, v)
        old = state.tokens.reshape(r, n)
        tok, score = old.clone(), state.score.reshape(r).clone()
        reveal = (tok < 0) & (u < p)  # [R, n]
        lp = logp.reshape(r, n, v)
        for j in range(n):  # digit positions (n ≤ 8), each step vectorised over the rows revealing j
            rows = reveal[:, j].nonzero().squeeze(1)
            if not len(rows):
                continue
            ok = self.allowed_digits(state, tok, rows, j)  # [r, V] given the digits revealed so far
            pick = self.draw(lp[rows, j], ok, noise[rows, j])  # [r]
            tok[rows, j] = pick
            score[rows] += self.digit_score(lp[rows, j], ok, pick)
        fresh = ~(tok != old).any(dim=1)
        return State(
            tok.view(b, s, n), score.view(b, s), logp=logp, fresh=fresh.view(b, s), step=i + 1, extra=state.extra
        )

    def draw(self, lp: Tensor, ok: Tensor, noise: Tensor) -> Tensor:
        """One digit per row from the tempered, allowed, strategy-filtered prediction.
        lp, ok, noise: [R, V] -> [R] (Gumbel-max)."""
        lt = torch.log_softmax((lp / self.opts.temperature).masked_fill(~ok, float("-inf")), dim=-1)
        lt = filter_logits(lt, self.opts.strategy, self.opts.top_k, self.opts.top_p)
        return (lt + noise).argmax(dim=-1)

    def digit_score(self, lp: Tensor, ok: Tensor, pick: Tensor) -> Tensor:
        """Path score of the drawn digits: lp, ok [R, V], pick [R] -> [R] (raw or renormalised log-prob)."""
        if self.opts.renormalize:
            lp = torch.log_softmax(lp.masked_fill(~ok, float("-inf")), dim=-1)
        return lp.gather(1, pick[:, None]).squeeze(1)
