"""Config of the PDRec plug-in (Ma et al., AAAI 2024) for SASRec: section `train_rec.sasrec.pdrec`."""

from __future__ import annotations

from pydantic import Field, model_validator

from gdr_cli.config import StageConfig


class PdrecConfig(StageConfig):
    """A trained DiffuRec run scores every item for every user; SASRec's training then uses those preferences
    through three switches that can be measured one by one."""

    run: str | None = Field(
        None, description="The trained DiffuRec run whose preferences guide training: a run name of this dataset (runs/<name>) "
        "or a path to a run folder; required with plugin 'pdrec'.",
    )  # fmt: skip
    reweight: bool = Field(
        True, description="(1) Historical behaviour reweighting: each training target's loss is weighted by its time-interval-aware "
        "preference (see reweight_strength).",
    )  # fmt: skip
    soft_positives: bool = Field(
        True, description="(2) Diffusion-based positive augmentation: the top-ranked items outside the user's training sequence "
        "become soft extra targets after the last training item.",
    )  # fmt: skip
    tail_negatives: bool = Field(
        True, description="(3) Noise-free negative sampling: negatives are drawn only from each user's lowest-preference items "
        "(needs loss 'negatives').",
    )  # fmt: skip
    reweight_strength: float = Field(
        0.5, ge=0, le=1,
        description="α of w_j = 1 + α (ω_j - 1), ω_j = τ_j π_j / mean_user(τ π) (mean 1 per user): π_j = softmax over the user's "
        "training items of their DiffuRec scores / preference_temperature, τ_j the time weight; 0 = plain SASRec weights. "
        "0.5: with α = 1 and temperature 1 a MovieLens 100K user's weights spread from 0.03 to 2.5 (10th-90th percentile, "
        "max 159: most ratings of a user share a day, so τ is 0.1 for most of them) and validation NDCG@10 fell from "
        "0.052 to 0.043 after 8 epochs.",
    )  # fmt: skip
    preference_temperature: float = Field(
        5.0, gt=0,
        description="Temperature of the preference softmax π over a user's training items. DiffuRec's scores of a user's "
        "training items spread with a standard deviation of ~1.25 on MovieLens 100K: 5 keeps π within a factor ~e^1.5 "
        "of uniform for most items (temperature 1 made it nearly one-hot).",
    )  # fmt: skip
    time_min: float = Field(
        0.1, gt=0, le=1,
        description="τ_j = time_min + (1 - time_min) (t_j - t_first) / (t_last - t_first): the oldest interaction counts time_min, "
        "the newest 1 (PDRec's time-interval-aware weights run linearly between a minimum and 1; 0.1 as its w_min).",
    )  # fmt: skip
    positives: int = Field(
        1, ge=1, description="Top-ranked unseen items added as soft positives per user (PDRec adds the top one)."
    )
    positive_weight: float = Field(
        0.1, gt=0, description="β: the soft positives' loss is β times their mean cross-entropy, next to the main loss (a soft "
        "label: 0.1 keeps them well below a real interaction).",
    )  # fmt: skip
    tail: float = Field(
        0.5, gt=0, le=1,
        description="Share of the catalogue, lowest DiffuRec scores first, that negatives are drawn from (uniformly, shared by the "
        "positions of a training window): 0.5 = the less preferred half.",
    )  # fmt: skip
    sample_steps: int | None = Field(
        None, ge=1, description="Reverse steps of DiffuRec when scoring users; unset = the run's own setting."
    )

    @model_validator(mode="after")
    def _something_on(self) -> PdrecConfig:
        if not (self.reweight or self.soft_positives or self.tail_negatives):
            raise ValueError(
                "pdrec with every switch off is plain SASRec: turn one of reweight, soft_positives, tail_negatives on"
            )
        return self
