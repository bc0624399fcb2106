"""ID methods: each turns N entities (and, if it wants them, their embeddings) into L code digits.

`make_method(name, cfg)` is the one factory; `METHODS` the one list of names. A method says which
embeddings it needs (`source`) and maps them to semantic codes [N, L] (`assign`); the stage adds
the final digit that separates collisions.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import torch

from gdr_cli.errors import GdrError
from stages.config.build_ids import BuildIdsConfig
from stages.ids.kmeans import KMeansOptions, residual_kmeans
from stages.ids.pq import product_quantize
from stages.ids.rqvae import RQVAEOptions, train_rqvae
from stages.ids.sizes import level_sizes


class IdMethod(abc.ABC):
    name: ClassVar[str] = ""

    def __init__(self, cfg: BuildIdsConfig):
        self.cfg = cfg
        self.stats: dict[str, Any] = {}
        """Method-specific numbers for the manifest (e.g. RQ-VAE losses)."""

    @abc.abstractmethod
    def source(self) -> str | None:
        """Embeddings this method quantises: 'text', 'collab', 'social', or None (needs none)."""

    @abc.abstractmethod
    def assign(self, n: int, emb: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
        """Codes for n entities from emb [n, d] (None when `source()` is None).

        Returns (codes [n, L] int64, vocab size of each of the L digits).
        """

    def _generator(self, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + salt)

    def sizes(self, n: int) -> list[int]:
        """Codebook size of each of the L levels for n entities (`--codebook`: a number or auto)."""
        return level_sizes(self.cfg.codebook, n, self.cfg.levels)

    def _kmeans_options(self) -> KMeansOptions:
        k = self.cfg.kmeans
        return KMeansOptions(iters=k.iters, balanced=k.balanced, slack=k.slack, spread=k.spread)


class QuantisesEmbeddings(IdMethod):
    """A method that quantises the chosen embeddings (--source; the friend graph's for the social view)."""

    def source(self) -> str | None:
        return "social" if self.cfg.view == "social" else self.cfg.embed.source


class RQKMeans(QuantisesEmbeddings):
    """Residual k-means over the chosen embeddings (text by default)."""

    name = "rqkmeans"

    def assign(self, n: int, emb: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
        assert emb is not None
        sizes = self.sizes(n)
        codes, _ = residual_kmeans(torch.from_numpy(emb), sizes, self._kmeans_options(), self._generator())
        return codes.numpy(), sizes


class Collaborative(RQKMeans):
    """Residual k-means over training-split co-occurrence embeddings (never text)."""

    name = "collaborative"

    def source(self) -> str | None:
        return "social" if self.cfg.view == "social" else "collab"


class RQVAEMethod(QuantisesEmbeddings):
    """A trained RQ-VAE over the chosen embeddings."""

    name = "rqvae"

    def assign(self, n: int, emb: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
        assert emb is not None
        sizes = self.sizes(n)
        r = self.cfg.rqvae
        opts = RQVAEOptions(
            hidden=list(r.hidden),
            latent_dim=r.latent_dim,
            epochs=r.epochs,
            batch_size=r.batch_size,
            lr=r.lr,
            beta=r.beta,
        )
        res = train_rqvae(
            torch.from_numpy(emb), sizes=sizes, opts=opts, kmeans=self._kmeans_options(), generator=self._generator()
        )
        self.stats = {
            "rqvae_first_epoch_loss": round(res.epoch_loss[0], 6),
            "rqvae_last_epoch_loss": round(res.epoch_loss[-1], 6),
            "rqvae_recon_mse": round(res.recon, 6),
            "rqvae_dead_code_restarts": res.restarts,
        }
        return res.codes.numpy(), sizes


class ProductCodes(QuantisesEmbeddings):
    """(Optimised) product quantisation: digit l is the cluster of the l-th block of the rotated
    vector, so no digit depends on another (DiffGRM's parallel codes for masked diffusion)."""

    name = "pq"

    def assign(self, n: int, emb: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
        assert emb is not None
        sizes = self.sizes(n)
        if emb.shape[1] < len(sizes):
            raise GdrError(
                f"pq needs at least one embedding dimension per level: {emb.shape[1]} dimensions for {len(sizes)} levels",
                fix="lower --levels or raise build_ids.embed.dim",
            )
        res = product_quantize(
            torch.from_numpy(emb), sizes, self._kmeans_options(), self._generator(), self.cfg.pq.rotation_iters
        )
        self.stats = {
            "pq_distortion_start": round(res.distortion[0], 6),
            "pq_distortion_end": round(res.distortion[-1], 6),
        }
        return res.codes.numpy(), sizes


class RandomCodes(IdMethod):
    """Uniform random digits (seeded): a no-semantics baseline."""

    name = "random"

    def source(self) -> str | None:
        return None

    def assign(self, n: int, emb: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
        sizes = self.sizes(n)
        high = torch.tensor(sizes, dtype=torch.float64)
        codes = (torch.rand(n, len(sizes), generator=self._generator(), dtype=torch.float64) * high).long()  # [n, L]
        return codes.numpy(), sizes


class Sequential(IdMethod):
    """The entity index written in base `codebook` (mixed radix of the level sizes for auto), most
    significant digit first."""

    name = "sequential"

    def source(self) -> str | None:
        return None

    def assign(self, n: int, emb: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
        sizes = self.sizes(n)  # a fixed base b capped at n: digits of i < n in base b are < min(b, n) anyway
        radix = np.asarray(sizes, dtype=np.int64)
        if n > int(np.prod(radix.astype(np.float64))):
            raise GdrError(
                f"{n} entities do not fit in {len(sizes)} digits of sizes {sizes}",
                fix="raise --levels or --codebook",
            )
        powers = np.concatenate([np.cumprod(radix[::-1])[::-1][1:], [1]])  # [L] place values, most significant first
        codes = (np.arange(n, dtype=np.int64)[:, None] // powers) % radix
        return codes, sizes


METHODS: dict[str, type[IdMethod]] = {
    m.name: m for m in (RQKMeans, RQVAEMethod, ProductCodes, RandomCodes, Sequential, Collaborative)
}


def make_method(name: str, cfg: BuildIdsConfig) -> IdMethod:
    """The ID method called `name`; an unknown name is a GdrError listing the known ones."""
    if name not in METHODS:
        raise GdrError(f"unknown ID method {name!r}", fix=f"choose one of: {', '.join(METHODS)}")
    return METHODS[name](cfg)
