"""Config of `gdr diffuse`: the masked discrete-diffusion recommender, its objective and training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gdr_cli.config import StageConfig
from stages.config.training import HISTORY_DROPOUT, REPEAT_EXPLORE, REPEAT_HEAD, TrainLoopConfig


class DiffuseValidation(StageConfig):
    beam: int = Field(
        10, ge=1, description="cpd beam width used for validation NDCG@10 during training (10 = K, cheap and stable)."
    )
    digits_per_step: int = Field(
        2, ge=1, description="cpd digits filled per step during validation; 2 halves the decoder passes."
    )
    choose_digits_per_step: bool = Field(
        True,
        description="Once trained, decode the validation users with cpd (beam 20, `gdr sample`'s) at every digits-per-step "
        "from the code length down to 1, and the whole code by a trie beam (`gdr sample --whole-code beam`), and record "
        "the choice (`choose_within_se`) in the run as "
        "`gdr sample`'s default. A whole code per step ranks every item by its digits' log-probs in one model call; trained "
        "for it by the item loss, it is within noise of the best step size on both datasets "
        "(benchmarks/ablation_quality.md, rounds 10-11).",
    )
    items_per_call: int = Field(
        2000,
        ge=1,
        description="Cost model that orders the step-size choices from cheapest: a choice costs its model calls per user "
        "(1 + beam x (steps - 1)) plus the candidates its first step scores / this: every distinct partial code over "
        "each set of that many positions (the whole code: every item; one digit: every digit), or for the whole code by "
        "a trie beam (`gdr sample --whole-code beam`) beam x the digits of all positions, whatever the catalogue size. "
        "2000: at 1M items the whole-code step spent ~12 ns per item against ~23 us per 20-beam model call "
        "(benchmarks/bench_scale.py, one thread). So on MovieLens 100K scoring every item is the cheapest choice and "
        "the trie beam the next; from ~3k items (beam x digits) the trie beam is, and at 1M items 2-3 digits per step "
        "(which score ~every partial code at their first step, e.g. 4 x 1M candidates with 3) fall behind one digit.",
    )
    choose_within_se: float = Field(
        1.0,
        ge=0,
        description="Of the digits-per-step choices, take the cheapest (`items_per_call`) whose validation NDCG@10 is "
        "within this many standard errors (of the difference to the best choice, paired by user) of the best: the "
        "one-standard-error rule, as glmnet's default lambda.1se. Step sizes differ on validation by less than that "
        "noise (MovieLens 100K: 0.001-0.004 apart, standard error 0.004-0.005), and fewer steps decode faster: with 1 "
        "the whole code per step was taken in all 5 MovieLens runs with the item loss (3.2x tiger's users/s in `make all`). 0: the best score.",
    )


class DiffuseTrainConfig(TrainLoopConfig):
    """The shared loop's settings with defaults for the diffusion model (an epoch of MovieLens 100K is ~750 steps)."""

    lr: float = Field(
        2e-3, gt=0, description="Peak AdamW learning rate after warm-up; 2e-3 as for tiger (same width, same data)."
    )
    warmup_steps: int = Field(50, ge=0, description="Steps of linear learning-rate warm-up before the cosine decay.")
    batch_size: int = Field(
        128, ge=1, description="Examples per optimiser step (summed over processes under torchrun); 128 as for tiger."
    )
    max_epochs: int = Field(
        4, ge=1,
        description="Passes over the training examples; the cosine decay spans them. 4: on Last.fm 2K validation NDCG@10 "
        "0.0281 against 0.0193 with 2 epochs, and on MovieLens 100K the 2-epoch run was still best at its last step "
        "(benchmarks/ablation_quality.md); a fixed count so every machine trains the same steps.",
    )  # fmt: skip
    eval_every: int = Field(
        300,
        ge=0,
        description="Optimiser steps between validations; about five model-selection points per two epochs of MovieLens 100K.",
    )
    patience: int = Field(
        0, ge=0,
        description="Stop after this many validations without a better NDCG@10; 0 = never (the default): all max_epochs, "
        "the best validation checkpoint kept. The curve can dip for 5 checks mid-run and rise again as the learning "
        "rate decays (patience 5 stopped a MovieLens 100K run at step 2400 of 3016 with its best at 900).",
    )  # fmt: skip


class DiffuseConfig(StageConfig):
    ids: str = Field(
        "rqkmeans", description="ID set (folder under ids/, from `gdr build-ids`) whose codes the model generates."
    )
    view: Literal["item", "social"] = Field(
        "item",
        description="What is recommended: 'item' (the next item) or 'social' (the next friend, from social_splits.parquet; "
        "the ID set must then be built with `gdr build-ids --view social`).",
    )
    train_split: str | None = Field(
        None,
        description="Training split: unset = the base split (processed/splits.parquet), or 'augmented/<name>' written by "
        "`gdr augment` (pseudo items in training sequences; validation/test targets and histories stay the base split's).",
    )
    max_len: int = Field(
        20, ge=1, description="History items fed to the encoder (PROTOCOL.md: 20 for ID-generative models)."
    )
    seed: int = Field(
        42, description="Seed of initialisation, data order, dropout and training masks; same seed, same run."
    )
    loss: Literal["k_dce", "t_dce", "t_dse", "lambda_dce", "diffgrm"] = Field(
        "diffgrm",
        description="Objective: diffgrm (DIFF_GRM's augmented masked prediction: augment_factor views per example, each "
        "digit masked with mask_prob, mean cross-entropy over a view's masked digits), k_dce (k of n digits masked, weight "
        "n/k: the exact any-order bound), t_dce (t ~ U, weight from the schedule), t_dse (SEDD denoising score entropy, "
        "RADD parametrisation: weight w(t) = σ'(t)·e^-σ/(1-e^-σ), equal to t_dce for a normalised denoiser), lambda_dce "
        "(mask rate λ ~ U, weight 1/λ). Default diffgrm: over 3 seeds of the default config, against k_dce, validation "
        "NDCG@10 +0.001 on MovieLens 100K (+0.002, +0.003, -0.002) and +0.009 on Last.fm 2K (+0.009, +0.004, +0.013), "
        "test +0.002 and +0.014, at ~1.4x the training time (make all: 3.4 vs 2.5 min); its 4 views per example are what helps (2 views: below "
        "k_dce on MovieLens). benchmarks/ablation_quality.md, round 8.",
    )
    schedule: Literal["loglinear", "geometric", "linear_beta"] = Field(
        "loglinear",
        description="Noise schedule of t_dce and of the tweedie/euler samplers; log-linear gives weight 1/t.",
    )
    augment_factor: int = Field(
        4,
        ge=1,
        description="diffgrm: masked views per training example, sharing one history encoding (DIFF_GRM uses several); "
        "4 beat 2 on both datasets' validation NDCG@10 (MovieLens 100K 0.0565 vs 0.0501, Last.fm 2K 0.0832 vs 0.0779).",
    )
    mask_prob: float = Field(
        0.5, gt=0, le=1, description="diffgrm: probability each digit of a view is masked (at least one is)."
    )
    lambda_floor: float = Field(
        0.05,
        ge=0,
        le=1,
        description="lambda_dce: the weight 1/λ uses max(λ, floor): 0.05 keeps the gradient's variance finite (it is infinite "
        "at 0) at a bias of about floor/2 of the nearly-unmasked per-digit loss; 0 = unbiased.",
    )
    label_smoothing: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Label smoothing ε of every objective's cross-entropy; 0 trains on the exact likelihood bound. 0.1 as "
        "DIFF_GRM: validation NDCG@10 +0.008 on MovieLens 100K (2 seeds) and level on Last.fm 2K (+0.004, -0.004) with "
        "the default preset, level to +0.001 with `full` (benchmarks/ablation_quality.md, round 9).",
    )
    beta_max: float = Field(
        0.1,
        gt=0,
        le=1,
        description="linear_beta schedule: β of the last of its 100 steps (0.1 as the seed system; 1 masks late steps at once).",
    )
    history_dropout: float = HISTORY_DROPOUT
    repeat_head: bool = REPEAT_HEAD
    repeat_explore: Literal["all", "new"] = REPEAT_EXPLORE
    item_loss: float = Field(
        1.0,
        ge=0,
        description="Weight of an item-level cross-entropy beside the objective: the all-masked pass scores every "
        "catalogue item by the sum of its digits' log-probs (what cpd ranks by with the whole code in one step, one model "
        "call per user) and the target is softmaxed against all items; 0 = off. 1 (best of 0.5 / 1 / 2 on both datasets): "
        "validation NDCG@10 at the chosen step size +0.004 on Last.fm 2K (3 runs) and -0.002 on MovieLens 100K (4 runs), "
        "and the runs then choose 2-4 digits per step (MovieLens 100K: 1 without it), 2.3-7.7x the users/s in 6 of 7 runs; test "
        "+0.009 on Last.fm 2K and -0.007 on MovieLens 100K on average (benchmarks/ablation_quality.md, round 10). "
        "configs/full.yaml (16 epochs) sets 0: there it overfits and lost on validation over both datasets (round 11).",
    )
    item_loss_items: int = Field(
        16384,
        ge=1,
        description="item_loss over a catalogue larger than this: the batch's targets and this many uniformly drawn "
        "items instead of every item (a sampled softmax: memory per batch is batch × this, whatever the catalogue).",
    )
    item_head: bool = Field(
        False,
        description="item_loss trains an output table of its own, read by the whole-code step only (cpd with every "
        "digit in one step); off: it trains the digit heads the objective and the other step sizes read.",
    )
    d_model: int = Field(
        64, ge=8,
        description="Width of encoder and decoder (64 matches the tiger default; on MovieLens 100K two epochs reach test "
        "NDCG@10 0.037 vs popularity's 0.022 at ~2x the speed of width 128).",
    )  # fmt: skip
    n_heads: int = Field(4, ge=1, description="Attention heads; must divide d_model.")
    enc_layers: int = Field(2, ge=1, description="Transformer layers over the history.")
    dec_layers: int = Field(2, ge=1, description="Transformer layers over the digit slots (no causal mask).")
    d_ff: int = Field(256, ge=8, description="Hidden size of the feed-forward blocks (4 × d_model).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout in attention and feed-forward blocks.")
    train: DiffuseTrainConfig = Field(
        default_factory=lambda: DiffuseTrainConfig(),
        description="Training loop: optimiser, batches, early stopping, budget.",
    )
    validation: DiffuseValidation = Field(
        default_factory=DiffuseValidation, description="cpd settings of validation during training."
    )
