"""Experiment trackers: where the training loop's log rows go besides `train.log`.

`none` (default) writes nothing extra; `tensorboard` and `wandb` need their extras
(`pip install 'gdr[tensorboard]'` / `'gdr[wandb]'`). Only the primary process logs.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from gdr_cli.errors import GdrError

TRACKERS = ("none", "tensorboard", "wandb")


class Tracker(abc.ABC):
    @abc.abstractmethod
    def log(self, row: dict[str, Any]) -> None:
        """Record one log row (step, loss, lr, examples_per_s, val_ndcg@10, ...); None values are skipped."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the tracker."""


class NoTracker(Tracker):
    def log(self, row: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, int | float) and v is not None}


class TensorBoardTracker(Tracker):
    def __init__(self, logdir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir))

    def log(self, row: dict[str, Any]) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, global_step=int(row["step"]))

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, logdir: Path, project: str, config: dict[str, Any] | None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=project, dir=str(logdir), config=config or {}, reinit=True)

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(_scalars(row), step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


def make_tracker(name: str, *, logdir: Path, project: str = "gdr", config: dict[str, Any] | None = None) -> Tracker:
    """The tracker called `name`; unknown names and missing extras are one-line errors."""
    if name not in TRACKERS:
        raise GdrError(f"unknown tracker {name!r}", fix=f"choose one of: {', '.join(TRACKERS)}")
    try:
        if name == "tensorboard":
            return TensorBoardTracker(logdir)
        if name == "wandb":
            return WandbTracker(logdir, project, config)
    except ImportError:
        raise GdrError(
            f"tracker {name!r} is not installed", fix=f"pip install 'gdr[{name}]' or set train.tracker=none"
        ) from None
    return NoTracker()
