"""Residual-quantised VAE (RQ-VAE, as in TIGER): encoder MLP -> L residual codebooks -> decoder MLP.

Training: reconstruction MSE + codebook loss + beta * commitment loss, straight-through gradients
through the quantiser. Codebooks start from residual k-means of the first batch's latents; a
code no item used during an epoch is re-seeded from a current residual at its level.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gdr_cli.console import progress
from stages.ids.kmeans import KMeansOptions, residual_kmeans, sq_dists


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, hidden: list[int], latent_dim: int, sizes: list[int]):
        super().__init__()
        self.encoder = mlp([in_dim, *hidden, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), in_dim])
        k = max(sizes)
        self.codebooks = nn.Parameter(torch.zeros(len(sizes), k, latent_dim))  # [L, K, d], K = the largest level
        self.register_buffer(
            "valid", torch.arange(k)[None] < torch.tensor(sizes)[:, None]
        )  # [L, K] code exists at level

    def init_weights(self, generator: torch.Generator) -> None:
        """Seeded default-style init of every linear layer (no global RNG)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z [B, d] -> (quantised sum [B, d], codes [B, L] int64, residual entering each level [B, L, d])."""
        residual, zq = z, torch.zeros_like(z)
        codes, residuals = [], []
        for book, valid in zip(self.codebooks, self.valid, strict=True):  # loop over levels only
            residuals.append(residual)
            idx = sq_dists(residual, book).masked_fill(~valid, float("inf")).argmin(1)
            chosen = book[idx]
            codes.append(idx)
            zq = zq + chosen
            residual = residual - chosen
        return zq, torch.stack(codes, 1), torch.stack(residuals, 1)

    def forward(self, x: Tensor, beta: float) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """x [B, in] -> (total loss, codes [B, L], parts: recon / codebook / commit)."""
        z = self.encoder(x)
        zq, codes, residuals = self.quantize(z)
        chosen = self.codebooks[torch.arange(codes.shape[1]), codes]  # [B, L, d]
        codebook_loss = F.mse_loss(chosen, residuals.detach())
        commit_loss = F.mse_loss(residuals, chosen.detach())
        z_st = z + (zq - z).detach()  # straight-through: decoder gradient flows to the encoder
        recon = F.mse_loss(self.decoder(z_st), x)
        total = recon + codebook_loss + beta * commit_loss
        return total, codes, {"recon": recon, "codebook": codebook_loss, "commit": commit_loss}


@dataclass(frozen=True)
class RQVAEOptions:
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    latent_dim: int = 32
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    beta: float = 0.25


@dataclass
class RQVAEResult:
    codes: Tensor  # [N, L] int64
    epoch_loss: list[float]  # mean training loss per epoch
    restarts: int  # dead codes re-seeded over training
    recon: float  # final reconstruction MSE over the catalogue


def train_rqvae(
    x: Tensor, *, sizes: list[int], opts: RQVAEOptions, kmeans: KMeansOptions, generator: torch.Generator
) -> RQVAEResult:
    """Train an RQ-VAE with codebook sizes `sizes` (one per level, each capped at N) on x [N, D] (float); codes of every row."""
    x = x.float()
    n = x.shape[0]
    sizes = [min(s, n) for s in sizes]
    levels, k = len(sizes), max(sizes)
    model = RQVAE(x.shape[1], opts.hidden, opts.latent_dim, sizes)
    model.init_weights(generator)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr)
    bs = min(opts.batch_size, n)
    epoch_loss: list[float] = []
    restarts = 0
    with progress("ep", "loss") as bar:
        task = bar.add_task("rq-vae", total=opts.epochs, loss="-")
        for epoch in range(opts.epochs):
            perm = torch.randperm(n, generator=generator)
            if epoch == 0:  # k-means init on the first batch (at least k rows so every code gets a centroid);
                # plain assignment: balance comes from dead-code restarts during training
                with torch.no_grad():
                    first = model.encoder(x[perm[: max(bs, k)]])
                    _, books = residual_kmeans(first, sizes, replace(kmeans, balanced=False), generator)
                    for level, book in enumerate(books):
                        model.codebooks[level, : len(book)] = book
            used = torch.zeros(levels, k, dtype=torch.bool)
            total, batches = 0.0, 0
            for start in range(0, n, bs):
                loss, codes, _ = model(x[perm[start : start + bs]], opts.beta)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                used[torch.arange(levels)[:, None], codes.T] = True
                total += loss.item()
                batches += 1
            epoch_loss.append(total / batches)
            restarts += _restart_dead(model, x, used, generator)
            bar.update(task, advance=1, loss=f"{epoch_loss[-1]:.4f}")
    with torch.no_grad():
        z = model.encoder(x)
        zq, codes, _ = model.quantize(z)
        recon = F.mse_loss(model.decoder(zq), x).item()
    return RQVAEResult(codes=codes, epoch_loss=epoch_loss, restarts=restarts, recon=recon)


@torch.no_grad()
def _restart_dead(model: RQVAE, x: Tensor, used: Tensor, generator: torch.Generator) -> int:
    """Re-seed codes unused this epoch (used [L, K] bool) with random current residuals of their level."""
    dead = ~used & model.valid
    if not dead.any():
        return 0
    _, _, residuals = model.quantize(model.encoder(x))  # [N, L, d]
    n = residuals.shape[0]
    for level in dead.any(1).nonzero().squeeze(1).tolist():  # loop over levels only
        idx = dead[level].nonzero().squeeze(1)
        pick = torch.randint(n, (idx.numel(),), generator=generator)
        model.codebooks[level, idx] = residuals[pick, level]
    return int(dead.sum())
