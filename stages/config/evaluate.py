"""Config of `gdr evaluate`: which split and cut-offs to score."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gdr_cli.config import StageConfig


class EvaluateConfig(StageConfig):
    split: Literal["valid", "test"] = Field(
        "test", description="Split to score; 'test' is the once-only final number, 'valid' is for model selection."
    )
    ks: list[int] = Field([1, 5, 10, 20], description="Cut-offs K of Recall/NDCG/MRR@K (the field's standard 1, 5, 10, 20).")
    plot: bool = Field(True, description="Write a bar chart comparing the runs next to the comparison table.")

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError("cut-offs must be positive integers")
        return sorted(set(ks))
