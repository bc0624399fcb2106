"""Config of `gdr evaluate`: which split and cut-offs to score, and how the report measures uncertainty."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gdr_cli.config import StageConfig

METRIC = re.compile(r"^(recall|ndcg|mrr)@(\d+)$")


class EvaluateConfig(StageConfig):
    split: Literal["valid", "test"] = Field(
        "test", description="Split to score; 'test' is the once-only final number, 'valid' is for model selection."
    )
    view: Literal["item", "social"] = Field(
        "item",
        description="Which runs to score: 'item' (next item, targets from splits.parquet) or 'social' (next friend, "
        "targets from social_splits.parquet; recommendations of runs trained with --view social). A comparison "
        "holds runs of one view only.",
    )
    ks: list[int] = Field(
        [1, 5, 10, 20], description="Cut-offs K of Recall/NDCG/MRR@K (the field's standard 1, 5, 10, 20)."
    )
    plot: bool = Field(
        True,
        description="Write a bar chart comparing the runs next to the comparison table (a --report always has it).",
    )
    report: bool = Field(
        False,
        description="Also write the full report: 95% bootstrap intervals, paired p-values against the best run, "
        "training curves and a self-contained HTML page (off = the table, its Markdown and a bar chart only).",
    )
    best_by: str = Field(
        "ndcg@10",
        description="Metric that names the best run, which the report's p-values and differences compare against (model selection uses NDCG@10).",
    )
    bootstrap: int = Field(
        1000,
        ge=100,
        description="Paired bootstrap resamples of the users behind every interval (1000, the usual count for 95% percentile intervals).",
    )
    permutations: int = Field(
        1000,
        ge=100,
        description="Random sign flips of the per-user differences in the paired permutation test; the smallest p-value is 1/(permutations+1).",
    )
    confidence: float = Field(
        0.95, gt=0, lt=1, description="Coverage of the bootstrap intervals (0.95 = 2.5% to 97.5% percentiles)."
    )
    seed: int = Field(
        0,
        description="Seed of the bootstrap and permutation draws; the same seed gives the same intervals and p-values.",
    )

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError("cut-offs must be positive integers")
        return sorted(set(ks))

    @model_validator(mode="after")
    def _best_by_scored(self) -> EvaluateConfig:
        match = METRIC.match(self.best_by)
        if match is None or int(match.group(2)) not in self.ks:
            raise ValueError(f"best_by must be recall@K, ndcg@K or mrr@K with K in ks {self.ks}, got {self.best_by!r}")
        return self

    @property
    def metrics(self) -> list[str]:
        """Metric columns in table order: recall@K, ndcg@K, mrr@K for each K."""
        return [f"{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in self.ks]
