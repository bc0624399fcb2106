"""DiffuASR (Liu et al., CIKM 2023): diffusion-generated pseudo items prepended to short sequences.

A block of M item embeddings is generated *before* a sequence, guided by its first G real items
(the items that follow the block in time):

    x_0 = sqrt(d) · normalize(E[block])                       the clean block          [B, M, d]
    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε                     forward noising, t ~ U{0..T-1}
    tokens = [x_t + τ(t) + P_block ; E[guide] + P_guide]       one bidirectional transformer over both
    x̂_0 = LayerNorm(out[block positions])                     (guide keys masked when the condition is dropped)
    loss = mean ||x̂_0 - x_0||² / d + ρ · CE(x̂_0 · x_0(all items)ᵀ / sqrt(d), block items)

Training blocks come from every position i >= 1 of every training sequence: the up-to-M items
before i (left padding is left out of the loss) and the G items from i on as guidance.
Generation runs the respaced reverse chain with classifier-free guidance
x̂_0 = (1 + w) f(x, c) - w f(x, ∅), then maps each generated vector to its nearest item (cosine)
that is neither in the user's training sequence nor already chosen for the block: positions are
filled from the one next to the real items backwards, each removing its item for the next.

All randomness comes from generators seeded by the config seed (data order, noise, condition drop,
dropout via fork_rng, and generation), so the same command writes the same split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gdr_cli.console import progress
from gdr_cli.errors import GdrError
from stages.config.augment import DiffuasrConfig
from stages.diffusion.gaussian.respace import ReverseChain
from stages.diffusion.gaussian.schedules import alphas_cumprod, beta_schedule
from stages.models.diffurec import Block, timestep_embedding
from stages.models.popularity import exclude_items


class DiffuasrNet(nn.Module):
    """Item table, time MLP, positions of block + guide, transformer blocks and the x_0 head."""

    def __init__(self, *, n_items: int, num_pseudo: int, cfg: DiffuasrConfig, seed: int):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise GdrError(f"d_model {cfg.d_model} is not a multiple of n_heads {cfg.n_heads}",
                           fix="choose n_heads dividing d_model")  # fmt: skip
        if not 1 <= cfg.sample_steps <= cfg.diffusion_steps:
            raise GdrError(f"sample_steps {cfg.sample_steps} must be between 1 and diffusion_steps {cfg.diffusion_steps}",
                           fix="lower sample_steps or raise diffusion_steps")  # fmt: skip
        self.n_items, self.m, self.g, self.d = n_items, num_pseudo, cfg.guide_len, cfg.d_model
        self.steps, self.cfg = cfg.diffusion_steps, cfg
        ab = alphas_cumprod(beta_schedule(cfg.schedule, cfg.diffusion_steps))
        self.register_buffer("alphas_cumprod", ab, persistent=False)  # [T] float64
        self.register_buffer("sqrt_ab", ab.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_1m_ab", (1.0 - ab).sqrt().float(), persistent=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.item_emb = nn.Embedding(n_items + 1, cfg.d_model, padding_idx=n_items)
            self.pos_emb = nn.Embedding(num_pseudo + cfg.guide_len, cfg.d_model)
            self.time_mlp = nn.Sequential(
                nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.SiLU(), nn.Linear(4 * cfg.d_model, cfg.d_model)
            )
            self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers))
            self.out_norm = nn.LayerNorm(cfg.d_model)
            nn.init.normal_(self.item_emb.weight, std=0.02)
            nn.init.normal_(self.pos_emb.weight, std=0.02)
            self.item_emb.weight.data[n_items] = 0.0

    def clean(self, items: Tensor) -> Tensor:
        """x_0 of item ids [...] (padding -1 -> zeros): sqrt(d) · unit embedding. -> [..., d]"""
        e = F.normalize(self.item_emb(torch.where(items >= 0, items, self.n_items)), dim=-1) * self.d**0.5
        return e * (items >= 0)[..., None]

    def catalogue(self) -> Tensor:
        """x_0 of every item [N, d]."""
        return F.normalize(self.item_emb.weight[: self.n_items], dim=-1) * self.d**0.5

    def denoise(self, x_t: Tensor, t: Tensor, guide: Tensor, use_guide: Tensor) -> Tensor:
        """x̂_0 [B, M, d] from x_t [B, M, d], steps t [B], guide items [B, G] (-1 pad), use_guide [B] bool."""
        b = x_t.shape[0]
        time = self.time_mlp(timestep_embedding(t * (1000.0 / self.steps), self.d))  # [B, d]
        block = x_t + time[:, None] + self.pos_emb.weight[: self.m]
        ctx = self.item_emb(torch.where(guide >= 0, guide, self.n_items)) + self.pos_emb.weight[self.m :]
        keep = torch.cat([torch.ones(b, self.m, dtype=torch.bool, device=x_t.device),
                          (guide >= 0) & use_guide[:, None]], 1)  # fmt: skip
        x = torch.cat([block, ctx], 1)
        for blk in self.blocks:
            x = blk(x, keep[:, None, None, :])
        return self.out_norm(x[:, : self.m])

    def loss(self, block: Tensor, guide: Tensor, gen: torch.Generator) -> Tensor:
        """Training loss of blocks [B, M] (-1 = left padding, not scored) guided by guide [B, G]."""
        b, device = block.shape[0], block.device
        x0 = self.clean(block)
        t = torch.randint(0, self.steps, (b,), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        x_t = self.sqrt_ab[t, None, None] * x0 + self.sqrt_1m_ab[t, None, None] * eps
        use = torch.rand(b, generator=gen, device=device) >= self.cfg.cond_drop
        pred = self.denoise(x_t, t, guide, use)
        real = block >= 0
        mse = ((pred - x0) ** 2).mean(-1)[real].mean()
        if self.cfg.rounding == 0:
            return mse
        logits = pred[real] @ self.catalogue().T / self.d**0.5  # [P, N]
        return mse + self.cfg.rounding * F.cross_entropy(logits, block[real])

    @torch.no_grad()
    def generate(self, guide: Tensor, gen: torch.Generator) -> Tensor:
        """Generated block embeddings [B, M, d] for guides [B, G] (classifier-free guidance, respaced chain)."""
        chain = ReverseChain.of(self.alphas_cumprod.cpu(), self.cfg.sample_steps)
        b, device, w = guide.shape[0], guide.device, self.cfg.guidance
        x = torch.randn((b, self.m, self.d), generator=gen, device=device)
        on, off = torch.ones(b, dtype=torch.bool, device=device), torch.zeros(b, dtype=torch.bool, device=device)
        for i in reversed(range(len(chain.steps))):
            t = chain.steps[i].to(device).expand(b)
            x0 = self.denoise(x, t, guide, on)
            if w:
                x0 = (1 + w) * x0 - w * self.denoise(x, t, guide, off)
            x = chain.c1[i] * x0 + chain.c2[i] * x
            if i > 0:
                x = x + chain.sigma[i] * torch.randn(x.shape, generator=gen, device=device)
        return x


def nearest_unseen(vectors: Tensor, items: Tensor, seen: Tensor) -> Tensor:
    """Map generated vectors [B, M, d] to items by cosine with item vectors [N, d], never an item of `seen`
    [B, S] (-1 = padding) nor one already chosen in the block; filled from position M-1 back to 0.
    Returns [B, M] int64 (-1 where every item is excluded)."""
    b, m, _ = vectors.shape
    scores = F.normalize(vectors, dim=-1) @ F.normalize(items, dim=-1).T  # [B, M, N]
    out = torch.full((b, m), -1, dtype=torch.int64, device=vectors.device)
    taken = seen
    for pos in reversed(range(m)):  # M positions (<= a few tens), vectorised over users
        s = exclude_items(scores[:, pos], taken)
        best, item = s.max(dim=1)
        out[:, pos] = torch.where(torch.isinf(best), -1, item)
        taken = torch.cat([taken, out[:, pos : pos + 1]], 1)
    return out


def train_diffuasr(net: DiffuasrNet, block: Tensor, guide: Tensor, *, cfg: DiffuasrConfig, seed: int) -> list[float]:
    """Fit `net` on training blocks [N, M] and guides [N, G] for cfg.epochs (AdamW, constant lr); returns the
    mean loss of each epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    n = block.shape[0]
    losses: list[float] = []
    net.train()
    steps = -(-n // cfg.batch_size)
    with torch.random.fork_rng(devices=[]), progress("step", "loss") as bar:
        torch.manual_seed(seed)  # dropout
        task = bar.add_task("augment: diffuasr", total=cfg.epochs * steps, loss="")
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for s in range(steps):
                idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                loss = net.loss(block[idx], guide[idx], gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                total += loss.item()
                bar.update(task, advance=1, loss=f"{loss.item():.3f}")
            losses.append(total / steps)
    net.eval()
    return losses
