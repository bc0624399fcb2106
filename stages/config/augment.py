"""Config of `gdr augment`: diffusion-generated pseudo items for short training sequences (DiffuASR)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gdr_cli.config import StageConfig


class DiffuasrConfig(StageConfig):
    """DiffuASR (Liu et al., CIKM 2023): a conditional Gaussian diffusion over a block of item embeddings.

    The denoiser sees the noisy block of `num_pseudo` item embeddings, the step and the items that follow the
    block (the guidance) and predicts the clean block; generated vectors become items by nearest neighbour."""

    d_model: int = Field(
        64, ge=8, description="Width of item embeddings and hidden states; 64 as the paper's hidden_size."
    )
    n_layers: int = Field(2, ge=1, description="Transformer blocks of the guidance encoder and of the denoiser (each).")
    n_heads: int = Field(2, ge=1, description="Attention heads per block; must divide d_model.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout in the transformer blocks.")
    guide_len: int = Field(
        20, ge=1, description="Items after the generated block that guide it (the first real items of the sequence); "
        "20 as gdr's history length of ID-generative models.",
    )  # fmt: skip
    schedule: Literal["linear", "cosine", "sqrt", "trunc_cos", "trunc_lin", "pw_lin"] = Field(
        "cosine", description="Beta schedule of the forward noising (cosine, as improved DDPM that DiffuASR builds on)."
    )
    diffusion_steps: int = Field(
        100,
        ge=2,
        description="Diffusion steps T of training (the paper: 1000 DDPM steps; 100 keeps the CPU sampling short).",
    )
    sample_steps: int = Field(
        20, ge=1, description="Reverse steps when generating, evenly respaced over the T trained ones (at most T)."
    )
    guidance: float = Field(
        1.0, ge=0,
        description="Classifier-free guidance weight w: x̂_0 = (1 + w) f(x, c) - w f(x, ∅); 0 = plain conditional. The "
        "condition is dropped with probability cond_drop in training so f(x, ∅) is learnt.",
    )  # fmt: skip
    cond_drop: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of training examples whose guidance is dropped (0.1 as classifier-free guidance).",
    )
    rounding: float = Field(
        1.0, ge=0,
        description="Weight of the rounding term (cross-entropy of x̂_0 · E against the true items, as Diffusion-LM) next to "
        "the x_0 mean squared error; it keeps item embeddings apart so nearest neighbours are meaningful.",
    )  # fmt: skip
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (constant).")
    batch_size: int = Field(256, ge=1, description="Training examples per optimiser step.")
    epochs: int = Field(
        5, ge=1, description="Passes over the training examples (one per position of every training sequence with an item after "
        "the block); 5 is ~1 minute on MovieLens 100K on a 2-core CPU.",
    )  # fmt: skip


class AugmentConfig(StageConfig):
    method: Literal["diffuasr"] = Field(
        "diffuasr", description="Augmentation method: 'diffuasr' (DiffuASR, CIKM 2023)."
    )
    base: str | None = Field(
        None, description="Training split to augment: unset = the base split (processed/splits.parquet), or "
        "'augmented/<name>' to augment an augmented one.",
    )  # fmt: skip
    min_len: int = Field(
        50, ge=2, description="Training sequences shorter than this many items get pseudo items prepended. 50 = SASRec's "
        "history length: shorter sequences leave its window partly empty (42% of MovieLens 100K users, 74% of Last.fm 2K users).",
    )  # fmt: skip
    num_pseudo: int = Field(
        10, ge=1, description="Pseudo items prepended to each short sequence; 10 as the paper's aug_num."
    )
    seed: int = Field(
        42, description="Seed of initialisation, data order, training noise and generation; same seed, same split."
    )
    diffuasr: DiffuasrConfig = Field(
        default_factory=DiffuasrConfig, description="diffuasr: the diffusion model and its training."
    )
