"""Configs of the graph recommenders DiffNet / DiffNet++ (section `diffnet:`) and DiffKG (section `diffkg:`),
with their training-loop defaults (`train:` inside each section)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gdr_cli.config import StageConfig
from stages.config.training import TrainLoopConfig


class GraphTrainConfig(TrainLoopConfig):
    """The shared loop's settings for BPR training on (user, positive item) pairs (one uniform negative each)."""

    lr: float = Field(
        1e-3, gt=0, description="Peak AdamW learning rate; 1e-3 as DiffKG's released code (Adam)."
    )
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="AdamW weight decay; 0: the model's own L2 term on the batch's embeddings (`reg`) regularises, as BPR models do.",
    )
    batch_size: int = Field(
        1024, ge=1, description="(user, positive) pairs per optimiser step; 1024 as DiffKG's released code."
    )
    max_epochs: int = Field(
        40, ge=1,
        description="Most passes over the training pairs; early stopping on validation NDCG@10 ends sooner. 40: about where "
        "validation NDCG@10 stops rising on Last.fm 2K and MovieLens 100K.",
    )  # fmt: skip
    warmup_steps: int = Field(
        0,
        ge=0,
        description="Steps of linear learning-rate warm-up; 0: embedding models trained by BPR need none.",
    )
    min_lr_ratio: float = Field(
        1.0, ge=0, le=1, description="Learning rate at the end of the cosine decay / lr; 1 = constant, as DiffKG's released code."
    )
    eval_every: int = Field(
        0, ge=0, description="Optimiser steps between validations; 0 = once per epoch (epochs are short)."
    )
    patience: int = Field(5, ge=0, description="Stop after this many validations (epochs) without a better NDCG@10.")


class DiffnetConfig(StageConfig):
    """DiffNet (Wu et al., SIGIR 2019): layered influence diffusion of user embeddings over the social graph;
    with `interest_diffusion`, DiffNet++ (Wu et al., TKDE 2020): users also diffuse over the user-item graph."""

    d_model: int = Field(64, ge=2, description="Width of user and item embeddings; 64 as in both papers.")
    n_layers: int = Field(2, ge=1, description="Diffusion layers K; 2 as in both papers (their best depth).")
    interest_diffusion: bool = Field(
        False,
        description="DiffNet++: each layer also aggregates the user's items (interest diffusion) and the item's users, the two "
        "user aggregations mixed by a learned graph-level attention, every layer's output concatenated for scoring; off = DiffNet.",
    )
    activation: Literal["relu", "sigmoid", "tanh"] = Field(
        "relu", description="DiffNet's layer non-linearity s(W [pooled friends, self]); relu (the paper leaves s open)."
    )
    reg: float = Field(
        1e-4,
        ge=0,
        description="L2 weight on the batch's users' and items' layer-0 embeddings (per pair), as BPR; 1e-4.",
    )
    train: GraphTrainConfig = Field(
        default_factory=lambda: GraphTrainConfig(),
        description="diffnet's training loop (`train_rec.train` keys given for a run override it).",
    )


class DiffkgTrainConfig(GraphTrainConfig):
    """DiffKG's loop: as the other graph models, 25 epochs as its released code."""

    max_epochs: int = Field(25, ge=1, description="Most passes over the training pairs; 25 as DiffKG's released code.")


class DiffkgConfig(StageConfig):
    """DiffKG (Jiang et al., WSDM 2024): a diffusion model denoises each item's row of the item-entity relation matrix,
    a GNN recommends on the collaborative graph with knowledge-aggregated items, and a contrastive term ties the view
    built on the original knowledge graph to the view built on the denoised one. Defaults = the released code's."""

    d_model: int = Field(64, ge=2, description="Width of user, item, entity and relation embeddings; 64 (latdim).")
    n_layers: int = Field(2, ge=1, description="LightGCN layers on the user-item graph; 2 (gnn_layer).")
    dropout: float = Field(
        0.1, ge=0, lt=1, description="Message dropout on knowledge-graph edges while training; 0.1 (mess_dropout_rate)."
    )
    reg: float = Field(1e-7, ge=0, description="L2 weight on the batch's layer-0 embeddings; 1e-7 (reg).")
    ssl_weight: float = Field(
        0.1, ge=0, description="Weight of the contrastive (InfoNCE) term between the two views; 0.1 (ssl_reg)."
    )
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature; 0.1 (temp).")
    steps: int = Field(5, ge=1, description="Diffusion steps T; 5 (steps).")
    noise_scale: float = Field(0.1, gt=0, description="Scale of the linear noise-variance schedule; 0.1 (noise_scale).")
    noise_min: float = Field(1e-4, gt=0, description="Smallest noise variance before scaling; 1e-4 (noise_min).")
    noise_max: float = Field(0.02, gt=0, description="Largest noise variance before scaling; 0.02 (noise_max).")
    hidden: int = Field(1000, ge=1, description="Hidden width of the denoising MLP; 1000 (dims).")
    time_dim: int = Field(10, ge=2, description="Width of the step embedding fed to the denoiser; 10 (d_emb_size).")
    keep: int = Field(
        1,
        ge=1,
        description="Entities kept per item in the denoised knowledge graph (top scores of the reverse chain); 1 (rebuild_k).",
    )
    ckgc_weight: float = Field(
        0.5, ge=0,
        description="Weight of the collaborative knowledge-graph term of the diffusion loss (the reconstruction error measured through "
        "the recommender's entity embeddings); 0.5 (e_loss).",
    )  # fmt: skip
    refresh_epochs: float = Field(
        1.0,
        gt=0,
        description="Epochs between rebuilds of the denoised knowledge graph; 1 as the released code (once per epoch).",
    )
    train: DiffkgTrainConfig = Field(
        default_factory=lambda: DiffkgTrainConfig(),
        description="diffkg's training loop (`train_rec.train` keys given for a run override it).",
    )
