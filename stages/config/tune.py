"""Config of `gdr tune`: the Optuna search over `train_rec` keys (the `tune:` section of a config file)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from gdr_cli.config import StageConfig


class ParamRange(StageConfig):
    """One searched key: a float or int range (log-uniform with `log`), or a list of choices."""

    type: Literal["float", "int", "categorical"] = Field(
        "float", description="Kind of value: float, int or categorical."
    )
    low: float | None = Field(None, description="Smallest value (float and int).")
    high: float | None = Field(None, description="Largest value (float and int).")
    log: bool = Field(False, description="Sample on a log scale (float and int; low must be > 0).")
    choices: list[Any] | None = Field(None, description="The values to choose from (categorical).")

    @model_validator(mode="after")
    def _complete(self) -> ParamRange:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical key needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError("a float or int key needs low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


def default_space() -> dict[str, ParamRange]:
    """The default search space (the same as `tune.space` in configs/default.yaml)."""
    return {
        "train.lr": ParamRange(low=3e-4, high=5e-3, log=True),
        "train.weight_decay": ParamRange(low=1e-4, high=0.1, log=True),
        "train.warmup_steps": ParamRange(type="int", low=0, high=300),
        "tiger.lambda_mask": ParamRange(low=0.0, high=0.5),
        "tiger.lambda_kl": ParamRange(low=0.0, high=0.5),
        "tiger.diffusion_beta_max": ParamRange(low=0.01, high=0.3, log=True),
        "tiger.diffusion_cross_prob": ParamRange(low=0.0, high=1.0),
        "tiger.noise_head_dropout": ParamRange(low=0.0, high=0.3),
    }


class TuneConfig(StageConfig):
    n_trials: int = Field(20, ge=1, description="Trials this call runs (a second call on the same study adds as many).")
    timeout: float | None = Field(
        None, gt=0, description="Stop starting new trials after this many seconds of this call; unset = no limit."
    )
    study_name: str = Field(
        "tune",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Study name: its SQLite file is <data-root>/<dataset>/tune/<name>.db and its results "
        "tune/<name>/; calling again with the same name continues the study.",
    )
    seed: int = Field(
        0, description="Seed of the TPE sampler (offset by the number of trials already in the study, so a continued "
        "study draws new points); each trial trains with train_rec.seed."
    )  # fmt: skip
    startup_trials: int = Field(
        5, ge=0, description="Random trials before TPE models the results; pruning also waits for this many trials."
    )
    prune: bool = Field(
        True,
        description="Stop a trial whose validation NDCG@10 at a validation step is below the median of earlier "
        "trials at that step (Optuna's median pruner).",
    )
    space: dict[str, ParamRange] = Field(
        default_factory=default_space,
        description="Searched `train_rec` keys (dotted paths, e.g. train.lr, tiger.lambda_mask) -> range; default: "
        "learning rate, weight decay, warm-up and the corruption weights and rates of tiger.",
    )
