"""Config of `gdr train-rec`: which recommender to train and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gdr_cli.config import StageConfig
from stages.config.training import TrainLoopConfig


class TigerConfig(StageConfig):
    """Sizes of the T5 encoder-decoder over item codes (defaults sized for a 2-core CPU in ~5 minutes)."""

    d_model: int = Field(128, ge=8, description="Width of the token embeddings and hidden states (128 as in TIGER).")
    d_kv: int = Field(32, ge=4, description="Width of each attention head (TIGER uses 64; 32 halves attention cost on a CPU).")
    d_ff: int = Field(512, ge=8, description="Hidden width of the feed-forward blocks (TIGER: 1024; 512 trains twice as fast on a CPU).")
    n_heads: int = Field(4, ge=1, description="Attention heads per layer (TIGER: 6).")
    n_layers: int = Field(2, ge=1, description="Encoder layers (TIGER: 4; 2 fits the default 5-minute CPU budget).")
    n_decoder_layers: int = Field(2, ge=1, description="Decoder layers (TIGER: 4; 2 fits the default 5-minute CPU budget).")
    dropout: float = Field(
        0.0, ge=0, lt=1,
        description="Dropout in attention, feed-forward and embeddings; 0 because the CPU budget trains about one epoch, "
        "too short to overfit (TIGER uses 0.1 for long GPU runs).",
    )  # fmt: skip
    feed_forward: Literal["relu", "gelu", "gated-gelu", "gated-silu"] = Field(
        "relu", description="Feed-forward activation: relu (original T5) or a gated variant (T5 v1.1)."
    )
    encoder_input: Literal["tokens", "items"] = Field(
        "items",
        description="'tokens' feeds every code token of the history (L*D positions, as in TIGER); 'items' one position per "
        "item with the sum of its token embeddings (4x shorter: the default, for speed on a CPU).",
    )
    init: str | None = Field(
        None, description="Local T5 checkpoint folder to start from (its architecture replaces the sizes above); None = from scratch."
    )
    beam: int = Field(20, ge=10, description="Beam width of the constrained beam search used for validation NDCG@10 (at least 10).")


class TigerTrainConfig(TrainLoopConfig):
    """The shared loop's settings with defaults for tiger on a CPU (an epoch of MovieLens 100K is ~750 steps)."""

    lr: float = Field(2e-3, gt=0, description="Peak AdamW learning rate after warm-up; 2e-3 learns fastest in a short CPU budget.")
    warmup_steps: int = Field(50, ge=0, description="Steps of linear learning-rate warm-up before the cosine decay; 50 is short for a short run.")
    batch_size: int = Field(
        128, ge=1,
        description="Examples per optimiser step (summed over processes under torchrun); 128 beat 256 on validation "
        "NDCG@10 in the one-epoch CPU budget (twice the updates at the same examples/s).",
    )  # fmt: skip
    max_epochs: int = Field(
        1, ge=1,
        description="Passes over the training examples; the cosine decay spans them. 1: on MovieLens 100K most of the gain "
        "comes as the learning rate decays late in the first epoch, which a 2-core CPU finishes in about 4 minutes.",
    )  # fmt: skip
    eval_every: int = Field(200, ge=0, description="Optimiser steps between validations; 200 gives a few model-selection points per CPU epoch.")


TRAIN_DEFAULTS: dict[str, type[TrainLoopConfig]] = {"pop": TrainLoopConfig, "tiger": TigerTrainConfig}
"""Each model's training-loop defaults; keys set in `train:` (YAML, --set, flags) override them."""


class TrainRecConfig(StageConfig):
    model: Literal["pop", "tiger"] = Field("pop", description="Recommender: 'pop' (most popular, the floor) or 'tiger' (autoregressive T5 over item codes).")
    view: Literal["item", "social"] = Field(
        "item",
        description="What is recommended: 'item' (the next item, from splits.parquet) or 'social' (the next friend, from "
        "social_splits.parquet: the 'items' are users, never the user themself; tiger then needs an ID set built with "
        "`gdr build-ids --view social`).",
    )
    ids: str | None = Field(None, description="ID set (folder under ids/, from `gdr build-ids`) whose codes tiger generates; required for tiger.")
    max_len: int | None = Field(
        None, ge=1,
        description="History items fed to the model; unset = the model's default (PROTOCOL.md: 20 for ID-generative models, 50 for SASRec-style).",
    )  # fmt: skip
    seed: int = Field(42, description="Seed of initialisation, data order and dropout; same seed, same run.")
    train: TrainLoopConfig = Field(
        default_factory=TigerTrainConfig,
        description="Training loop: optimiser, schedule, budget, early stopping, device; defaults depend on the model.",
    )
    tiger: TigerConfig = Field(default_factory=TigerConfig, description="tiger: model sizes, pretrained init and validation beam.")

    @model_validator(mode="after")
    def _model_train_defaults(self) -> TrainRecConfig:
        """Swap the loop section for the chosen model's defaults, keeping the keys that were set."""
        cls = TRAIN_DEFAULTS[self.model]
        if type(self.train) is not cls:
            explicit = self.train.model_dump(include=self.train.model_fields_set)
            object.__setattr__(self, "train", cls(**explicit))
        return self
