"""The corruption-training options of the textual-ID recommender, shared by `gdr train` and `gdr train-gen`
(both resolve a `TrainGenConfig`; the options set its `recommender.*` keys)."""

from __future__ import annotations

from typing import Annotated, Any

from gdr_cli.options import flag
from stages.config.train_gen import TrainGenConfig as C

UseDiffusion = Annotated[int | None, flag(C, "recommender.use_diffusion", "--use-diffusion")]
DiffusionTimesteps = Annotated[int | None, flag(C, "recommender.diffusion_timesteps", "--diffusion-timesteps")]
DiffusionBetaMax = Annotated[float | None, flag(C, "recommender.diffusion_beta_max", "--diffusion-beta-max")]
DiffusionCrossProb = Annotated[float | None, flag(C, "recommender.diffusion_cross_prob", "--diffusion-cross-prob")]
LambdaMask = Annotated[float | None, flag(C, "recommender.lambda_mask", "--lambda-mask")]
LambdaKl = Annotated[float | None, flag(C, "recommender.lambda_kl", "--lambda-kl")]
NoiseHeadDropout = Annotated[float | None, flag(C, "recommender.noise_head_dropout", "--noise-head-dropout")]
OtherViewRun = Annotated[str | None, flag(C, "recommender.other_view_run", "--other-view-run")]
OtherViewIds = Annotated[str | None, flag(C, "recommender.other_view_ids", "--other-view-ids")]


def corruption_flags(**values: Any) -> dict[str, Any]:
    """{'recommender.<name>': value} of the options above, for `resolve(..., flags=)`."""
    return {f"recommender.{name}": value for name, value in values.items()}
