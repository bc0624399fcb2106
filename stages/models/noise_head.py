"""Noise head: finds the corrupted input positions from the encoder states.

Linear -> GELU -> Dropout -> Linear, `per_position` logits per encoder position (1 when a position
is one token; D when a position holds the D code tokens of one item), trained with binary
cross-entropy against the true corruption mask, averaged over the non-padding tokens.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class NoiseHead(nn.Module):
    def __init__(self, d_model: int, per_position: int = 1, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_model, per_position)
        )

    def forward(self, states: Tensor) -> Tensor:
        """states [B, S, d] -> logits [B, S * per_position] (token order of the positions)."""
        return self.net(states).flatten(1)


def noise_bce(logits: Tensor, corrupted: Tensor, valid: Tensor) -> Tensor:
    """Mean BCE of `logits` [B, N] against `corrupted` [B, N] bool over the `valid` [B, N] tokens
    (padding and special tokens excluded); 0 when no token is valid."""
    per = F.binary_cross_entropy_with_logits(logits.float(), corrupted.float(), reduction="none")  # [B, N]
    weight = valid.float()
    return (per * weight).sum() / weight.sum().clamp(min=1.0)
