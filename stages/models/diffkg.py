"""DiffKG (Jiang, Yang, Xia & Huang, WSDM 2024): knowledge-graph diffusion for recommendation.

Knowledge graph: each item's row x_0 in {0, 1}^E over the attribute entities (`kg.parquet`; an entity
is a (relation, value) pair, e.g. genre=Comedy). Three parts trained together with one optimiser:

1. Knowledge-aware GNN recommender (one view per knowledge graph G):
       item^G_i = Q_i + mean_{e in G(i)} drop(Ent_e * Rel_{r(e)})          (relation-aware aggregation)
       LightGCN over the user-item training graph from [P ; item^G], layers summed
       BPR (one uniform negative per pair) + L2 on the batch's layer-0 embeddings.
   Scores come from the view on the original graph.
2. Diffusion over relations (Gaussian, DiffRec-style linear noise variance): for the batch's items,
       x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,   x̂_0 = MLP([normalise(x_t) ; emb(t)])
       loss = mean (x̂_0 - x_0)² + ckgc_weight · mean ((x̂_0 - x_0) Ent)²
   The second term measures the reconstruction through the recommender's entity embeddings (held
   fixed there), so errors on the entities that matter to the collaborative model weigh more: our
   reading of the paper's collaborative knowledge-graph convolution, which routes it through the
   user-item graph.
   Every `refresh_every` steps the denoised graph is rebuilt: from each item's x_0 (no added noise),
   T reverse steps (posterior means), and the `keep` highest-scoring entities per item become its edges
   (items without attributes get inferred ones). It is a buffer, so a run folder keeps it.
3. Contrastive term: InfoNCE (temperature τ) between the original-graph view and the denoised-graph
   view of the batch's users and positive items, weighted by ssl_weight.

Draws (negatives, diffusion steps and noise) come from a generator seeded by (seed, step, rank);
message dropout uses torch's generator, which the training loop seeds.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gdr_cli.errors import GdrError
from stages.config.graph import DiffkgConfig, DiffkgTrainConfig
from stages.models.diffurec import timestep_embedding
from stages.models.family import FamilyData
from stages.models.graph import GraphRecommender, PairFamily, bpr_loss, n_users_of, training_pairs
from stages.models.seqrec import init_weights

REFRESH_CHUNK = 512
"""Items per denoiser call when the denoised graph is rebuilt."""


def linear_var_alphas(steps: int, scale: float, low: float, high: float) -> Tensor:
    """ᾱ_t (t = 1..T) whose noise variance 1 - ᾱ_t runs linearly from scale*low to scale*high.  # [T] float64"""
    return 1.0 - scale * torch.linspace(low, high, steps, dtype=torch.float64)


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """InfoNCE of matching rows: a, b [B, d]; row i of a against every row of b (positive b_i)."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


class Diffkg(GraphRecommender):
    kind: ClassVar[str] = "diffkg"

    def __init__(
        self,
        *,
        n_users: int,
        n_items: int,
        n_entities: int,
        n_relations: int,
        n_kg: int,
        n_interactions: int,
        d_model: int = 64,
        n_layers: int = 2,
        dropout: float = 0.1,
        reg: float = 1e-7,
        ssl_weight: float = 0.1,
        temperature: float = 0.1,
        steps: int = 5,
        noise_scale: float = 0.1,
        noise_min: float = 1e-4,
        noise_max: float = 0.02,
        hidden: int = 1000,
        time_dim: int = 10,
        keep: int = 1,
        ckgc_weight: float = 0.5,
        refresh_every: int = 1,
        seed: int = 0,
    ):
        super().__init__(
            n_users=n_users, n_items=n_items, seed=seed, reg=reg, n_entities=n_entities, n_relations=n_relations, n_kg=n_kg,
            n_interactions=n_interactions, d_model=d_model, n_layers=n_layers, dropout=dropout, ssl_weight=ssl_weight,
            temperature=temperature, steps=steps, noise_scale=noise_scale, noise_min=noise_min, noise_max=noise_max,
            hidden=hidden, time_dim=time_dim, keep=keep, ckgc_weight=ckgc_weight, refresh_every=refresh_every,
        )  # fmt: skip
        ab = linear_var_alphas(steps, noise_scale, noise_min, noise_max)
        if not bool(((ab > 0) & (ab < 1)).all()):
            raise GdrError(
                "diffkg noise variances must lie in (0, 1)", fix="lower diffkg.noise_scale or diffkg.noise_max"
            )
        self.n_entities, self.n_layers, self.dropout, self.ssl_weight = n_entities, n_layers, dropout, ssl_weight
        self.temperature, self.steps, self.keep, self.ckgc_weight = temperature, steps, keep, ckgc_weight
        self.refresh_every, self.time_dim = refresh_every, time_dim
        self.user_emb = nn.Embedding(n_users, d_model)
        self.item_emb = nn.Embedding(n_items, d_model)
        self.entity_emb = nn.Embedding(n_entities, d_model)
        self.relation_emb = nn.Embedding(n_relations, d_model)
        self.time_proj = nn.Linear(time_dim, time_dim)
        self.denoise_in = nn.Linear(n_entities + time_dim, hidden)
        self.denoise_out = nn.Linear(hidden, n_entities)
        self.register_buffer("kg", torch.zeros(2, n_kg, dtype=torch.int64))  # (item, entity)
        self.register_buffer("entity_relation", torch.zeros(n_entities, dtype=torch.int64))
        self.register_buffer("interactions", torch.zeros(2, n_interactions, dtype=torch.int64))  # (user, item), unique
        self.register_buffer("denoised", torch.full((n_items, keep), -1, dtype=torch.int64))  # entities per item
        self.register_buffer("alpha_bar", ab.float())
        init_weights(self, torch.Generator().manual_seed(seed))
        with torch.no_grad():  # the relation factors start at one: the first messages are the entity embeddings
            self.relation_emb.weight.add_(1.0)

    def set_graphs(self, kg: Tensor, entity_relation: Tensor, interactions: Tensor) -> None:
        """kg [2, K] (item, entity); entity_relation [E]; interactions [2, R] unique (user, item) pairs.
        The denoised graph starts as each item's first `keep` entities of the original one."""
        self.kg.copy_(kg)
        self.entity_relation.copy_(entity_relation)
        self.interactions.copy_(interactions)
        item, ent = kg
        first = torch.ones_like(item, dtype=torch.bool)
        first[1:] = item[1:] != item[:-1]
        start = torch.cumsum(first.long(), 0) - 1  # group index of each edge (kg sorted by item)
        offset = torch.arange(len(item)) - torch.nonzero(first).squeeze(1)[start]  # position within the item's edges
        sel = offset < self.keep
        self.denoised[item[sel], offset[sel]] = ent[sel]

    # ----- the recommender ---------------------------------------------------------------------------
    def knowledge_items(self, item: Tensor, ent: Tensor) -> Tensor:
        """Q + mean over each item's edges of Ent_e * Rel_r(e) (message dropout when training). -> [N, d]"""
        msg = self.entity_emb.weight[ent] * self.relation_emb.weight[self.entity_relation[ent]]  # [K, d]
        msg = F.dropout(msg, self.dropout, self.training)
        q = self.item_emb.weight
        agg = q.new_zeros(q.shape).index_add_(0, item, msg)
        deg = torch.zeros(self.n_items, dtype=q.dtype, device=q.device).index_add_(
            0, item, torch.ones_like(item, dtype=q.dtype)
        )
        return q + agg / deg.clamp(min=1)[:, None]

    def lightgcn(self, items0: Tensor) -> tuple[Tensor, Tensor]:
        """LightGCN over the training graph from [P ; items0], every layer's output summed. -> ([U, d], [N, d])"""
        users, items = self.interactions
        du = torch.zeros(self.n_users, device=users.device).index_add_(
            0, users, torch.ones_like(users, dtype=torch.float32)
        )
        di = torch.zeros(self.n_items, device=users.device).index_add_(
            0, items, torch.ones_like(items, dtype=torch.float32)
        )
        w = (du[users] * di[items]).rsqrt()[:, None]  # [R, 1] symmetric normalisation
        u, v = self.user_emb.weight, items0
        su, sv = u, v
        for _ in range(self.n_layers):
            u, v = (u.new_zeros(u.shape).index_add_(0, users, v[items] * w),
                    v.new_zeros(v.shape).index_add_(0, items, u[users] * w))  # fmt: skip
            su, sv = su + u, sv + v
        return su, sv

    def view(self, denoised: bool) -> tuple[Tensor, Tensor]:
        """(users, items) of the view on the original (False) or the denoised (True) knowledge graph."""
        if denoised:
            keep = self.denoised >= 0
            item = torch.arange(self.n_items, device=keep.device)[:, None].expand_as(keep)[keep]
            return self.lightgcn(self.knowledge_items(item, self.denoised[keep]))
        return self.lightgcn(self.knowledge_items(self.kg[0], self.kg[1]))

    def vectors(self) -> tuple[Tensor, Tensor]:
        return self.view(denoised=False)

    def ego(self, users: Tensor, items: Tensor) -> Tensor:
        return self.user_emb.weight[users].pow(2).sum() + self.item_emb.weight[items].pow(2).sum()

    # ----- the diffusion over relations ------------------------------------------------------------
    def rows(self, items: Tensor) -> Tensor:
        """Knowledge-graph rows x_0 of `items` [B] -> [B, E] float32 in {0, 1}."""
        where = torch.full((self.n_items,), -1, dtype=torch.int64, device=items.device)
        where[items] = torch.arange(len(items), device=items.device)
        row = where[self.kg[0]]
        sel = row >= 0
        x = torch.zeros(len(items), self.n_entities, device=items.device)
        x[row[sel], self.kg[1][sel]] = 1.0
        return x

    def denoise(self, x_t: Tensor, t: Tensor) -> Tensor:
        """x̂_0 from x_t [B, E] at steps t [B] (0-based)."""
        temb = self.time_proj(timestep_embedding(t, self.time_dim))
        return self.denoise_out(torch.tanh(self.denoise_in(torch.cat([F.normalize(x_t, dim=-1), temb], -1))))

    def diffusion_loss(self, items: Tensor, gen: torch.Generator) -> Tensor:
        x0 = self.rows(items)
        t = torch.randint(self.steps, (len(items),), generator=gen, device=items.device)
        ab = self.alpha_bar[t][:, None]
        noise = torch.randn(x0.shape, generator=gen, device=items.device)
        err = self.denoise(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t) - x0
        return err.pow(2).mean() + self.ckgc_weight * (err @ self.entity_emb.weight.detach()).pow(2).mean()

    @torch.no_grad()
    def reverse(self, x0: Tensor) -> Tensor:
        """Denoised rows: from x_0 itself, T reverse steps with posterior means. [B, E] -> [B, E]."""
        ab = self.alpha_bar.double()
        prev = torch.cat([ab.new_ones(1), ab[:-1]])
        beta = 1 - ab / prev
        x = x0
        for s in range(self.steps - 1, -1, -1):
            t = torch.full((len(x),), s, dtype=torch.int64, device=x.device)
            x_hat = self.denoise(x, t)
            if s == 0:
                return x_hat
            c0 = float(beta[s] * prev[s].sqrt() / (1 - ab[s]))
            ct = float((1 - prev[s]) * (1 - beta[s]).sqrt() / (1 - ab[s]))
            x = c0 * x_hat + ct * x
        return x

    @torch.no_grad()
    def refresh(self) -> None:
        """Rebuild the denoised graph: each item's `keep` top entities of its reverse-chain output."""
        was = self.training
        self.eval()
        device = self.denoised.device
        for lo in range(0, self.n_items, REFRESH_CHUNK):
            items = torch.arange(lo, min(lo + REFRESH_CHUNK, self.n_items), device=device)
            top = self.reverse(self.rows(items)).topk(min(self.keep, self.n_entities), dim=1).indices
            self.denoised[items] = F.pad(top, (0, self.keep - top.shape[1]), value=-1)  # keep > entities: -1 = none
        self.train(was)

    # ----- training ----------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        users, pos = batch["user"], batch["item"]
        gen = self.step_generator(users.device)
        neg = torch.randint(self.n_items, (len(users),), generator=gen, device=users.device)
        u1, v1 = self.view(denoised=False)
        u2, v2 = self.view(denoised=True)
        uu = u1[users]
        rec = bpr_loss((uu * v1[pos]).sum(-1), (uu * v1[neg]).sum(-1))
        rec = rec + self.reg * self.ego(users, torch.cat([pos, neg])) / len(users)
        bu, bi = torch.unique(users), torch.unique(pos)
        ssl = info_nce(u1[bu], u2[bu], self.temperature) + info_nce(v1[bi], v2[bi], self.temperature)
        loss = rec + self.ssl_weight * ssl + self.diffusion_loss(bi, gen)
        if self.training and int(self.draws) % self.refresh_every == 0:
            self.refresh()
        return loss


def knowledge_graph(data: FamilyData) -> tuple[Tensor, Tensor, int]:
    """(kg [2, K] (item, entity) sorted by item, entity_relation [E], relations) from `kg.parquet`;
    a dataset without attributes (or the social view) is a one-line error."""
    processed = data.processed
    path = processed.folder / "kg.parquet"
    dataset = processed.manifest.dataset
    if data.view == "social":
        raise GdrError(
            "diffkg recommends items from their attributes, not friends", fix="use --view item (or diffnet for friends)"
        )
    if not path.exists():
        raise GdrError(f"dataset {dataset!r} has no knowledge graph (no kg.parquet: processed by an older gdr)", where=str(path),
                       fix=f"rerun `{processed.manifest.command}`")  # fmt: skip
    kg = processed.table("kg")
    if kg.height == 0:
        raise GdrError(
            f"dataset {dataset!r} has no item attributes for diffkg's knowledge graph (kg.parquet is empty)",
            where=str(path),
            fix="preprocess a source with item attributes: movielens-100k / movielens-1m (genres, year), lastfm-2k (tags), "
            "amazon-2014 with its meta file (categories, brand), recbole with a .item file, or synthetic",
        )
    entities = kg.select("relation", "entity").unique().sort("relation", "entity").with_row_index("eid")
    relations = entities.select("relation").unique().sort("relation").with_row_index("rid")
    entities = entities.join(relations, on="relation", maintain_order="left")
    edges = kg.join(entities, on=["relation", "entity"], maintain_order="left").sort("item", "eid")
    pairs = torch.from_numpy(edges.select("item", "eid").to_numpy().T.astype(np.int64).copy())
    return pairs, torch.from_numpy(entities["rid"].to_numpy().astype(np.int64)), relations.height


class DiffkgFamily(PairFamily):
    """`train-rec --model diffkg`: BPR pairs of the training split; the knowledge graph from kg.parquet."""

    kind: ClassVar[str] = "diffkg"
    config: ClassVar[type[DiffkgConfig]] = DiffkgConfig
    train_config: ClassVar[type[DiffkgTrainConfig]] = DiffkgTrainConfig

    def build(self, data: FamilyData, cfg: Any) -> Diffkg:
        kg, entity_relation, n_relations = knowledge_graph(data)
        users, items = training_pairs(data.splits)
        ui = torch.unique(torch.stack([users, items]), dim=1)
        epoch = -(-len(users) // cfg.train.batch_size)  # optimiser steps per epoch
        model = Diffkg(
            n_users=n_users_of(data), n_items=data.n_items, n_entities=len(entity_relation), n_relations=n_relations,
            n_kg=kg.shape[1], n_interactions=ui.shape[1], seed=data.seed, refresh_every=max(1, round(cfg.refresh_epochs * epoch)),
            **cfg.model_dump(exclude={"train", "refresh_epochs", "exclude_history"}),
        )  # fmt: skip
        model.set_graphs(kg, entity_relation, ui)
        return model

    def stats(self, model: Any, data: FamilyData, cfg: Any) -> dict[str, Any]:
        return {"kg_edges": int(model.kg.shape[1]), "kg_entities": int(model.n_entities),
                "refresh_every": int(model.refresh_every)}  # fmt: skip
