"""Config of `gdr train-rec`: which recommender to train and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gdr_cli.config import StageConfig
from stages.config.diffurec import DiffurecConfig
from stages.config.graph import DiffkgConfig, DiffnetConfig
from stages.config.seqrec import HstuConfig, SasrecConfig
from stages.config.training import HISTORY_DROPOUT, REPEAT_EXPLORE, REPEAT_HEAD, TrainLoopConfig


class TigerTrainConfig(TrainLoopConfig):
    """The shared loop's settings with defaults for tiger on a CPU (an epoch of MovieLens 100K is ~750 steps)."""

    lr: float = Field(
        2e-3, gt=0, description="Peak AdamW learning rate after warm-up; 2e-3 learns fastest in a short CPU budget."
    )
    warmup_steps: int = Field(
        50,
        ge=0,
        description="Steps of linear learning-rate warm-up before the cosine decay; 50 is short for a short run.",
    )
    batch_size: int = Field(
        128, ge=1,
        description="Examples per optimiser step (summed over processes under torchrun); 128 beat 256 on validation "
        "NDCG@10 in the one-epoch CPU budget (twice the updates at the same examples/s).",
    )  # fmt: skip
    max_epochs: int = Field(
        4, ge=1,
        description="Passes over the training examples; the cosine decay spans them. 4: validation NDCG@10 0.0608 on MovieLens "
        "100K and 0.0451 on Last.fm 2K, against 0.0546 and 0.0384 with 2 epochs (benchmarks/ablation_quality.md); "
        "about 4 minutes on a 2-core CPU for MovieLens 100K.",
    )  # fmt: skip
    eval_every: int = Field(
        300,
        ge=0,
        description="Optimiser steps between validations; 300 gives about ten model-selection points over four epochs of MovieLens 100K.",
    )
    patience: int = Field(
        0, ge=0,
        description="Stop after this many validations without a better NDCG@10; 0 = never (the default): the cosine decay "
        "spans max_epochs and validation rises in its tail (best at the last 1-2 checks in 5 of 6 MovieLens 100K runs), "
        "while 5 stopped a seed-3 run at step 2700 of 3016 and a Last.fm 2K run at 1800 of 1984. The best validation "
        "checkpoint is kept either way.",
    )  # fmt: skip


class TigerConfig(StageConfig):
    """Sizes of the T5 encoder-decoder over item codes.

    Defaults are a small T5 (~240k parameters on MovieLens 100K): on ML-100K with collaborative IDs it
    reached the same validation NDCG@10 as the 1M-parameter 128-wide model after one epoch (0.045 vs 0.048)
    and more after two (0.053), at 2.5x the examples/s on a 2-core CPU (benchmarks/ablation_quality.md)."""

    d_model: int = Field(
        64,
        ge=8,
        description="Width of the token embeddings and hidden states (TIGER: 128; 64 converges as well on catalogues of ~1e3-1e4 items at 2.5x the speed).",
    )
    d_kv: int = Field(16, ge=4, description="Width of each attention head (TIGER: 64; d_model / n_heads here).")
    d_ff: int = Field(256, ge=8, description="Hidden width of the feed-forward blocks (TIGER: 1024; 4 x d_model here).")
    n_heads: int = Field(4, ge=1, description="Attention heads per layer (TIGER: 6).")
    n_layers: int = Field(2, ge=1, description="Encoder layers (TIGER: 4; 2 converge in two CPU epochs).")
    n_decoder_layers: int = Field(2, ge=1, description="Decoder layers (TIGER: 4; 2 converge in two CPU epochs).")
    dropout: float = Field(
        0.1, ge=0, lt=1,
        description="Dropout in attention, feed-forward and embeddings; 0.1 as in TIGER (validation NDCG@10 plateaus after "
        "~1.5 epochs on MovieLens 100K; dropout keeps later epochs from overfitting).",
    )  # fmt: skip
    feed_forward: Literal["relu", "gelu", "gated-gelu", "gated-silu"] = Field(
        "relu", description="Feed-forward activation: relu (original T5) or a gated variant (T5 v1.1)."
    )
    encoder_input: Literal["tokens", "items"] = Field(
        "items",
        description="'tokens' feeds every code token of the history (L*D positions, as in TIGER); 'items' one position per "
        "item with the sum of its token embeddings (4x shorter: the default; with --config full on MovieLens 100K it "
        "reached validation NDCG@10 0.0690 against 0.0672 for 'tokens', in a quarter of the time).",
    )
    item_embedding: bool = Field(
        False,
        description="Add a learned vector per history item to its encoder input (the item's identity, as SASRec reads it; "
        "TIGER reads only code tokens). Decoding stays over codes. Off: it did not help on MovieLens 100K or Last.fm 2K "
        "(validation NDCG@10 0.0521 vs 0.0546 and 0.0355 vs 0.0384, benchmarks/ablation_quality.md).",
    )
    recency_embedding: int = Field(
        0,
        ge=0,
        description="Learned vectors for the R most recent history positions, added to the encoder input (R = 20 covers "
        "the default history). T5's relative attention tells the encoder how far apart two items are, not which one "
        "is the latest; SASRec's absolute positions do. 0 = off (TIGER reads none): chosen on validation NDCG@10 over "
        "MovieLens 100K and Last.fm 2K, where 20 learned faster, then overfit, and 1 over four seeds was -0.0040 on "
        "MovieLens and +0.0024 on Last.fm (benchmarks/ablation_quality.md, rounds 5 and 6).",
    )
    history_dropout: float = HISTORY_DROPOUT
    dense_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of a dense next-item head (LIGER): the encoder state at the latest item, projected, scored "
        "against every item's summed code-token embeddings with a full-catalogue cross-entropy added to the loss; the "
        "beam's candidates are then re-ranked by generative + dense log-prob. 0 = off (plain TIGER): 0.2 was level with it "
        "on validation NDCG@10 on MovieLens 100K and Last.fm 2K, 1 lower on both (benchmarks/ablation_quality.md, round 7).",
    )
    repeat_head: bool = REPEAT_HEAD
    repeat_explore: Literal["all", "new"] = REPEAT_EXPLORE
    label_smoothing: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Label smoothing of the per-digit cross-entropy; 0 = plain. 0.1 (DIFF_GRM's): validation NDCG@10 +0.0011 "
        "on MovieLens 100K and +0.0036 on Last.fm 2K on average over 3 runs each (full and default presets; Last.fm test "
        "+0.006, MovieLens test -0.002; benchmarks/ablation_quality.md, round 9).",
    )
    init: str | None = Field(
        None,
        description="Local T5 checkpoint folder to start from (its architecture replaces the sizes above); None = from scratch.",
    )
    beam: int = Field(
        20, ge=10, description="Beam width of the constrained beam search used for validation NDCG@10 (at least 10)."
    )
    use_diffusion: int = Field(
        0, ge=0, le=1,
        description="1 = corruption training: the input code tokens are corrupted by a discrete forward process, "
        "[TIMESTEP_t] is prepended to the encoder input (t = 0, the clean input, at sampling and validation), and a "
        "noise head learns the corrupted positions; 0 = off (training exactly as without the feature, the default).",
    )  # fmt: skip
    diffusion_timesteps: int = Field(
        100,
        ge=1,
        description="T: timesteps of the corruption schedule (t uniform in 0..T-1 per example; T extra input tokens).",
    )
    diffusion_beta_max: float = Field(
        0.1, ge=0, le=1,
        description="beta_max of the linear schedule beta_t = t/(T-1) * beta_max; a token is corrupted with probability "
        "1 - prod_{s<=t}(1 - beta_s) (0.1 with T=100: from 0 at t=0 to ~99.4% at t=99).",
    )  # fmt: skip
    diffusion_cross_prob: float = Field(
        0.5, ge=0, le=1,
        description="Probability that a corrupted token becomes a token of the other view's exclusive vocabulary "
        "(other_view_run / other_view_ids) instead of a uniformly random token of this view's vocabulary.",
    )  # fmt: skip
    lambda_mask: float = Field(
        0.1, ge=0, description="Weight of the noise head's BCE (corrupted or not, per non-padding token) in the loss."
    )
    lambda_kl: float = Field(
        0.1,
        ge=0,
        description="Weight of KL(P_this || P_other) against the frozen other-view model (other_view_run); no KL without one.",
    )
    noise_head_dropout: float = Field(
        0.1, ge=0, lt=1, description="Dropout inside the noise head (Linear -> GELU -> Dropout -> Linear)."
    )
    other_view_run: str | None = Field(
        None,
        description="Run (folder under runs/) of a tiger trained on the other view: its codes give the cross-view tokens and, "
        "frozen, it is the other side of the KL term; None = no KL.",
    )
    other_view_ids: str | None = Field(
        None,
        description="ID set of the other view (folder under ids/) giving the cross-view tokens when no other_view_run is given.",
    )
    train: TigerTrainConfig = Field(
        default_factory=lambda: TigerTrainConfig(),
        description="tiger's training loop (`train_rec.train` keys given for a run override it).",
    )


TRAIN_DEFAULTS: dict[str, type[TrainLoopConfig]] = {"pop": TrainLoopConfig, "friendpop": TrainLoopConfig}
"""Training-loop defaults of models whose section has no `train` of its own (pop, friendpop)."""


class TrainRecConfig(StageConfig):
    model: Literal["pop", "friendpop", "sasrec", "hstu", "diffurec", "tiger", "diffnet", "diffkg"] = Field(
        "pop",
        description="Recommender: 'pop' (most popular, the floor), 'friendpop' (most popular among the user's friends "
        "in the training friend graph, or most shared friends in the social view; needs friends), "
        "'sasrec' / 'hstu' (ID-embedding sequence models, "
        "the baselines), 'diffurec' (Gaussian diffusion over the next item's embedding), 'tiger' (autoregressive T5 over "
        "item codes), 'diffnet' (influence diffusion over the social graph; needs friends), 'diffkg' (knowledge-graph "
        "diffusion; needs item attributes). The masked-diffusion model over codes is trained by `gdr diffuse`.",
    )
    view: Literal["item", "social"] = Field(
        "item",
        description="What is recommended: 'item' (the next item, from splits.parquet) or 'social' (the next friend, from "
        "social_splits.parquet: the 'items' are users, never the user themself; tiger then needs an ID set built with "
        "`gdr build-ids --view social`).",
    )
    ids: str | None = Field(
        None,
        description="ID set (folder under ids/, from `gdr build-ids`) whose codes tiger generates; required for tiger.",
    )
    max_len: int | None = Field(
        None, ge=1,
        description="History items fed to the model; unset = the model's default (PROTOCOL.md: 20 for ID-generative models, 50 for SASRec-style).",
    )  # fmt: skip
    train_split: str | None = Field(
        None,
        description="Training split: unset = the base split (processed/splits.parquet), or 'augmented/<name>' written by "
        "`gdr augment` (pseudo items in training sequences; validation/test targets and histories stay the base split's).",
    )
    seed: int = Field(42, description="Seed of initialisation, data order and dropout; same seed, same run.")
    train: TrainLoopConfig = Field(
        default_factory=TigerTrainConfig,
        description="Training loop: optimiser, schedule, budget, early stopping, device; defaults depend on the model.",
    )
    tiger: TigerConfig = Field(
        default_factory=TigerConfig, description="tiger: model sizes, pretrained init and validation beam."
    )
    sasrec: SasrecConfig = Field(
        default_factory=SasrecConfig, description="sasrec: sizes, dropout, loss and training loop."
    )
    hstu: HstuConfig = Field(default_factory=HstuConfig, description="hstu: sizes, dropout, loss and training loop.")
    diffurec: DiffurecConfig = Field(
        default_factory=DiffurecConfig, description="diffurec: model sizes, noise schedule and sampling steps."
    )
    diffnet: DiffnetConfig = Field(
        default_factory=DiffnetConfig, description="diffnet: sizes, DiffNet++ interest diffusion and training loop."
    )
    diffkg: DiffkgConfig = Field(
        default_factory=DiffkgConfig, description="diffkg: sizes, diffusion, contrastive term and training loop."
    )

    @model_validator(mode="after")
    def _plugin_model(self) -> TrainRecConfig:
        if self.sasrec.plugin != "none" and self.model != "sasrec":
            raise ValueError(f"plugin {self.sasrec.plugin!r} trains sasrec, not {self.model!r}")
        return self

    @model_validator(mode="after")
    def _model_train_defaults(self) -> TrainRecConfig:
        """The run's loop = the chosen model's own `train` (its defaults, or a preset's `train_rec.<model>.train`)
        updated by the `train_rec.train` keys that were set (YAML, --set, flags)."""
        section = getattr(self, self.model, None)
        base = getattr(section, "train", None) or TRAIN_DEFAULTS[self.model]()
        explicit = self.train.model_dump(include=self.train.model_fields_set)
        object.__setattr__(self, "train", type(base)(**{**base.model_dump(), **explicit}))
        return self
