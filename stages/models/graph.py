"""What the graph recommenders (DiffNet, DiffKG) share: user-ID scoring, graphs as buffers, BPR, exact top-K.

A graph model embeds users and candidates ("items": items, or users in the social view) and scores
`score(u, i) = <user vector u, item vector i>` over the whole catalogue. It needs the user's ID, not
only their history: `recommend` reads `options.users` ([B] int64), which `gdr sample` and validation
pass (`Recommender.needs_users`). Graphs are edge lists kept as buffers (their sizes are constructor
arguments), so a run folder alone rebuilds the model.

Training examples are the (user, positive) pairs of the training split; each step draws one uniform
negative per pair from a generator seeded by (seed, step, rank) (a buffer counts the steps, so a
resumed run draws the same negatives) and minimises BPR: -log sigmoid(s(u, pos) - s(u, neg)) plus an
L2 penalty on the batch's ego embeddings.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.models.base import Recommender
from stages.models.family import FamilyData, ModelFamily
from stages.models.seqrec import _rank, top_k


def mean_aggregate(h: Tensor, src: Tensor, dst: Tensor, n_dst: int) -> Tensor:
    """Mean of the source rows over each destination's in-edges (zeros where a node has none).

    h: [N_src, d]; src, dst: [E] int64 edge endpoints -> [n_dst, d]; equals D^-1 A h with A[dst, src] = 1."""
    out = h.new_zeros(n_dst, h.shape[1]).index_add_(0, dst, h[src])
    deg = torch.zeros(n_dst, dtype=h.dtype, device=h.device).index_add_(0, dst, torch.ones_like(dst, dtype=h.dtype))
    return out / deg.clamp(min=1)[:, None]


def training_pairs(splits: pl.DataFrame) -> tuple[Tensor, Tensor]:
    """(user [P] int64, item [P] int64): every (user, item) of the training lists, in table order."""
    flat = splits.select("user", "train").explode("train").drop_nulls()
    return (torch.from_numpy(flat["user"].to_numpy().astype(np.int64)),
            torch.from_numpy(flat["train"].to_numpy().astype(np.int64)))  # fmt: skip


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """Mean -log sigmoid(pos - neg). pos, neg: [B] scores."""
    return F.softplus(neg - pos).mean()


class GraphRecommender(Recommender, abc.ABC):
    """User-ID scoring, BPR with seeded negatives and exact top-K; subclasses give `vectors`."""

    samplers: ClassVar[tuple[str, ...]] = ("topk",)
    needs_users: ClassVar[bool] = True

    def __init__(self, *, n_users: int, n_items: int, seed: int, reg: float, **extra: Any):
        super().__init__(n_users=n_users, n_items=n_items, seed=seed, reg=reg, **extra)
        self.n_users, self.n_items, self.seed, self.reg = n_users, n_items, seed, reg
        self.register_buffer("draws", torch.zeros((), dtype=torch.int64))  # training steps drawn so far

    @abc.abstractmethod
    def vectors(self) -> tuple[Tensor, Tensor]:
        """(users [n_users, d'], items [n_items, d']) after propagation over the graphs."""

    @abc.abstractmethod
    def ego(self, users: Tensor, items: Tensor) -> Tensor:
        """Sum of squared ego (layer-0) embeddings of these users and items, for the L2 penalty."""

    def step_generator(self, device: torch.device) -> torch.Generator:
        """This training step's generator, seeded by (seed, step, rank); advances the step when training."""
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, int(self.draws), _rank()]).generate_state(2, np.uint32)
        if self.training:
            self.draws += 1
        return torch.Generator(device).manual_seed(int(state[0]) << 32 | int(state[1]))

    def bpr(self, batch: dict[str, Tensor]) -> Tensor:
        """BPR + L2 of a batch {"user": [B], "item": [B]} (one uniform negative per pair)."""
        users, pos = batch["user"], batch["item"]
        neg = torch.randint(
            self.n_items, (len(users),), generator=self.step_generator(users.device), device=users.device
        )
        u, v = self.vectors()
        uu = u[users]
        loss = bpr_loss((uu * v[pos]).sum(-1), (uu * v[neg]).sum(-1))
        return loss + self.reg * self.ego(users, torch.cat([pos, neg])) / len(users)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return self.bpr(batch)

    def scores(self, users: Tensor) -> Tensor:
        """Score of every item for each user. [B] int64 -> [B, n_items] float32."""
        u, v = self.vectors()
        return (u[users] @ v.T).float()

    @torch.no_grad()
    def recommend(
        self, history: Tensor, *, k: int, sampler: str | None = None, options: Any = None, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        self.check_sampler(sampler)
        users = getattr(options, "users", None)
        if users is None or len(users) != history.shape[0]:
            raise GdrError(
                f"{self.kind} scores users by ID and got none",
                fix="pass options.users ([B] user ids), as `gdr sample` does",
            )
        users = users.to(history.device).long()
        if users.numel() and (int(users.max()) >= self.n_users or int(users.min()) < 0):
            raise GdrError(f"user id {int(users.max())} is outside this run's {self.n_users} users",
                           fix="sample the run on the dataset it was trained on")  # fmt: skip
        return top_k(self.scores(users), k, exclude)


def n_users_of(data: FamilyData) -> int:
    """Users of the processed dataset (all of them carry an embedding, also those outside the splits)."""
    if data.processed is None:
        return int(data.splits["user"].max()) + 1
    return data.processed.n_users


class PairFamily(ModelFamily):
    """A graph model in the train flow: BPR over the training split's (user, item) pairs, validation with the
    user's training items excluded when the config's `exclude_history` says so."""

    def validation_excludes_history(self, cfg: Any) -> bool:
        return cfg.exclude_history

    def examples(self, data: FamilyData, cfg: Any) -> dict[str, Tensor]:
        users, items = training_pairs(data.splits)
        return {"user": users, "item": items}
