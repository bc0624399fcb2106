"""The contract every recommender keeps: two methods, `loss` and `recommend`.

A model holds everything it needs to run in its state dict (e.g. the item-code table as a
buffer), and its constructor arguments in `init_kwargs`, so a run folder (`model.safetensors`
+ `model.json`) rebuilds it with nothing else (see `stages/models/registry.py`).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from torch import Tensor, nn


class Recommender(nn.Module, abc.ABC):
    kind: ClassVar[str] = ""
    """Registry name, e.g. 'pop', 'tiger', 'diffusion'."""
    samplers: ClassVar[tuple[str, ...]] = ()
    """Samplers `recommend` accepts; the first is the default."""
    needs_users: ClassVar[bool] = False
    """True when `recommend` scores users by ID (graph models): it reads `options.users` ([B] int64), which
    `gdr sample` and validation pass."""

    def __init__(self, **init_kwargs: Any):
        super().__init__()
        self.init_kwargs = init_kwargs

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """`model(batch)` is the training loss, so DistributedDataParallel wraps `loss`."""
        return self.loss(batch)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Scalar training loss of a batch: `history` [B, L] int64 item ids (-1 = padding, left-padded),
        `target` [B] int64 item ids."""
        raise TypeError(f"model {self.kind!r} is not trained by gradient descent")

    @abc.abstractmethod
    def recommend(
        self, history: Tensor, *, k: int, sampler: str | None = None, options: Any = None, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-k items per user.

        history: [B, L] int64 item ids, left-padded with -1 (most recent last): the model's input.
        exclude: [B, M] int64 item ids (-1 = padding) never to return, e.g. the user's whole history
                 under `gdr sample --exclude-history`; None = exclude nothing.
        Returns (items [B, k] int64, -1 where fewer than k could be produced;
                 scores [B, k] float32, higher is better, -inf for missing).
        """

    def check_sampler(self, sampler: str | None) -> str:
        """Resolve the default sampler and reject one this model cannot run."""
        from gdr_cli.errors import GdrError

        if sampler is None:
            return self.samplers[0]
        if sampler not in self.samplers:
            raise GdrError(
                f"model {self.kind!r} cannot use sampler {sampler!r}",
                fix=f"samplers for this model: {', '.join(self.samplers)}",
            )
        return sampler
