"""Config of the shared training loop: the `train:` section inside `train_rec` and `diffuse`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gdr_cli.config import StageConfig


class TrainLoopConfig(StageConfig):
    lr: float = Field(
        1e-3, gt=0, description="Peak AdamW learning rate, reached after warm-up (1e-3 suits small transformers)."
    )
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay on weight matrices; biases, norms and embeddings get none."
    )
    batch_size: int = Field(
        256, ge=1, description="Examples per optimiser step, summed over all processes under torchrun."
    )
    max_epochs: int = Field(
        200, ge=1, description="Most passes over the training examples; early stopping usually ends sooner."
    )
    max_steps: int | None = Field(None, ge=1, description="Most optimiser steps; unset = no limit beyond max_epochs.")
    warmup_steps: int = Field(
        100, ge=0, description="Steps of linear learning-rate warm-up from ~0 to lr before the cosine decay."
    )
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="Cosine decay ends at lr * this ratio at the last planned step."
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Decay of an exponential moving average of the weights that validation, model selection and the saved "
        "model use (e.g. 0.998 averages over ~500 steps; early steps use min(decay, (1+s)/(10+s))); 0 = off, the raw weights.",
    )
    clip_norm: float = Field(1.0, ge=0, description="Clip the global gradient norm to this value; 0 = no clipping.")
    eval_every: int = Field(0, ge=0, description="Optimiser steps between validations; 0 = validate once per epoch.")
    patience: int = Field(
        5, ge=0, description="Stop after this many validations without a better NDCG@10; 0 = never stop early."
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Wall-clock budget of training in minutes (resumed runs count earlier time); unset = none.",
    )
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto",
        description="Mixed precision: auto = bf16 on CUDA with bf16 support, fp16 with loss scaling on other CUDA, off on CPU.",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Training device: auto = cuda if available else cpu; or cpu, cuda, cuda:N.",
    )
    checkpoint_every: int = Field(
        200, ge=1, description="Optimiser steps between resume checkpoints (also written at every validation)."
    )
    log_every: int = Field(
        50,
        ge=1,
        description="Optimiser steps between log rows (loss, lr, examples/s) in train.log and the progress bar.",
    )
    val_users: int = Field(
        0, ge=0,
        description="Validate (checkpoint selection, the step-size choice, the likelihood bound) on this many users drawn "
        "once with the run's seed; 0 = every validation user. For large user bases: 10,000 users put the standard "
        "error of NDCG@10 near 0.002 and bound the cost of each validation, whatever the number of users.",
    )  # fmt: skip
    eval_batch_size: int = Field(512, ge=1, description="Users per recommend() call during validation.")
    tracker: Literal["none", "tensorboard", "wandb"] = Field(
        "none",
        description="Also send log rows to TensorBoard (runs/.<run>.work/tb) or Weights & Biases; needs the extra of that name.",
    )
    wandb_project: str = Field("gdr", description="Weights & Biases project of the run (tracker: wandb).")


HISTORY_DROPOUT: Any = Field(
    0.0,
    ge=0,
    lt=1,
    description="Training only: each history item but the latest is dropped (becomes padding) with this "
    "probability, a fresh draw per example and step (item masking as in CL4SRec). 0 = off: 0.2 lowered validation "
    "NDCG@10 for three of the four model x dataset pairs (tiger and diffusion on MovieLens 100K and Last.fm 2K; "
    "benchmarks/ablation_quality.md, round 6).",
)
"""The generative models' `history_dropout` (tiger and the diffusion model share it)."""

REPEAT_HEAD: Any = Field(
    True,
    description="Repeat or explore (RepeatNet): a gate and an attention over the history items mix a 'repeat' expert "
    "(point at an item the user already has) with the generator ('explore'). tiger trains on -log of the mixture and "
    "its beam ranks every code prefix by it; the diffusion model trains the gate and pointer beside its objective and "
    "mixes at the item level (its sampler's list and the history). On: on Last.fm 2K, where a user's next artist is "
    "often one they had, validation NDCG@10 rose 0.0536 -> 0.0813 (tiger) and 0.0528 -> 0.0887 (diffusion); on "
    "MovieLens 100K, where no one rates a film twice, the gate learns to stay shut and scores moved within seed noise "
    "(benchmarks/ablation_quality.md, round 7). false = the generator alone.",
)
"""The generative models' `repeat_head` (tiger and the diffusion model share it)."""

REPEAT_EXPLORE: Any = Field(
    "new",
    description="What the repeat head's 'explore' expert (the generator) covers. 'new', as RepeatNet's explore decoder: "
    "only items outside the model's history window (the `max_len` items it reads); a window item is scored by the "
    "repeat expert alone (gate x pointer), the generator learns from the examples whose target is outside the window, "
    "and its search skips window items (still k items per user). 'all': the generator scores every item, window items "
    "too. 'new': with --config full, validation NDCG@10 on MovieLens 100K (where nobody rates a film twice, yet 'all' "
    "filled ~2.5 of the top 10 with films in the window) rose 0.0659 -> 0.0880 (tiger) and 0.0648 -> 0.0858 (diffusion); "
    "on Last.fm 2K it moved 0.0864 -> 0.0850 (tiger) and 0.0920 -> 0.0921 (diffusion) (benchmarks/ablation_quality.md, round 13). "
    "Needs repeat_head.",
)
"""The generative models' `repeat_explore` (tiger and the diffusion model share it)."""
