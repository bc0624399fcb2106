"""RADD's τ-leaping sampler with the first-order (Euler) unmasking probability.

Identical to `tweedie` except that a masked digit is revealed from t to s with probability
min(1, (t - s) · w(t)), w(t) = m'(t)/m(t) the schedule's reverse-rate weight, instead of the
exact (m(t) - m(s)) / m(t). Under the log-linear schedule the two coincide (both (t - s)/t);
under the geometric or linear-β schedule they differ.
"""

from __future__ import annotations

from torch import Tensor

from stages.samplers.tweedie import TweedieSampler


class EulerSampler(TweedieSampler):
    name = "euler"

    def unmask_prob(self, t: Tensor, s: Tensor) -> float:
        return min(1.0, float((t - s) * self.schedule.weight(t)))
