"""Config of `gdr preprocess` (section `preprocess`): filtering, source options, synthetic sizes."""

from __future__ import annotations

from pydantic import Field

from gdr_cli.config import StageConfig


class SyntheticConfig(StageConfig):
    """Sizes and shape of the seeded synthetic source (what tests and benchmarks use)."""

    users: int = Field(1000, ge=3, description="Number of users generated (before k-core); 1000 keeps tests fast.")
    items: int = Field(
        500, ge=2, description="Number of items in the catalogue; 500 gives ~2 items per user-interaction tail."
    )
    clusters: int = Field(
        10,
        ge=1,
        description="Item clusters (topics); users walk a Markov chain over them. 10 is enough structure for tiny models.",
    )
    mean_len: float = Field(
        20.0,
        gt=0,
        description="Mean interactions per user (long-tailed, at least min_len); 20 matches MovieLens-like density.",
    )
    min_len: int = Field(5, ge=1, description="Shortest user sequence generated; 5 survives the default 5-core.")
    max_len: int = Field(
        200, ge=1, description="Longest user sequence generated (caps the long tail); 200 keeps generation fast."
    )
    stay: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Probability the next item comes from the same cluster as the last; 0.7 gives a learnable sequential signal.",
    )
    popularity: float = Field(
        1.1,
        ge=0,
        description="Zipf exponent of item popularity within a cluster; 1.1 is a realistic long tail (0 = uniform).",
    )
    friends: float = Field(
        6.0,
        ge=0,
        description="Mean friends per user (0 = no social graph); 6 gives most users >= 3 friends for the social split.",
    )
    homophily: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Share of a user's friends drawn from the same home cluster; 0.8 gives community structure.",
    )
    words: int = Field(
        6,
        ge=1,
        description="Words of item text, drawn from the item's cluster vocabulary; 6 is enough for TF-IDF to see clusters.",
    )


class PreprocessConfig(StageConfig):
    """How raw interactions become clean, compact, leave-one-out-split tables."""

    min_user_interactions: int = Field(
        5,
        ge=0,
        description="k-core: keep users with at least this many interactions (5 is the field's standard 5-core; values below 3 act as 3, which leave-one-out needs; 0 = no user filter beyond that).",
    )
    min_item_interactions: int = Field(
        5,
        ge=0,
        description="k-core: keep items with at least this many interactions (5 = standard 5-core; 0 or 1 = no item filter).",
    )
    dedupe: bool = Field(
        True,
        description="Drop exact duplicate (user, item, timestamp) rows, keeping the first; True because such rows are logging artefacts, not repeat consumption.",
    )
    category: str | None = Field(
        None,
        description="amazon-2014 only: category in the file names reviews_<category>_5.json.gz / meta_<category>.json.gz, e.g. Books (no default: required there).",
    )
    user_col: str = Field("user_id", description="interactions only: user column name; user_id is the common name.")
    item_col: str = Field("item_id", description="interactions only: item column name; item_id is the common name.")
    time_col: str | None = Field(
        "timestamp",
        description="interactions only: integer time column; timestamp is the common name; null = use row order.",
    )
    sep: str | None = Field(
        None,
        description="interactions only: CSV/TSV field separator; null = tab for .tsv/.txt/.inter, comma otherwise.",
    )
    download_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds before a download attempt gives up; 10 s is short so that offline machines fall back quickly.",
    )
    seed: int = Field(
        0, description="Seed of the synthetic source (the only random step of preprocessing); 0 by convention."
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig, description="Synthetic source sizes.")
