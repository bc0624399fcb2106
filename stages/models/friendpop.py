"""Popularity among friends: the social baseline every social recommender must beat.

With S the training friend graph (binary, symmetric, [U, U]: every friendship in the item view, which holds
no friendship out, the graph DiffNet's item view diffuses over; in the social view without any validation or
test friendship, in either direction) and M the binary "who touched what" matrix of the view ([U, N]):

    item view:   M[f, i] = 1 if friend f has item i in their TRAINING sequence (validation and test items of
                 nobody count); score(u, i) = (S M)[u, i] = how many of u's friends interacted with i.
    social view: M = S; score(u, v) = (S S)[u, v] = how many friends u and v share (common neighbours);
                 u itself is never returned.

Ties break by a prior (global training popularity of the item; in the social view the candidate's degree
in S), then by the smaller id, so a user without friends gets exactly the popularity list. Nothing is
learnt: `train-rec --model friendpop` counts (`fit`), and the graphs are buffers, so a run folder alone
rebuilds the model. Scores of a batch are the rows of S M for its users, gathered edge by edge in tensor code.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.models.base import Recommender
from stages.models.popularity import exclude_items


def unique_edges(rows: Tensor, cols: Tensor, n_cols: int) -> Tensor:
    """Distinct (row, col) pairs [2, E'] int64, sorted by row then col. rows, cols: [E] int64."""
    key = torch.unique(rows.long() * n_cols + cols.long())
    return torch.stack([key // n_cols, key % n_cols])


class FriendPopularity(Recommender):
    kind: ClassVar[str] = "friendpop"
    samplers: ClassVar[tuple[str, ...]] = ("topk",)
    needs_users: ClassVar[bool] = True

    def __init__(self, *, n_users: int, n_items: int, n_social: int, n_touched: int, view: str = "item"):
        super().__init__(n_users=n_users, n_items=n_items, n_social=n_social, n_touched=n_touched, view=view)
        if view not in ("item", "social"):
            raise GdrError(f"unknown view {view!r}", fix="use item or social")
        self.n_users, self.n_items, self.view = n_users, n_items, view
        self.register_buffer("social", torch.zeros(2, n_social, dtype=torch.int64))  # (user, friend), both directions
        self.register_buffer(
            "touched", torch.zeros(2, n_touched, dtype=torch.int64)
        )  # (user, item) distinct pairs of M
        self.register_buffer("prior", torch.zeros(n_items, dtype=torch.float32))  # [N] tie-break counts

    def fit(self, social: Tensor, touched: Tensor, prior: Tensor) -> None:
        """social [2, n_social] (user, friend) distinct directed edges; touched [2, n_touched] distinct (user, item)
        pairs of M; prior [N] the tie-break counts (training popularity, or degree in the social view)."""
        self.social.copy_(social)
        self.touched.copy_(touched[:, torch.argsort(touched[0], stable=True)])
        self.prior.copy_(prior)

    def order_bonus(self) -> Tensor:
        """[N] float64 in 0..N-1: N-1 for the first item of the prior order (count desc, then id asc), 0 for the last."""
        order = torch.sort(self.prior, descending=True, stable=True).indices
        bonus = torch.empty(self.n_items, dtype=torch.float64, device=self.prior.device)
        bonus[order] = torch.arange(self.n_items - 1, -1, -1, dtype=torch.float64, device=self.prior.device)
        return bonus

    def counts(self, users: Tensor) -> Tensor:
        """Friend counts (S M)[users]: [B] int64 -> [B, N] float64, summed over the batch's edges of S: each edge
        (u, f) adds f's row of M (`touched` is sorted by user, so a row is a slice found by a pointer)."""
        dev = self.social.device
        uniq, inverse = torch.unique(users, return_inverse=True)
        pos = torch.full((self.n_users,), -1, dtype=torch.int64, device=dev)
        pos[uniq] = torch.arange(len(uniq), device=dev)
        take = pos[self.social[0]] >= 0  # edges leaving a user of the batch
        row, friend = pos[self.social[0, take]], self.social[1, take]  # [E_b]
        ptr = torch.zeros(self.n_users + 1, dtype=torch.int64, device=dev)
        ptr[1:] = torch.bincount(self.touched[0], minlength=self.n_users).cumsum(0)
        lens = ptr[friend + 1] - ptr[friend]  # [E_b] items of each friend
        ends = lens.cumsum(0)
        offset = torch.arange(int(ends[-1]) if len(ends) else 0, device=dev) - torch.repeat_interleave(
            ends - lens, lens
        )
        cols = self.touched[1, torch.repeat_interleave(ptr[friend], lens) + offset]
        dense = torch.zeros(len(uniq), self.n_items, dtype=torch.float64, device=dev)
        dense.index_put_(
            (torch.repeat_interleave(row, lens), cols), torch.ones_like(cols, dtype=torch.float64), accumulate=True
        )
        return dense[inverse]

    def scores(self, users: Tensor) -> Tensor:
        """Exact ranking keys [B, N] float64: friend count * N + prior-order bonus (integers below 2^53)."""
        score = self.counts(users) * self.n_items + self.order_bonus()
        if self.view == "social":  # never the user themself
            score[torch.arange(len(users), device=score.device), users] = float("-inf")
        return score

    @torch.no_grad()
    def recommend(
        self, history: Tensor, *, k: int, sampler: str | None = None, options: Any = None, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-k by (friend count, prior, smaller id); returned scores are the friend counts plus the prior
        order scaled into [0, 1). users from `options.users` ([B] int64)."""
        self.check_sampler(sampler)
        users = getattr(options, "users", None)
        if users is None or len(users) != history.shape[0]:
            raise GdrError(
                "friendpop scores users by ID and got none",
                fix="pass options.users ([B] user ids), as `gdr sample` does",
            )
        users = users.to(self.social.device).long()
        if users.numel() and (int(users.max()) >= self.n_users or int(users.min()) < 0):
            raise GdrError(f"user id {int(users.max())} is outside this run's {self.n_users} users",
                           fix="sample the run on the dataset it was trained on")  # fmt: skip
        score = self.scores(users)
        if exclude is not None:
            score = exclude_items(score, exclude.to(score.device))
        kk = min(k, self.n_items)
        top, items = score.topk(kk, dim=1)  # [B, kk]
        missing = torch.isinf(top)
        items = torch.where(missing, -1, items)
        shown = torch.where(missing, float("-inf"), top / self.n_items).float()
        if kk < k:
            items = torch.nn.functional.pad(items, (0, k - kk), value=-1)
            shown = torch.nn.functional.pad(shown, (0, k - kk), value=float("-inf"))
        return items, shown
