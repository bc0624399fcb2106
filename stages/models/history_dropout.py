"""Item dropout on training histories (CL4SRec's item mask, as padding): the generative models' `history_dropout`."""

from __future__ import annotations

import torch
from torch import Tensor


def drop_history(history: Tensor, p: float) -> Tensor:
    """Item dropout on left-padded histories [B, L] int64: each item but the latest (last column) becomes
    padding (-1) with probability p, drawn from the global RNG like dropout. -> [B, L] int64."""
    drop = torch.rand(history.shape, device=history.device) < p
    drop[:, -1] = False
    return history.masked_fill(drop, -1)
