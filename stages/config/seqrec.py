"""Configs of the ID-embedding sequential baselines SASRec and HSTU (sections `sasrec:` / `hstu:`)
and the shared loop's defaults for their whole-sequence training (`train:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gdr_cli.config import StageConfig
from stages.config.pdrec import PdrecConfig
from stages.config.training import TrainLoopConfig

Loss = Literal["softmax", "sampled_softmax", "negatives"]
LOSS_HELP = (
    "Training loss over cosine scores / temperature: 'softmax' = cross-entropy over the whole catalogue (exact; "
    "the default, affordable up to ~100k items), 'sampled_softmax' = the other targets of the batch as negatives "
    "(accidental hits masked), 'negatives' = num_negatives items drawn uniformly per position."
)


class SeqrecTrainConfig(TrainLoopConfig):
    """The shared loop's settings for whole-sequence training (one example = a window of up to max_len+1 items,
    a loss at every new target; an epoch of MovieLens 100K is ~34 steps at the default window_overlap).

    Tried on MovieLens 100K validation NDCG@10 (one seed, +-0.006 noise): lr 2e-3 with or without a cosine decay over
    40 epochs did not beat these defaults."""

    lr: float = Field(
        1e-3,
        gt=0,
        description="Peak AdamW learning rate after warm-up; 1e-3 as SASRec, RecBole and generative-recommenders.",
    )
    weight_decay: float = Field(
        0.0, ge=0, description="AdamW weight decay on weight matrices; 0 as SASRec and RecBole (dropout regularises)."
    )
    batch_size: int = Field(
        128, ge=1, description="Windows per optimiser step (each up to max_len targets); 128 as SASRec."
    )
    max_epochs: int = Field(
        200, ge=1,
        description="Most passes over the windows; 200 as RecBole's SASRec runs, early stopping on validation ends sooner "
        "(~50 epochs on MovieLens 100K).",
    )  # fmt: skip
    warmup_steps: int = Field(
        20, ge=0, description="Steps of linear learning-rate warm-up; 20 is under one epoch of MovieLens 100K."
    )
    min_lr_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Learning rate at the end of the cosine decay / lr; 1 = constant lr after warm-up, as SASRec.",
    )
    eval_every: int = Field(
        0, ge=0, description="Optimiser steps between validations; 0 = once per epoch (epochs are short)."
    )
    patience: int = Field(
        10,
        ge=0,
        description="Stop after this many validations (epochs) without a better NDCG@10; 10 as RecBole's stopping_step.",
    )


class SeqrecConfig(StageConfig):
    """What SASRec and HSTU share: width, depth, dropout and the loss."""

    d_model: int = Field(
        64, ge=4, description="Width of item/position embeddings and hidden states; 64 as in RecBole's SASRec."
    )
    n_layers: int = Field(2, ge=1, description="Transformer blocks; 2 as in SASRec and RecBole.")
    n_heads: int = Field(
        2, ge=1, description="Attention heads per block (d_model must divide by it); 2 as in RecBole's SASRec."
    )
    loss: Loss = Field("softmax", description=LOSS_HELP)
    temperature: float = Field(
        0.05, gt=0,
        description="Divides the cosine scores (embeddings are L2-normalised) in every loss; 0.05 as in "
        "generative-recommenders, which lets logits span +-20.",
    )  # fmt: skip
    num_negatives: int = Field(
        128, ge=1, description="Uniform negatives per position for loss 'negatives'; 128 as in generative-recommenders."
    )

    repeat_head: bool = Field(
        False,
        description="RepeatNet's repeat / explore mixture on the encoder (the generative models' `repeat_head`): a gate and "
        "a causal pointer over the window's items mix a 'repeat' expert with the catalogue softmax ('explore'), trained "
        "at every position on -log of the mixture. Off: the published model. Needs loss 'softmax' and no plug-in.",
    )
    repeat_explore: Literal["all", "new"] = Field(
        "new",
        description="With repeat_head: what the explore softmax covers, 'new' (RepeatNet: only items outside the window "
        "read so far; a window item gets the repeat expert's mass alone) or 'all' (every item).",
    )
    window_overlap: float = Field(
        0.5, ge=0, lt=1,
        description="Share of each training window's history that overlaps the previous window and is context only, so "
        "that every target sees at least window_overlap * max_len earlier items (where the user has them); costs "
        "1 / (1 - window_overlap) times the compute per epoch. 0.5: on MovieLens 100K validation NDCG@10 rose from "
        "~0.056 (0 = windows share one item, early targets of a window see little history) to ~0.064.",
    )  # fmt: skip
    train: SeqrecTrainConfig = Field(
        default_factory=lambda: SeqrecTrainConfig(),
        description="The model's training loop (`train_rec.train` keys given for a run override it).",
    )


class SasrecConfig(SeqrecConfig):
    """SASRec: pre-norm causal Transformer blocks over item + learnable position embeddings."""

    d_ff: int = Field(
        256, ge=4, description="Hidden width of the feed-forward blocks; 256 (4 x d_model) as RecBole's inner_size."
    )
    dropout: float = Field(
        0.5, ge=0, lt=1,
        description="Dropout on embeddings, attention weights and block outputs; 0.5 as RecBole's SASRec: "
        "small datasets such as MovieLens 100K overfit quickly without it.",
    )  # fmt: skip
    plugin: Literal["none", "pdrec"] = Field(
        "none", description="Training plug-in: 'none', or 'pdrec' (PDRec, AAAI 2024: a trained DiffuRec run, pdrec.run, "
        "reweights history, adds soft positives and draws tail negatives; the saved model stays plain SASRec).",
    )  # fmt: skip
    pdrec: PdrecConfig = Field(
        default_factory=PdrecConfig, description="pdrec: the DiffuRec run and the three switches."
    )

    @model_validator(mode="after")
    def _plugin_loss(self) -> SasrecConfig:
        if self.plugin == "pdrec" and self.repeat_head:
            raise ValueError("plugin 'pdrec' does not combine with repeat_head (set one of them off)")
        if self.plugin == "pdrec":
            if self.loss == "sampled_softmax":
                raise ValueError("plugin 'pdrec' needs loss 'softmax' or 'negatives'")
            if self.pdrec.tail_negatives and self.loss != "negatives":
                raise ValueError(
                    "pdrec.tail_negatives draws negatives: set loss to 'negatives' (or turn tail_negatives off)"
                )
        return self


class HstuConfig(SeqrecConfig):
    """HSTU: pointwise (SiLU) aggregated attention with U-gating and a learned relative position bias."""

    n_heads: int = Field(
        2,
        ge=1,
        description="Attention heads per block (d_model must divide by it); 2 as generative-recommenders' HSTU.",
    )
    dropout: float = Field(
        0.2, ge=0, lt=1,
        description="Dropout on embeddings, attention weights and the gated attention output; 0.2 as generative-recommenders' HSTU.",
    )  # fmt: skip
