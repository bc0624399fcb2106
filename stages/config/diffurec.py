"""Config of the `diffurec` model family (section `diffurec:` of train-rec) and its training-loop defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gdr_cli.config import StageConfig
from stages.config.training import TrainLoopConfig


class DiffurecTrainConfig(TrainLoopConfig):
    """The shared loop's settings with defaults for diffurec on a CPU (an epoch of MovieLens 100K is 377 steps, ~3 minutes)."""

    lr: float = Field(
        2e-3, gt=0, description="Peak AdamW learning rate after warm-up. 2e-3: MovieLens 100K validation NDCG@10 0.0594 vs 0.0590 "
        "with the paper's 1e-3 in the same two epochs (both with emb_dropout 0.3).",
    )  # fmt: skip
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on weight matrices (0 as in the paper).")
    batch_size: int = Field(
        256, ge=1, description="Examples per optimiser step, summed over processes. 256: half the paper's 512, twice the updates "
        "in the short CPU budget.",
    )  # fmt: skip
    max_epochs: int = Field(
        2, ge=1, description="Passes over the training examples; the cosine decay spans them. 2 fits ~7 minutes on a 2-core CPU "
        "for MovieLens 100K, where validation NDCG@10 is still rising slowly at the end (0.0587 after 0.8 epochs, 0.0594 after 2).",
    )  # fmt: skip
    warmup_steps: int = Field(
        100,
        ge=0,
        description="Steps of linear learning-rate warm-up before the cosine decay (a quarter of a MovieLens 100K epoch).",
    )
    eval_every: int = Field(
        150, ge=0, description="Optimiser steps between validations; 150 gives ~5 model-selection points in the default budget "
        "(a validation with 4 reverse steps takes seconds).",
    )  # fmt: skip


class DiffurecConfig(StageConfig):
    """DiffuRec (Li et al., TOIS 2023): Gaussian diffusion over the next item's embedding, conditioned on the history."""

    d_model: int = Field(
        64, ge=8, description="Width of item embeddings and hidden states (paper: 128; 64 halves a CPU training step, so two "
        "MovieLens 100K epochs fit ~7 minutes on 2 cores).",
    )  # fmt: skip
    n_layers: int = Field(
        2, ge=1, description="Transformer blocks of the x_0 approximator (paper: 4; 2 for the same CPU budget).",
    )  # fmt: skip
    n_heads: int = Field(
        4, ge=1, description="Attention heads per block (4 as in the paper's code); must divide d_model."
    )
    dropout: float = Field(
        0.1, ge=0, lt=1, description="Dropout in the transformer and on its output (0.1 as in the paper)."
    )
    emb_dropout: float = Field(
        0.1, ge=0, lt=1, description="Dropout on the history's item embeddings. The paper's code uses 0.3; 0.1: MovieLens 100K "
        "validation NDCG@10 0.0647 vs 0.0594 in the default two epochs.",
    )  # fmt: skip
    positions: bool = Field(
        True, description="Add learned position embeddings to the history. The paper's code has them off (its attention is then "
        "order-free except for reading the last position); on: validation NDCG@10 0.0586 vs 0.0539 on MovieLens 100K.",
    )  # fmt: skip
    schedule: Literal["linear", "cosine", "sqrt", "trunc_cos", "trunc_lin", "pw_lin"] = Field(
        "trunc_lin", description="Beta schedule of the forward noising (trunc_lin: the paper's default)."
    )
    diffusion_steps: int = Field(32, ge=1, description="Diffusion steps T of training (32 as in the paper).")
    sample_steps: int = Field(
        4, ge=1, description="Reverse steps when recommending, evenly respaced over the T trained ones (at most T; the paper runs all "
        "32). 4: on MovieLens 100K validation NDCG@10 is the same within 0.0004 (one user's rank) for 4, 8, 16 and 32 steps (the "
        "noisy target enters scaled by δ, so the chain barely moves), and 4 is 8x faster than 32.",
    )  # fmt: skip
    timestep_sampler: Literal["uniform", "lossaware"] = Field(
        "lossaware", description="How training draws t: uniform, or lossaware (sqrt of each step's mean squared loss; the paper's "
        "default). MovieLens 100K validation NDCG@10: 0.0647 lossaware, 0.0645 uniform.",
    )  # fmt: skip
    uniform_floor: float = Field(
        0.001,
        ge=0,
        le=1,
        description="lossaware: share of the uniform distribution mixed into p_t (0.001 as in improved DDPM).",
    )
    loss_history: int = Field(
        10,
        ge=1,
        description="lossaware: losses remembered per step; sampling is uniform until every step has this many (10 as in improved DDPM).",
    )
    uncertainty: float = Field(
        0.001, gt=0, description="δ of the paper's uncertainty λ ~ N(δ, δ²): the noisy target enters each history position scaled by λ "
        "(0.001 as in the paper).",
    )  # fmt: skip
    init_std: float = Field(
        0.02, gt=0, description="Standard deviation of the initial item (and position) embeddings. The paper's code keeps PyTorch's 1.0, "
        "whose huge initial logits left MovieLens 100K validation NDCG@10 at 0.0119 after one epoch (0.02: 0.0469 after 0.8); 0.02 as in SASRec/BERT.",
    )  # fmt: skip
    train: DiffurecTrainConfig = Field(
        default_factory=lambda: DiffurecTrainConfig(),
        description="diffurec's training loop (`train_rec.train` keys given for a run override it).",
    )
