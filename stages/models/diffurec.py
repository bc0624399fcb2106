"""DiffuRec (Li, Sun & Li, TOIS 2023): Gaussian diffusion over the next item's embedding.

Training, for a history h [B, L] and target item y [B]:

    e = LayerNorm(dropout(E[h]))                   history item embeddings          [B, L, d]
    t ~ sampler (uniform or loss-aware), w = 1/(T p_t)
    x_t = sqrt(ᾱ_t) E[y] + sqrt(1 - ᾱ_t) ε         the noised target embedding      [B, d]
    z_i = e_i + λ_i ⊙ (x_t + τ(t)),  λ_i ~ N(δ, δ²) elementwise (the paper's uncertainty)
    x̂_0 = LayerNorm(dropout(Transformer(z)[last]))  the approximator's clean estimate [B, d]
    loss = mean_b w_b · CE(x̂_0 · E^T, y)           cross-entropy over the whole catalogue

τ(t) is an MLP of the sinusoidal embedding of t·1000/T; the transformer attends both ways over
the history with padding masked. Recommending: x_T ~ N(0, I), then the (respaced) reverse chain
x ← c1 x̂_0(x, t) + c2 x + σ ε down to t = 0, and the top-K items of x_0 · E^T over the whole
catalogue (excluded items set to -inf first, so K distinct items come back).

Every draw of `recommend` is keyed by (seed, the row's history): a user's list does not depend
on the batch. Training draws come from a generator seeded by (seed, training step, rank), and the
loss-aware sampler's history is a buffer: both are in the checkpoint, so resume replays them.
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gdr_cli.errors import GdrError
from stages.config.diffurec import DiffurecConfig, DiffurecTrainConfig
from stages.data.sequences import training_examples
from stages.diffusion.gaussian.noise import keyed_bank_rows, keyed_normal, normal_bank, row_keys
from stages.diffusion.gaussian.respace import ReverseChain
from stages.diffusion.gaussian.schedules import alphas_cumprod, beta_schedule
from stages.diffusion.gaussian.timesteps import make_timestep_sampler
from stages.models.base import Recommender
from stages.models.family import FamilyData, ModelFamily
from stages.models.popularity import exclude_items

BANK_ROWS = 8192
"""Gaussian vectors in the bank the per-position uncertainty noise of sampling is drawn from."""


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) steps t [B] -> [B, dim] float32: [cos(t f_j), sin(t f_j)]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class Block(nn.Module):
    """Pre-norm transformer block (bidirectional self-attention with a key padding mask, GELU MLP).

    Dropout on the two residual branches only: dropout of the attention probabilities and inside
    the MLP (as the paper's code also has) took 30% of a CPU training step for no validation gain."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.qkv, self.out = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.mlp = nn.LayerNorm(d), nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor, last_only: bool = False) -> Tensor:
        """x [B, L, d], keep [B, 1, 1, L] bool (attendable keys) -> [B, L, d], or [B, 1, d] when last_only."""
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if last_only:  # only the last position's output is read: one query
            q, x = q[:, :, -1:], x[:, -1:]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, -1, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class Diffurec(Recommender):
    kind: ClassVar[str] = "diffurec"
    samplers: ClassVar[tuple[str, ...]] = ("denoise",)

    def __init__(
        self,
        *,
        n_items: int,
        max_len: int = 50,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        emb_dropout: float = 0.1,
        positions: bool = True,
        schedule: str = "trunc_lin",
        diffusion_steps: int = 32,
        sample_steps: int = 4,
        timestep_sampler: str = "lossaware",
        uniform_floor: float = 0.001,
        loss_history: int = 10,
        uncertainty: float = 0.001,
        init_std: float = 0.02,
        seed: int = 0,
    ):
        kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__(**kwargs)
        if d_model % n_heads:
            raise GdrError(
                f"d_model {d_model} is not a multiple of n_heads {n_heads}", fix="choose n_heads dividing d_model"
            )
        if not 1 <= sample_steps <= diffusion_steps:
            raise GdrError(f"sample_steps {sample_steps} must be between 1 and diffusion_steps {diffusion_steps}",
                           fix="lower sample_steps or raise diffusion_steps")  # fmt: skip
        self.n_items, self.max_len, self.d = n_items, max_len, d_model
        self.steps, self.sample_steps, self.uncertainty, self.seed = diffusion_steps, sample_steps, uncertainty, seed
        ab = alphas_cumprod(beta_schedule(schedule, diffusion_steps))
        self.register_buffer("alphas_cumprod", ab, persistent=False)  # [T] float64, from the config
        self.register_buffer("sqrt_ab", ab.sqrt().float(), persistent=False)  # [T]
        self.register_buffer("sqrt_1m_ab", (1.0 - ab).sqrt().float(), persistent=False)  # [T]
        self.register_buffer("noise_step", torch.zeros((), dtype=torch.long))  # training batches drawn so far
        self.timesteps = make_timestep_sampler(
            timestep_sampler, diffusion_steps, history=loss_history, uniform_floor=uniform_floor
        )
        with torch.random.fork_rng(devices=[]):  # initialise from `seed`, leave the global RNG alone
            torch.manual_seed(seed)
            self.item_emb = nn.Embedding(n_items + 1, d_model, padding_idx=n_items)  # last row = padding
            self.pos_emb = nn.Embedding(max_len, d_model) if positions else None
            self.emb_drop, self.emb_norm = nn.Dropout(emb_dropout), nn.LayerNorm(d_model)
            self.time_mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.SiLU(), nn.Linear(4 * d_model, d_model))
            self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
            self.out_drop, self.out_norm = nn.Dropout(dropout), nn.LayerNorm(d_model)
            for emb in (self.item_emb, self.pos_emb):
                if emb is not None:
                    nn.init.normal_(emb.weight, std=init_std)
            self.item_emb.weight.data[n_items] = 0.0
        self._bank: tuple[Any, Tensor] | None = None

    # --- network ---------------------------------------------------------------------------

    def embed_history(self, history: Tensor) -> tuple[Tensor, Tensor]:
        """history [B, L] (-1 = pad, left-padded) -> (embeddings [B, L, d], keep [B, 1, 1, L] attendable keys)."""
        history = history[:, -self.max_len :]
        keep = history >= 0
        keep[:, -1] |= ~keep.any(dim=1)  # an empty history attends to its (padding) last slot
        e = self.item_emb(torch.where(history >= 0, history, self.n_items))
        if self.pos_emb is not None:
            e = e + self.pos_emb.weight[self.max_len - history.shape[1] :]
        return self.emb_norm(self.emb_drop(e)), keep[:, None, None, :]

    def denoise(self, e: Tensor, keep: Tensor, x_t: Tensor, t: Tensor, lam: Tensor) -> Tensor:
        """x̂_0 [B, d] from history embeddings e [B, L, d], noisy targets x_t [B, d] at steps t [B] int64
        and uncertainty scales lam [B, L, d]."""
        cond = x_t + self.time_mlp(timestep_embedding(t * (1000.0 / self.steps), self.d))
        x = e + lam * cond[:, None, :]
        for i, block in enumerate(self.blocks):
            x = block(x, keep, last_only=i == len(self.blocks) - 1)
        return self.out_norm(self.out_drop(x[:, -1]))

    def scores(self, x0: Tensor) -> Tensor:
        """x0 [B, d] -> inner products with every item [B, N] float32."""
        return (x0 @ self.item_emb.weight[: self.n_items].T).float()

    # --- training --------------------------------------------------------------------------

    def noise_generator(self, device: torch.device) -> torch.Generator:
        """Generator of this training batch's draws: a function of (seed, step, rank), so resume replays it."""
        rank = int(os.environ.get("RANK", "0"))
        gen = torch.Generator(device=device).manual_seed(
            (self.seed * 1_000_003 + int(self.noise_step) * 7919 + rank) % 2**63
        )
        if self.training:
            self.noise_step += 1
        return gen

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        history, target = batch["history"], batch["target"]
        b, device = target.shape[0], target.device
        gen = self.noise_generator(device)
        t, weight = self.timesteps.sample(b, gen, device)  # [B], [B]
        x0 = self.item_emb(target)  # [B, d]
        eps = torch.randn(x0.shape, generator=gen, device=device)
        x_t = self.sqrt_ab[t, None] * x0 + self.sqrt_1m_ab[t, None] * eps
        e, keep = self.embed_history(history)
        lam = self.uncertainty * (1.0 + torch.randn(e.shape, generator=gen, device=device))
        ce = F.cross_entropy(self.scores(self.denoise(e, keep, x_t, t, lam)), target, reduction="none")  # [B]
        if self.training and torch.is_grad_enabled():
            self.timesteps.update(t, ce.detach())
        return (ce * weight).mean()

    # --- sampling --------------------------------------------------------------------------

    def bank(self, seed: int, device: torch.device) -> Tensor:
        """The Gaussian bank [BANK_ROWS, d] of the uncertainty noise for `seed` (made once per seed and device)."""
        key = (seed, str(device))
        if self._bank is None or self._bank[0] != key:
            self._bank = (key, normal_bank(seed, BANK_ROWS, self.d, device))
        return self._bank[1]

    @torch.no_grad()
    def sample_x0(self, history: Tensor, *, steps: int, seed: int) -> Tensor:
        """Run the `steps`-step reverse chain for histories [B, L] -> x_0 [B, d] float32."""
        chain = ReverseChain.of(self.alphas_cumprod.cpu(), steps)
        e, keep = self.embed_history(history)
        keys = row_keys(history[:, -self.max_len :], seed)  # [B]
        bank = self.bank(seed, history.device)
        x = keyed_normal(keys, 0, (self.d,))  # x_T
        for i in reversed(range(steps)):
            t = chain.steps[i].to(history.device).expand(len(keys))
            lam = self.uncertainty * (1.0 + keyed_bank_rows(bank, keys, 2 * i + 2, e.shape[1]))  # [B, L, d]
            x0 = self.denoise(e, keep, x, t, lam)
            x = chain.c1[i] * x0 + chain.c2[i] * x
            if i > 0:
                x = x + chain.sigma[i] * keyed_normal(keys, 2 * i + 1, (self.d,))
        return x

    @torch.no_grad()
    def recommend(
        self, history: Tensor, *, k: int, sampler: str | None = None, options: Any = None, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-k items by x_0 · E over the whole catalogue; `options.seed` (default the model's seed) keys the noise,
        `options.sample_steps` (default the model's) sets the reverse steps."""
        self.check_sampler(sampler)
        seed = getattr(options, "seed", None)
        steps = getattr(options, "sample_steps", None) or self.sample_steps
        if not 1 <= steps <= self.steps:
            raise GdrError(f"sample_steps {steps} must be between 1 and the {self.steps} trained diffusion steps",
                           fix="choose fewer sample steps")  # fmt: skip
        score = self.scores(self.sample_x0(history, steps=steps, seed=self.seed if seed is None else int(seed)))
        self.sample_stats = {
            "nfe": float(steps),
            "function_evals": steps * len(history),
            "rounds": 1,
        }  # a denoiser pass per step
        if exclude is not None:
            score = exclude_items(score, exclude)
        return top_k(score, k)


def top_k(score: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """score [B, N] (-inf = never) -> (items [B, k] int64, -1 where none; scores [B, k] float32, -inf where none)."""
    b, n = score.shape
    top, items = score.topk(min(k, n), dim=1)
    items = torch.where(torch.isinf(top) & (top < 0), -1, items)
    if k > n:
        items = torch.cat([items, items.new_full((b, k - n), -1)], 1)
        top = torch.cat([top, top.new_full((b, k - n), float("-inf"))], 1)
    return items, top


class DiffurecFamily(ModelFamily):
    """`train-rec --model diffurec`: every prefix of the training sequences is one example (history, target),
    as in the paper's code (its loss reads one target per sequence, from the last position)."""

    kind = "diffurec"
    config = DiffurecConfig
    train_config = DiffurecTrainConfig
    needs_ids = False
    default_max_len = 50

    def build(self, data: FamilyData, cfg: DiffurecConfig) -> Diffurec:
        return Diffurec(n_items=data.n_items, max_len=data.max_len, seed=data.seed, **cfg.model_dump(exclude={"train"}))

    def examples(self, data: FamilyData, cfg: DiffurecConfig) -> dict[str, Tensor]:
        ex = training_examples(data.splits, data.max_len)
        return {"history": ex["history"], "target": ex["target"]}
