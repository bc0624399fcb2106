"""Corruption training of tiger (`train_rec.tiger.use_diffusion: 1`): the pieces the T5 model gains.

Input vocabulary of a tiger model with corruption (the output vocabulary is unchanged):

    [0, V)                 tiger's tokens (pad, eos, code tokens of this view)
    V + t, t < T           [TIMESTEP_t]: prepended to the encoder input (t = 0 at inference: clean input)
    V + T + k, k < K       the other view's exclusive code tokens (cross-view replacements); their ids in
                           the other view's own vocabulary are the buffer `cross_tokens` [K]

Two ID sets number their code digits independently (digit 5 of an item code and of a user code name
unrelated things), so no code token of the other view occurs in this view: all K of them are
exclusive, and they enter as extra input-only embeddings.

Textual IDs (`vocab_kind="shared"`, `gdr train-gen` / `gdr train`): both views write words of ONE
tokenizer, so the cross-view tokens are ordinary ids of [0, V): the words of the other view's current
IDs that occur in none of this view's IDs (`set_vocab_pool`, K = 0 extra embeddings), the KL is over
the whole shared word vocabulary, and tokens below `first_token` (pad, eos, the tokenizer's specials
[PAD] [UNK] [EMPTY]) are never corrupted nor drawn as replacements. `stages/models/other_view.py`
loads and checks the other view for both ID kinds.

Training loss (`CorruptionTraining.loss`):
    L = CE(next code) + lambda_mask * BCE(noise head, true corruption mask) + lambda_kl * KL(P_this || P_other)
The KL needs a frozen other-view tiger (`set_other`): it reads the same corrupted input (this view's
tokens by their id, folded into its code range where it has fewer ids; cross-view tokens by their own
id; its own [TIMESTEP_t] when it has them) and the same decoder input; the KL is over the output ids
both models have (the first min(V, V_other)), each side renormalised there; no gradient reaches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.diffusion.input_corruption import alpha_bar_schedule, corrupt_tokens, draw_timesteps
from stages.models.noise_head import NoiseHead, noise_bce

if TYPE_CHECKING:
    from stages.models.tiger import Tiger

FIRST_CODE_TOKEN = 2
LOSS_TERMS = ("loss_ce", "loss_mask", "loss_kl")


class CorruptionTraining(nn.Module):
    """Timestep and cross-view embeddings, the noise head, the schedule; `loss` is tiger's training loss."""

    def __init__(self, *, vocab_size: int, d_model: int, per_position: int, timesteps: int, beta_max: float,
                 cross_prob: float, lambda_mask: float, lambda_kl: float, noise_head_dropout: float, n_cross: int,
                 seed: int, first_token: int = FIRST_CODE_TOKEN):  # fmt: skip
        super().__init__()
        self.vocab_size, self.timesteps, self.n_cross = vocab_size, timesteps, n_cross
        self.first_token = first_token  # tokens below it (pad, eos, a tokenizer's specials) are never corrupted
        self.cross_prob, self.lambda_mask, self.lambda_kl = cross_prob, lambda_mask, lambda_kl
        with torch.random.fork_rng(devices=[]):  # default init draws from the global RNG; overwritten below
            self.extra_embed = nn.Embedding(timesteps + n_cross, d_model)  # [T + K, d]
            self.noise_head = NoiseHead(d_model, per_position, noise_head_dropout)
        self.register_buffer("alpha_bar", alpha_bar_schedule(timesteps, beta_max), persistent=False)  # [T] float64
        self.register_buffer("cross_tokens", torch.zeros(n_cross, dtype=torch.int64))  # [K] ids in the other view
        # [K'] cross-view tokens inside this vocabulary (textual IDs: the other view's exclusive words), set per run
        self.register_buffer("vocab_pool", torch.zeros(0, dtype=torch.int64), persistent=False)
        gen = torch.Generator().manual_seed(seed + 0x5EED)
        with torch.no_grad():
            self.extra_embed.weight.copy_(torch.randn(self.extra_embed.weight.shape, generator=gen))
            for layer in (self.noise_head.net[0], self.noise_head.net[3]):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * layer.in_features**-0.5)
                layer.bias.zero_()
        object.__setattr__(self, "_other", None)  # frozen other-view model: not a submodule (no state, no grad)

    # ----- other view ------------------------------------------------------------------------------
    def set_other(self, other: Tiger | None) -> None:
        """The frozen other-view model of the KL term (kept out of this model's state and optimiser)."""
        if other is not None:
            other.eval().requires_grad_(False)
        object.__setattr__(self, "_other", other)

    @property
    def other(self) -> Tiger | None:
        return self._other

    def set_vocab_pool(self, tokens: Tensor) -> None:
        """Cross-view tokens that are ids of this model's own vocabulary [K] int64 (textual IDs: both views write
        words of one tokenizer); empty = none. Not saved: it is derived from the current IDs of both views."""
        tokens = torch.as_tensor(tokens, dtype=torch.int64)
        if tokens.numel() and (tokens.min() < self.first_token or tokens.max() >= self.vocab_size):
            raise ValueError(f"cross-view tokens must lie in [{self.first_token}, {self.vocab_size})")
        self.vocab_pool = tokens.to(self.cross_tokens.device)

    def cross_pool(self) -> Tensor | None:
        """Input ids [K] of the cross-view tokens (None when there is no other view)."""
        if self.n_cross:
            return self.vocab_size + self.timesteps + torch.arange(self.n_cross, device=self.cross_tokens.device)
        return self.vocab_pool if self.vocab_pool.numel() else None

    # ----- embedding ---------------------------------------------------------------------------------
    def embed(self, shared: nn.Embedding, tokens: Tensor) -> Tensor:
        """Embeddings of input ids [...] (tiger's own below V, extra rows from V on) -> [..., d]."""
        v = self.vocab_size
        base = shared(tokens.clamp(max=v - 1))
        extra = self.extra_embed((tokens - v).clamp(min=0))
        return torch.where((tokens >= v)[..., None], extra, base)

    def prepend_timestep(self, embed: Tensor, mask: Tensor, timesteps: Tensor | None) -> tuple[Tensor, Tensor]:
        """Put [TIMESTEP_t] first: embed [B, S, d], mask [B, S] -> [B, 1+S, d], [B, 1+S]; None = t 0."""
        b = embed.shape[0]
        if timesteps is None:
            timesteps = torch.zeros(b, dtype=torch.int64, device=embed.device)
        first = self.extra_embed(timesteps)[:, None].to(embed.dtype)  # [B, 1, d]
        return torch.cat([first, embed], 1), torch.cat([mask.new_ones(b, 1), mask], 1)

    # ----- training loss -----------------------------------------------------------------------------
    def loss(self, model: Tiger, batch: dict[str, Tensor]) -> Tensor:
        """tiger's loss on a corrupted batch; the detached terms go to `model.loss_terms`."""
        history, target = batch["history"], batch["target"]
        tokens = model.item_tokens(history)  # [B, L, D]
        b = tokens.shape[0]
        t = draw_timesteps(b, self.timesteps, device=tokens.device)  # [B]
        protect = tokens < self.first_token  # pad, eos and a tokenizer's special tokens
        pool = self.cross_pool()
        noisy, corrupted = corrupt_tokens(tokens, t, alpha_bar=self.alpha_bar, protect=protect, low=self.first_token,
                                          high=self.vocab_size, cross_pool=pool, cross_prob=self.cross_prob)  # fmt: skip
        embed, mask = model.encoder_inputs(history, tokens=noisy, timesteps=t)  # [B, 1+S, d]
        hidden = model.t5.encoder(inputs_embeds=embed, attention_mask=mask).last_hidden_state
        labels = model.item_tokens(target)  # [B, D]
        dec_in = F.pad(labels[:, :-1], (1, 0), value=0)  # [B, D]
        out = model.t5.decoder(input_ids=dec_in, encoder_hidden_states=hidden, encoder_attention_mask=mask)
        logits = model.logits(out.last_hidden_state)  # [B, D, V]
        ce = model.code_loss(logits, labels, hidden, history, target)  # (the repeat head's mixture, with one)
        head = self.noise_head(hidden[:, 1:])  # [B, L*D]
        bce = noise_bce(head, corrupted.flatten(1), ~protect.flatten(1))
        kl = (
            self.kl(history, noisy, t, dec_in, logits)
            if self.other is not None and self.lambda_kl > 0
            else ce.new_zeros(())
        )
        object.__setattr__(
            model, "loss_terms", {"loss_ce": ce.detach(), "loss_mask": bce.detach(), "loss_kl": kl.detach()}
        )
        return ce + self.lambda_mask * bce + self.lambda_kl * kl

    def to_other_ids(self, tokens: Tensor, other_vocab: int) -> Tensor:
        """This model's input ids -> the other model's: cross-view tokens to their own ids, code tokens
        by id (folded into the other's code range when it has fewer ids), pad/eos unchanged."""
        v, first = self.vocab_size, FIRST_CODE_TOKEN
        folded = torch.where(tokens < other_vocab, tokens, first + (tokens - first) % (other_vocab - first))
        k = (tokens - v - self.timesteps).clamp(0, max(self.n_cross - 1, 0))
        cross = self.cross_tokens[k] if self.n_cross else folded
        return torch.where(tokens >= v + self.timesteps, cross, folded)

    def kl(self, history: Tensor, noisy: Tensor, t: Tensor, dec_in: Tensor, logits: Tensor) -> Tensor:
        """Mean over the B*D decoding positions of KL(P_this || P_other) on the shared output ids."""
        other = self.other
        assert other is not None
        if next(other.parameters()).device != logits.device:
            other.to(logits.device)
        v_other = other.vocab_size
        with torch.no_grad():
            steps = t.clamp(max=other.corruption.timesteps - 1) if other.corruption is not None else None
            embed, mask = other.encoder_inputs(history, tokens=self.to_other_ids(noisy, v_other), timesteps=steps)
            hidden = other.t5.encoder(inputs_embeds=embed, attention_mask=mask).last_hidden_state
            out = other.t5.decoder(input_ids=self.to_other_ids(dec_in, v_other), encoder_hidden_states=hidden,
                                   encoder_attention_mask=mask)  # fmt: skip
            shared = min(self.vocab_size, v_other)
            log_q = other.logits(out.last_hidden_state)[..., :shared].float().log_softmax(-1)  # [B, D, V']
        log_p = logits[..., :shared].float().log_softmax(-1)
        return kl_divergence(log_p, log_q)


def kl_divergence(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Mean over leading positions of KL(p || q) = sum_v p (log p - log q); log_p, log_q [..., V]."""
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def corruption_kwargs(cfg: Any, n_cross: int, first_token: int = FIRST_CODE_TOKEN) -> dict[str, Any] | None:
    """Tiger's `corruption` constructor argument from a `TigerConfig` (None when use_diffusion is 0);
    `first_token`: the first corruptible token (textual IDs: after the tokenizer's specials)."""
    if not cfg.use_diffusion:
        return None
    kwargs = dict(timesteps=cfg.diffusion_timesteps, beta_max=cfg.diffusion_beta_max, cross_prob=cfg.diffusion_cross_prob,
                  lambda_mask=cfg.lambda_mask, lambda_kl=cfg.lambda_kl, noise_head_dropout=cfg.noise_head_dropout,
                  n_cross=n_cross)  # fmt: skip
    if first_token != FIRST_CODE_TOKEN:
        kwargs["first_token"] = first_token
    return kwargs


def text_first_token() -> int:
    """First corruptible token of a textual-ID tiger: token = 2 + word id, and word ids below the
    tokenizer's specials ([PAD] [UNK] [EMPTY]) are never corrupted nor drawn as replacements."""
    from stages.idgen.tokenizer import SPECIALS

    return FIRST_CODE_TOKEN + len(SPECIALS)


CORRUPTION_KEYS = ("use_diffusion", "diffusion_timesteps", "diffusion_beta_max", "diffusion_cross_prob", "lambda_mask",
                   "lambda_kl", "noise_head_dropout", "other_view_run", "other_view_ids")  # fmt: skip
"""`TigerConfig` keys of corruption training (not constructor sizes of the T5)."""


def code_token_ids(codes: Tensor, vocab_sizes: list[int]) -> Tensor:
    """The distinct tiger token ids [K] int64 (sorted) that the code table `codes` [N, D] uses."""
    offsets = torch.tensor([0, *vocab_sizes[:-1]], dtype=torch.int64).cumsum(0) + FIRST_CODE_TOKEN
    return torch.unique(torch.as_tensor(codes, dtype=torch.int64) + offsets)
