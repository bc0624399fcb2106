"""DiffNet (Wu et al., SIGIR 2019) and DiffNet++'s interest diffusion (Wu et al., TKDE 2020).

DiffNet, for users P [U, d] and items Q [N, d] (free embeddings: gdr's tables carry no user or item
features, so the paper's fusion layer reduces to them), social graph S (training friend edges only)
and the training interactions R:

    h^0 = P
    h^{k+1}_a = s(W_k [mean_{b in S(a)} h^k_b ; h^k_a])        k = 0..K-1 (influence diffusion)
    u_a = h^K_a + mean_{i in R(a)} Q_i,      score(a, i) = <u_a, Q_i>

DiffNet++ (`interest_diffusion`): users diffuse over both graphs and items over their users,

    s_a = mean_{b in S(a)} h^k_b,  t_a = mean_{i in R(a)} v^k_i          (social, interest aggregation)
    (g1, g2) = softmax(w_k . [h^k_a ; s_a], w_k . [h^k_a ; t_a])          (graph-level attention)
    h^{k+1}_a = h^k_a + g1 s_a + g2 t_a,    v^{k+1}_i = v^k_i + mean_{a in R(i)} h^k_a
    u_a = [h^0 ; ... ; h^K]_a,  item_i = [v^0 ; ... ; v^K]_i,  score = <u_a, item_i>

(the paper's node-level attention inside each aggregation is mean pooling here, as in DiffNet).
In the social view the "items" are users (the candidates of friend recommendation), R holds the
training friend lists, and S has every validation/test friendship removed in both directions.
Training: BPR with one uniform negative per pair (`stages/models/graph.py`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl
import torch
from torch import Tensor, nn

from gdr_cli.errors import GdrError
from stages.config.graph import DiffnetConfig, GraphTrainConfig
from stages.data.views import FRIEND_SOURCES
from stages.inputs import Processed
from stages.models.family import FamilyData
from stages.models.graph import GraphRecommender, PairFamily, mean_aggregate, n_users_of, training_pairs
from stages.models.seqrec import init_weights

ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


class Diffnet(GraphRecommender):
    kind: ClassVar[str] = "diffnet"

    def __init__(
        self,
        *,
        n_users: int,
        n_items: int,
        n_social: int,
        n_interactions: int,
        d_model: int = 64,
        n_layers: int = 2,
        interest_diffusion: bool = False,
        activation: str = "relu",
        reg: float = 1e-4,
        seed: int = 0,
    ):
        super().__init__(n_users=n_users, n_items=n_items, seed=seed, reg=reg, n_social=n_social, n_interactions=n_interactions,
                         d_model=d_model, n_layers=n_layers, interest_diffusion=interest_diffusion, activation=activation)  # fmt: skip
        if activation not in ACTIVATIONS:
            raise GdrError(f"unknown activation {activation!r}", fix=f"use one of: {', '.join(ACTIVATIONS)}")
        self.interest, self.act = interest_diffusion, ACTIVATIONS[activation]
        self.user_emb = nn.Embedding(n_users, d_model)
        self.item_emb = nn.Embedding(n_items, d_model)
        if interest_diffusion:
            self.layers = nn.ModuleList(nn.Linear(2 * d_model, 1) for _ in range(n_layers))  # graph-level attention
        else:
            self.layers = nn.ModuleList(nn.Linear(2 * d_model, d_model) for _ in range(n_layers))
        self.register_buffer("social", torch.zeros(2, n_social, dtype=torch.int64))  # (user, friend), both directions
        self.register_buffer("interactions", torch.zeros(2, n_interactions, dtype=torch.int64))  # (user, item)
        init_weights(self, torch.Generator().manual_seed(seed))

    def set_graphs(self, social: Tensor, interactions: Tensor) -> None:
        """social [2, E] (user, friend) directed edges; interactions [2, R] (user, item) training pairs."""
        self.social.copy_(social)
        self.interactions.copy_(interactions)

    def diffuse(self, h: Tensor, layer: int) -> Tensor:
        """One DiffNet influence-diffusion layer: s(W_k [mean of friends' h ; h]). h [U, d] -> [U, d]."""
        pooled = mean_aggregate(h, self.social[1], self.social[0], self.n_users)
        return self.act(self.layers[layer](torch.cat([pooled, h], dim=-1)))

    def interest_layer(self, h: Tensor, v: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """One DiffNet++ layer over the social and user-item graphs. h [U, d], v [N, d] -> (h', v')."""
        users, items = self.interactions
        s = mean_aggregate(h, self.social[1], self.social[0], self.n_users)  # [U, d]
        t = mean_aggregate(v, items, users, self.n_users)  # [U, d]
        att = self.layers[layer]
        g = torch.softmax(torch.cat([att(torch.cat([h, s], -1)), att(torch.cat([h, t], -1))], -1), -1)  # [U, 2]
        return h + g[:, :1] * s + g[:, 1:] * t, v + mean_aggregate(h, users, items, self.n_items)

    def vectors(self) -> tuple[Tensor, Tensor]:
        p, q = self.user_emb.weight, self.item_emb.weight
        if self.interest:
            hs, vs = [p], [q]
            for k in range(len(self.layers)):
                h, v = self.interest_layer(hs[-1], vs[-1], k)
                hs.append(h)
                vs.append(v)
            return torch.cat(hs, -1), torch.cat(vs, -1)
        h = p
        for k in range(len(self.layers)):
            h = self.diffuse(h, k)
        users, items = self.interactions
        return h + mean_aggregate(q, items, users, self.n_users), q

    def ego(self, users: Tensor, items: Tensor) -> Tensor:
        return self.user_emb.weight[users].pow(2).sum() + self.item_emb.weight[items].pow(2).sum()


def social_edges(data: FamilyData) -> Tensor:
    """The diffusion graph of a diffnet run: `training_friendships` of its view's splits."""
    return training_friendships(data.processed, data.view, data.splits, why="diffnet diffuses over friendships")


def training_friendships(processed: Processed, view: str, splits: pl.DataFrame, *, why: str) -> Tensor:
    """The training friend graph [2, E] int64 (user, friend), both directions: every friendship of `social.parquet`
    in the item view (it holds no friendship out); in the social view without the validation and test friendships
    of `splits` (the social split, in either direction), so no held-out edge is ever used. No friendship -> a
    one-line error (`why` says what needs them)."""
    social = processed.table("social") if (processed.folder / "social.parquet").exists() else None
    if social is None or social.height == 0:
        raise GdrError(
            f"dataset {processed.manifest.dataset!r} has no social graph ({why})",
            where=str(processed.folder / "social.parquet"),
            fix=f"train another model, or preprocess a source with friends: {FRIEND_SOURCES}",
        )
    if view == "social":
        held = splits.select("user", pl.concat_list("valid", "test").alias("friend")).explode("friend")
        held = pl.concat([held, held.select(pl.col("friend").alias("user"), pl.col("user").alias("friend"))])
        social = social.join(held.cast(social.schema), on=["user", "friend"], how="anti", maintain_order="left")
    return torch.from_numpy(social.select("user", "friend").to_numpy().T.astype("int64").copy())


class DiffnetFamily(PairFamily):
    """`train-rec --model diffnet`: BPR on the (user, item) pairs of the training split (friend pairs in the social view)."""

    kind: ClassVar[str] = "diffnet"
    config: ClassVar[type[DiffnetConfig]] = DiffnetConfig
    train_config: ClassVar[type[GraphTrainConfig]] = GraphTrainConfig

    def build(self, data: FamilyData, cfg: Any) -> Diffnet:
        social = social_edges(data)
        users, items = training_pairs(data.splits)
        model = Diffnet(n_users=n_users_of(data), n_items=data.n_items, n_social=social.shape[1], n_interactions=len(users),
                        seed=data.seed, **cfg.model_dump(exclude={"train", "exclude_history"}))  # fmt: skip
        model.set_graphs(social, torch.stack([users, items]))
        return model

    def stats(self, model: Any, data: FamilyData, cfg: Any) -> dict[str, Any]:
        return {"social_edges": int(model.social.shape[1]) // 2, "interaction_edges": int(model.interactions.shape[1])}
