"""Config of `gdr sample`: how many items, and how each sampler searches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gdr_cli.config import StageConfig


class SampleConfig(StageConfig):
    split: Literal["valid", "test"] = Field(
        "test", description="Users' split to recommend for: 'valid' (history = training items) or 'test' (training + validation item)."
    )
    k: int = Field(20, ge=1, description="Items per user; 20 covers every default metric cut-off (@1, 5, 10, 20).")
    max_len: int | None = Field(
        None, ge=1, description="History length fed to the model; None = the length the run was trained with."
    )
    batch_size: int = Field(256, ge=1, description="Users decoded together; larger is faster until memory runs out.")
    sampler: str | None = Field(None, description="Decoding algorithm; None = the model's default (beam for tiger, cpd for diffusion).")
    beam: int = Field(20, ge=1, description="Beam width (beam, cpd, ordered/direct) or samples per user (tweedie, euler); 20 as in TIGER.")
    digits_per_step: int = Field(1, ge=1, description="cpd: code digits filled per step; 2 halves the number of steps of a 4-digit code.")
    steps: int = Field(8, ge=1, description="tweedie/euler: number of τ-leaping steps from t=1 to t=0.")
    strategy: Literal["direct", "top_k", "top_p"] = Field(
        "direct", description="ordered: 'direct' = deterministic beam search in the given digit order, else sampling."
    )
    top_k: int = Field(10, ge=1, description="ordered/top_k: sample among the k most likely tokens.")
    top_p: float = Field(0.9, gt=0, le=1, description="ordered/top_p: sample from the smallest token set with this much probability.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the stochastic samplers (1 = the model's own distribution).")
    order: list[int] | None = Field(None, description="ordered: digit fill order, e.g. [3, 0, 1, 2]; None = left to right.")
    prefix: dict[int, int] | None = Field(
        None, description="Conditional decoding: digits fixed in advance as {position: token}, never resampled; None = none."
    )
    use_cache: bool = Field(True, description="tweedie/euler: reuse logits of rows whose tokens did not change (fewer model calls).")
    exclude_history: bool = Field(
        False, description="Drop items in the user's history from the list (RecBole's protocol); off = the TIGER/HSTU protocol."
    )
    device: str = Field("auto", description="'auto' = cuda when available, else cpu.")
    seed: int = Field(42, description="Seed of the stochastic samplers; the same seed gives the same lists.")
