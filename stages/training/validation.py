"""Validation during training: NDCG@10 of `model.recommend` on this rank's shard of users."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from stages.metrics.ranking import ndcg_per_user
from stages.samplers.base import SamplerOptions
from stages.training.loop import Validator


def _device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def make_validator(histories: Tensor, targets: Tensor, **options: Any) -> Validator:
    """A `Validator` over users `rank::world` of (histories [U, L] int64, targets [U] int64): (sum of NDCG@k
    over the shard, users in the shard). `options` are `make_user_ndcg`'s (batch_size required)."""
    per_user = make_user_ndcg(histories, targets, **options)

    def validate(model: nn.Module, rank: int, world: int) -> tuple[float, int]:
        scores = per_user(model, rank, world)
        return float(scores.sum()), len(scores)

    return validate


def make_user_ndcg(
    histories: Tensor,
    targets: Tensor,
    *,
    k: int = 10,
    batch_size: int,
    options: Any = None,
    sampler: str | None = None,
    exclude: Tensor | None = None,
    users: Tensor | None = None,
    list_k: int | None = None,
) -> Callable[[nn.Module, int, int], Tensor]:
    """NDCG@k of each user `rank::world` of (histories [U, L] int64, targets [U] int64) -> fn(model, rank, world)
    returning [U_r] float64 (paired comparisons of decoding choices need the users' values, not their sum).

    Calls `model.recommend(history_batch, k=k, sampler=sampler, options=options, exclude=exclude_batch)`
    in batches of `batch_size` users.
    exclude: [U, M] int64 ids never to recommend to each user (-1 = padding; the social view passes the
    user themself), removed during the search; None = nothing.
    users: [U] int64 user IDs, handed to models with `needs_users` (graph models score a user by ID) as
    `options.users`, as `gdr sample` does; other models get `options` unchanged.
    list_k: items in each list the model returns (NDCG is cut at k); None = k. A model that re-ranks its
    list (the repeat head mixes history items in) can order its top k differently in a longer list.
    """
    if histories.shape[0] != targets.shape[0]:
        raise ValueError(f"histories {tuple(histories.shape)} and targets {tuple(targets.shape)} disagree on users")
    if exclude is not None and exclude.shape[0] != targets.shape[0]:
        raise ValueError(f"exclude {tuple(exclude.shape)} and targets {tuple(targets.shape)} disagree on users")

    def per_user(model: nn.Module, rank: int, world: int) -> Tensor:
        device = _device(model)
        hist = histories[rank::world].to(device)  # [U_r, L]
        tgt = targets[rank::world].to(device)  # [U_r]
        ex = None if exclude is None else exclude[rank::world].to(device)  # [U_r, M]
        by_id = users is not None and getattr(model, "needs_users", False)
        usr = users[rank::world].to(device) if by_id else None  # [U_r]
        out = []
        for lo in range(0, len(hist), batch_size):
            extra = {} if ex is None else {"exclude": ex[lo:lo + batch_size]}  # fmt: skip
            opts = replace(SamplerOptions.of(options), users=usr[lo:lo + batch_size]) if usr is not None else options  # fmt: skip
            items, _ = model.recommend(
                hist[lo : lo + batch_size], k=list_k or k, sampler=sampler, options=opts, **extra
            )
            out.append(ndcg_per_user(items, tgt[lo : lo + batch_size], k=k).cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    return per_user
