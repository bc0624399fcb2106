"""What a trainable model family declares, so `train-rec` and `diffuse` run one flow for all of them.

A family lives in its model's module (`stages/models/<kind>.py`, next to the `Recommender`) and is
listed in `stages/models/registry.py`. The flow (`stages/training/flow.py`) does the rest:
check inputs, load the ID set when `needs_ids`, build the model, build the training examples and
the validator, `fit`, save the run folder, write the manifest.

Two methods (`build`, `examples`); everything else is declared as class attributes:

    config          the family's config section class (`train_rec.<kind>:` in YAML, `--set <kind>.x=`)
    train_config    the shared loop's config class with this family's defaults (`train_rec.train:`)
    needs_ids       True when the model generates item codes (then `--ids NAME` is required)
    default_max_len history length when the user sets none (PROTOCOL.md: 20 for ID-generative, 50 SASRec-style)
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl
from torch import Tensor

from gdr_cli.config import StageConfig
from stages.config.training import TrainLoopConfig
from stages.models.base import Recommender


@dataclass
class FamilyData:
    """What a family builds from: the processed splits and, for generative models, the item codes.

    In the social view the same fields hold the friend-list splits and the user codes, so a family
    needs no code of its own for it."""

    splits: pl.DataFrame  # user:int32, train:list[int32], valid:int32, test:int32 (test is never read by a family)
    n_items: int
    max_len: int  # resolved history length (config value, or the family's default_max_len)
    seed: int
    codes: Tensor | None = None  # [N_items, D] int64 item codes, when needs_ids
    vocab_sizes: list[int] | None = None  # per-digit vocabulary sizes, when needs_ids
    view: str = "item"  # "social": splits are friend lists and the "items" (n_items, codes) are users
    id_kind: str = "codes"  # "text": codes are word ids over one shared vocabulary (`gdr train-gen`)
    tokens: list[str] | None = None  # the words of a textual ID set (word id -> word); None for codes
    paths: Any = None  # DataPaths of the dataset, for families that read another artifact (tiger's other-view run)
    processed: Any = None  # stages.inputs.Processed: the other tables (social graph, kg) for graph models
    train_split: str = "base"  # "base" or "augmented/<name>" (`--train-split`): where `splits.train` comes from
    base_splits: pl.DataFrame | None = None  # the base split when training on an augmented one (validation histories)
    extra: dict[str, Any] = field(default_factory=dict)  # what `ModelFamily.prepare` loaded (e.g. a plugin's signals)

    @property
    def eval_splits(self) -> pl.DataFrame:
        """The split validation histories come from: always the base split (pseudo items only ever train)."""
        return self.splits if self.base_splits is None else self.base_splits


class ModelFamily(abc.ABC):
    kind: ClassVar[str]
    config: ClassVar[type[StageConfig]]
    train_config: ClassVar[type[TrainLoopConfig]] = TrainLoopConfig
    needs_ids: ClassVar[bool] = False
    default_max_len: ClassVar[int] = 20

    @abc.abstractmethod
    def build(self, data: FamilyData, cfg: Any) -> Recommender:
        """A freshly initialised model (seeded by `data.seed`) for the config section `cfg`."""

    @abc.abstractmethod
    def examples(self, data: FamilyData, cfg: Any) -> dict[str, Tensor]:
        """Training tensors sharing their first dimension; `fit` slices batches of them and calls
        `model.loss(batch)`. E.g. `{"history": [N, L], "target": [N]}` (every prefix) or
        `{"seq": [N, L + 1]}` (whole sequences, a loss at every position)."""

    def prepare(self, data: FamilyData, cfg: Any, paths: Any, processed: Any) -> dict[str, Any]:
        """Load extra upstream artifacts into `data.extra` before `build` (e.g. a plugin run); returns their
        manifest input refs by role. `paths` is the run's DataPaths, `processed` the opened processed data."""
        return {}

    def validation_options(self, cfg: Any) -> tuple[str | None, Any]:
        """(sampler, options) that validation NDCG@10 passes to `model.recommend`; None = the model's default."""
        return None, None

    def decoding_choices(self, cfg: Any, data: FamilyData) -> list[tuple[dict[str, Any], str | None, Any]]:
        """Decoding settings `gdr sample` may default to, chosen on validation once training is done:
        (the run-meta entries the choice stands for, sampler, options validation NDCG@10 is read with),
        the cheapest first (an equal score keeps the cheaper). Empty (the default): nothing to choose."""
        return []

    def decoding_tolerance(self, cfg: Any) -> float:
        """How many paired standard errors below the best validation NDCG@10 a cheaper decoding choice may score
        and still be chosen (`training.flow.choose_decoding`); 0 (the default): the best score."""
        return 0.0

    def validation_excludes_history(self, cfg: Any) -> bool:
        """True when validation ranks without the user's training items, as `gdr sample --exclude-history`
        (for runs that will be evaluated that way); False = history kept (PROTOCOL.md's default)."""
        return False

    def stats(self, model: Recommender, data: FamilyData, cfg: Any) -> dict[str, Any]:
        """Extra manifest stats of the trained model (e.g. a likelihood bound)."""
        return {}

    def summary(self, stats: dict[str, Any]) -> str:
        """Extra text for the stage's one-line summary, from `stats` (e.g. ', val bound 9.6 nats/item')."""
        return ""
