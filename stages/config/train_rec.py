"""Config of `gdr train-rec`: which recommender to train and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gdr_cli.config import StageConfig


class TrainRecConfig(StageConfig):
    model: Literal["pop", "tiger"] = Field("pop", description="Recommender: 'pop' (most popular, the floor) or 'tiger' (autoregressive T5 over item codes).")
    max_len: int = Field(20, ge=1, description="History items fed to the model (PROTOCOL.md: 20 for ID-generative models).")
    seed: int = Field(42, description="Seed of initialisation, data order and dropout; same seed, same run.")
