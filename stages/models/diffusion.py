"""Masked (absorbing-state) discrete diffusion over the next item's code digits.

An encoder reads the user's history (item embedding = sum of its code digits' embeddings, plus a
position embedding and one always-present start token); a decoder reads the n digit slots of the
target code with NO causal mask (self-attention over the slots, cross-attention to the history),
where a masked slot holds one learned mask embedding. One output head per digit position (over
that level's codebook, weights tied to that level's digit embeddings) predicts the clean digits. Time-free (RADD): no time input; unmasked slots
are carried over (their prediction is their own digit) and the mask is never predicted.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.config.diffuse import DiffuseConfig, DiffuseTrainConfig
from stages.diffusion.corruption import MASK
from stages.diffusion.likelihood import any_order_bound
from stages.diffusion.losses import make_loss
from stages.diffusion.schedules import make_schedule
from stages.models.base import Recommender
from stages.models.family import FamilyData, ModelFamily
from stages.models.fast_dropout import attention
from stages.models.history_dropout import drop_history
from stages.models.repeat_head import RepeatHead, explore_new, mix_lists, mode_nll
from stages.models.row_chunks import folded_attention, residual_mlp, user_attention
from stages.samplers.exclusion import ItemSets
from stages.samplers.validity import CodeTable


class Context(NamedTuple):
    """The history encoding of U users, projected once for every decoder layer's cross-attention."""

    kv: list[Tensor]  # per layer [2, U, heads, L+1, d_head]: cross-attention keys and values
    keep: Tensor  # [U, 1, 1, L+1] bool: history slots that are real (not padding)
    folded: list[tuple[Tensor, Tensor, Tensor]] | None = None  # sampling: per layer `DigitBlock.fold`
    repeat: tuple[Tensor, Tensor, Tensor] | None = None  # sampling: `RepeatHead` outputs ([U], [U], [U, L])


class DigitBlock(nn.Module):
    """Pre-norm decoder block: self-attention over the digit slots (no causal mask), cross-attention
    to the history (keys/values projected once per user, shared by all of its rows), MLP."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.qkv, self.out1 = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.q, self.kv, self.out2 = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ln3 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))
        self.drop = nn.Dropout(dropout)

    def memory_kv(self, memory: Tensor) -> Tensor:
        """memory [U, L, d] -> keys and values [2, U, heads, L, d_head]."""
        u, length, d = memory.shape
        return self.kv(memory).view(u, length, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)

    def fold(self, kv: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cross-attention is linear in its query and output projections, so sampling folds them into each
        user's keys and values once: scores (W_q y + b_q).k = y.(W_q^T k) + b_q.k, output W_o (p v) + b_o =
        p (W_o v) + b_o. kv [2, U, h, L, dh], keep [U, 1, 1, L] -> (keys [U, d, h·L] (scaled by dh^-1/2),
        bias [U, 1, h·L] (b_q.k scaled; -inf at padding), values [U, h·L, d])."""
        k, v = kv
        u, h, length, dh = k.shape
        scale = dh**-0.5
        keys = torch.einsum("uhlk,hkd->udhl", k, self.q.weight.view(h, dh, -1)).mul_(scale).flatten(2)
        bias = torch.einsum("uhlk,hk->uhl", k, self.q.bias.view(h, dh)).mul_(scale)
        bias = bias.masked_fill_(~keep.view(u, 1, length), float("-inf")).reshape(u, 1, h * length)
        values = torch.einsum("uhlk,dhk->uhld", v, self.out2.weight.view(-1, h, dh)).flatten(1, 2)
        return keys.contiguous(), bias, values.contiguous()

    def forward(self, x: Tensor, kv: Tensor, keep: Tensor, rows: Tensor | int, at: Tensor | None = None) -> Tensor:
        """x [R, n, d] digit slots; kv/keep per user; rows [R] the user of each row, or an int s when
        the rows are every user's s consecutive rows (then no per-row copy of keys/values) -> [R, n, d].
        at [R, m]: only these slots of each row are wanted (every slot still serves as key/value) -> [R, m, d]."""
        return self.attend(*self.mix(x, at), kv, keep, rows)

    def mix(self, x: Tensor, at: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Self-attention sublayer, a function of the row's slots only: x [R, n, d] -> (x, its normed form that
        the cross-attention queries read), both [R, n, d] (or [R, m, d] for the slots `at` [R, m])."""
        r, n, d = x.shape
        p = self.dropout if self.training else 0.0
        if at is None:
            q, k, v = self.qkv(self.ln1(x)).view(r, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        else:  # queries of the wanted slots only; keys and values of every slot
            h = self.ln1(x)
            k, v = (
                F.linear(h, self.qkv.weight[d:], self.qkv.bias[d:])
                .view(r, n, 2, self.heads, d // self.heads)
                .permute(2, 0, 3, 1, 4)
            )
            n = at.shape[1]
            x = x.gather(1, at[..., None].expand(-1, -1, d))
            h = h.gather(1, at[..., None].expand(-1, -1, d))
            q = (
                F.linear(h, self.qkv.weight[:d], self.qkv.bias[:d])
                .view(r, n, self.heads, d // self.heads)
                .transpose(1, 2)
            )
        a = attention(q, k, v, None, p)  # [R, h, n, dh], every slot sees every slot
        x = x + self.drop(self.out1(a.transpose(1, 2).reshape(r, n, d)))
        return x, self.ln2(x)

    def attend(self, x: Tensor, y: Tensor, kv: Tensor, keep: Tensor, rows: Tensor | int,
               folded: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:  # fmt: skip
        """Cross-attention to the user's history and the MLP: x, y [R, n, d] from `mix` -> [R, n, d];
        folded: this block's `fold` of kv (sampling: the q and output projections folded in)."""
        r, n, d = x.shape
        p = self.dropout if self.training else 0.0
        grouped = None if isinstance(rows, int) or self.training else _user_slots(rows, kv.shape[1])
        if folded is not None and (isinstance(rows, int) or grouped is not None):
            if isinstance(rows, int):  # user-major rows
                out = folded_attention(y.reshape(r // rows, rows * n, d), *folded, self.heads).view(r, n, d)
            else:  # rows sorted by user: placed in [U, slots, n]
                (within, width), u = grouped, kv.shape[1]
                pad = y.new_zeros(u, width, n, d)
                pad[rows, within] = y
                out = folded_attention(pad.view(u, width * n, d), *folded, self.heads).view(u, width, n, d)[
                    rows, within
                ]
            return residual_mlp(x + (out + self.out2.bias), self.ln3, *self.mlp)
        q = self.q(y)
        if isinstance(rows, int):  # user-major rows: a user's s·n slots attend to its keys/values at once
            q = q.view(r // rows, rows * n, self.heads, d // self.heads).transpose(1, 2)
            a = self._cross(q, kv, keep)
        elif grouped is not None:  # rows sorted by user: queries placed in [U, slots, n] (no per-row keys/values copy)
            within, width = grouped
            u = kv.shape[1]
            pad = q.new_zeros(u, width, n, d)
            pad[rows, within] = q
            pad = pad.view(u, width * n, self.heads, d // self.heads).transpose(1, 2)
            a = self._cross(pad, kv, keep)  # [U, h, slots·n, dh]
            a = (
                a.transpose(1, 2)
                .reshape(u, width, n, d)[rows, within]
                .view(r, n, self.heads, d // self.heads)
                .transpose(1, 2)
            )
        else:
            q = q.view(r, n, self.heads, d // self.heads).transpose(1, 2)
            a = attention(q, kv[0, rows], kv[1, rows], keep[rows], p)
        x = x + self.drop(self.out2(a.transpose(1, 2).reshape(r, n, d)))
        if self.training or torch.is_grad_enabled():
            return x + self.drop(self.mlp(self.ln3(x)))
        return residual_mlp(x, self.ln3, *self.mlp)  # sampling: row chunks that stay in cache (same result)

    def _cross(self, q: Tensor, kv: Tensor, keep: Tensor) -> Tensor:
        """Each user's queries q [U, h, Q, dh] against its keys/values kv [2, U, h, L+1, dh] -> [U, h, Q, dh]."""
        if self.training or torch.is_grad_enabled():
            return attention(q, kv[0], kv[1], keep, self.dropout if self.training else 0.0)
        return user_attention(q, kv, keep)  # sampling: a few users at a time, two matmuls


def _user_slots(rows: Tensor, users: int) -> tuple[Tensor, int] | None:
    """Rows [R] sorted by user -> (each row's slot among its user's rows [R], slots per user), or None when
    the rows are not sorted or padding every user to the most rows would more than double the work."""
    if not len(rows) or bool((rows[1:] < rows[:-1]).any()):
        return None
    count = torch.bincount(rows, minlength=users)
    width = int(count.max())
    if users * width > 2 * len(rows):
        return None
    start = count.cumsum(0) - count
    return torch.arange(len(rows), device=rows.device) - start[rows], width


def decoding_cost(n: int, d: int, beam: int, first: int, items_per_call: int) -> float:
    """Estimated cost per user of cpd with d of n digits per step, in model calls: the all-masked pass and one per
    beam at every later step, plus the first step's candidates (`first_candidates`: every item for the whole code)
    at one call per `items_per_call` scored."""
    return 1 + beam * (-(-n // d) - 1) + first / items_per_call


def first_candidates(codes: Tensor, d: int, beam: int = 0) -> int:
    """How many candidates cpd's first step scores per user with d digits per step: the distinct partial codes over
    every set of d positions (d = n: every item; d = 1: every digit of every position), or with a trie `beam` for the
    whole code (`--whole-code beam`), every digit of every position for each beam. codes: [N, n] int64."""
    n = codes.shape[1]
    sizes = [int(codes[:, j].max()) + 1 for j in range(n)]
    if beam:
        return beam * sum(sizes)
    total = 0
    for cols in itertools.combinations(range(n), d):
        if math.prod(sizes[j] for j in cols) >= 2**62:  # no int64 key: distinct rows
            total += len(torch.unique(codes[:, list(cols)], dim=0))
            continue
        key = torch.zeros(len(codes), dtype=torch.long, device=codes.device)
        for j in cols:  # a mixed-radix key per partial code
            key = key * sizes[j] + codes[:, j]
        total += len(torch.unique(key))
    return total


def whole_code_scores(logp: Tensor, codes: Tensor) -> Tensor:
    """Every item's whole-code score: logp [B, n, V] digit log-probs, codes [N, n] -> [B, N], the sum over
    positions of the item's digit log-prob (what cpd scores with all n digits in one step, raw scores)."""
    return sum(logp[:, j].index_select(1, codes[:, j]) for j in range(codes.shape[1]))


class DiffusionRecommender(Recommender):
    kind: ClassVar[str] = "diffusion"
    samplers: ClassVar[tuple[str, ...]] = ("cpd", "tweedie", "euler", "ordered", "ordered-beam")

    def __init__(
        self,
        *,
        n_items: int,
        vocab_sizes: list[int],
        max_len: int = 20,
        d_model: int = 128,
        n_heads: int = 4,
        enc_layers: int = 2,
        dec_layers: int = 2,
        d_ff: int = 512,
        dropout: float = 0.1,
        loss: str = "diffgrm",
        schedule: str = "loglinear",
        augment_factor: int = 4,
        mask_prob: float = 0.5,
        lambda_floor: float = 0.05,
        label_smoothing: float = 0.1,
        beta_max: float = 0.1,
        history_dropout: float = 0.0,
        repeat_head: bool = False,
        repeat_explore: str = "all",
        item_loss: float = 1.0,
        item_loss_items: int = 16384,
        item_head: bool = False,
        seed: int = 0,
    ):
        kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self_explore_new = explore_new(repeat_explore, repeat_head)
        if not self_explore_new:  # absent when 'all', so older checkpoints' specs stay valid
            del kwargs["repeat_explore"]
        super().__init__(**kwargs)
        self.explore_new = self_explore_new  # the generator covers items outside the history window only
        n, v, d = len(vocab_sizes), max(vocab_sizes), d_model
        self.n_digits, self.max_len, self.schedule_name, self.beta_max = n, max_len, schedule, beta_max
        self.objective = make_loss(loss, schedule=schedule, lambda_floor=lambda_floor, augment_factor=augment_factor,
                                   mask_prob=mask_prob, label_smoothing=label_smoothing, beta_max=beta_max)  # fmt: skip

        self.seed, self.history_dropout = seed, float(history_dropout)
        self.item_loss, self.item_loss_items = float(item_loss), int(item_loss_items)
        self.register_buffer("noise_step", torch.zeros((), dtype=torch.long))  # training masks drawn so far
        self.register_buffer("codes", torch.zeros(n_items, n, dtype=torch.long))  # [N, n] item -> code
        offsets = torch.tensor([0, *vocab_sizes[:-1]]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)  # [n] start of each level's rows
        vocab_ok = torch.arange(v)[None] < torch.tensor(vocab_sizes)[:, None]
        self.register_buffer("vocab_ok", vocab_ok, persistent=False)  # [n, V] real digits per level
        head_rows = torch.where(vocab_ok, offsets[:, None] + torch.arange(v)[None], 0)
        self.register_buffer("head_rows", head_rows, persistent=False)  # [n, V] embedding row of each output

        with torch.random.fork_rng(devices=[]):  # initialise from `seed`, leave the global RNG alone
            torch.manual_seed(seed)
            self.tok_emb = nn.Embedding(sum(vocab_sizes), d)  # one row per (level, digit), shared
            self.hist_pos = nn.Embedding(max_len + 1, d)  # history slots + the start token
            self.start = nn.Parameter(torch.randn(d) * 0.02)
            self.digit_pos = nn.Embedding(n, d)
            self.mask_emb = nn.Parameter(torch.randn(d) * 0.02)
            enc = nn.TransformerEncoderLayer(
                d, n_heads, d_ff, dropout, activation="gelu", batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(enc, enc_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
            self.decoder = nn.ModuleList(DigitBlock(d, n_heads, d_ff, dropout) for _ in range(dec_layers))
            self.ln_f = nn.LayerNorm(d)
            for emb in (self.tok_emb, self.hist_pos, self.digit_pos):  # small init: the heads are tied to tok_emb
                nn.init.normal_(emb.weight, std=0.02)
            self.head_b = nn.Parameter(torch.zeros(n, v))  # one head per digit position, tied to tok_emb
            # RepeatNet's repeat expert over the history (repeat_head.py); made last: other weights are unchanged
            self.repeat = RepeatHead(d) if repeat_head else None
            # item_loss's own output table (the whole-code step's scores), so the digit heads stay the objective's
            self.item_emb = nn.Embedding(sum(vocab_sizes), d) if item_head else None
            if self.item_emb is not None:
                nn.init.normal_(self.item_emb.weight, std=0.02)
                self.item_b = nn.Parameter(torch.zeros(n, v))
        self._table: CodeTable | None = None
        self.sample_stats: dict[str, float] = {}  # last recommend(): nfe (function evaluations per user)

    @classmethod
    def from_codes(cls, codes: Tensor, vocab_sizes: list[int], **kwargs: Any) -> DiffusionRecommender:
        """A fresh model over the item-code table codes [N, n]."""
        model = cls(n_items=codes.shape[0], vocab_sizes=list(vocab_sizes), **kwargs)
        model.codes.copy_(codes)
        return model

    def table(self) -> CodeTable:
        key = (self.codes.data_ptr(), self.codes.device)
        if self._table is None or getattr(self, "_table_key", None) != key:
            self._table, self._table_key = CodeTable(self.codes, self.init_kwargs["vocab_sizes"]), key
        return self._table

    # --- network ---------------------------------------------------------------------------

    def encode(self, history: Tensor, fold: bool = True) -> Context:
        """history [B, L] item ids (-1 = pad, left-padded) -> the users' Context (encoder run once).
        fold: precompute each block's folded cross-attention (pays off when a user has many rows)."""
        history = history[:, -self.max_len :]
        return self._context(history, *self._memory(history), fold=fold)

    def _context(self, history: Tensor, memory: Tensor, keep: Tensor, fold: bool = True) -> Context:
        """The Context of encoder states memory [B, L+1, d] with keep [B, L+1] of `history` [B, L]."""
        kv, keep = [block.memory_kv(memory) for block in self.decoder], keep[:, None, None, :]
        if torch.is_grad_enabled() or self.training:
            return Context(kv, keep)
        folded = [block.fold(pair, keep) for block, pair in zip(self.decoder, kv, strict=True)] if fold else None
        heads = None if self.repeat is None else self.repeat(memory[:, -1], memory[:, :-1], history >= 0)
        return Context(kv, keep, folded, heads)

    def _memory(self, history: Tensor) -> tuple[Tensor, Tensor]:
        """history [B, L] (L <= max_len) -> encoder states [B, L+1, d] (the start token's last), keep [B, L+1] bool."""
        b, length = history.shape
        valid = history >= 0
        digits = self.codes[history.clamp(min=0)] + self.offsets  # [B, L, n]
        x = self.tok_emb(digits).sum(dim=2)  # [B, L, d]
        x = x + self.hist_pos(torch.arange(self.max_len - length, self.max_len, device=x.device))
        start = (self.start + self.hist_pos.weight[self.max_len]).expand(b, 1, -1)
        x = torch.cat([x, start], dim=1)  # [B, L+1, d]
        keep = torch.cat([valid, valid.new_ones(b, 1)], dim=1)  # [B, L+1]
        return self.encoder(x, src_key_padding_mask=~keep), keep

    def denoise(self, ctx: Context, rows: Tensor | int, noisy: Tensor, item: bool = False) -> Tensor:
        """Predict clean digits. noisy: [R, n] (-1 = masked); rows [R] the user of each row (or int s:
        s consecutive rows per user) -> logp [R, n, V] float32. item: read the item head (`item_head`)."""
        if not torch.is_grad_enabled():
            return self._denoise_fast(ctx, rows, noisy, item)
        known = noisy != MASK
        x = self._embed(noisy)
        for block, kv in zip(self.decoder, ctx.kv, strict=True):
            x = block(x, kv, ctx.keep, rows)
        weight, bias = self._head(item)
        logits = torch.einsum("rnd,nvd->rnv", self.ln_f(x), weight) + bias
        logp = torch.log_softmax(logits.float().masked_fill(~self.vocab_ok, float("-inf")), dim=-1)
        carried = torch.full_like(logp, float("-inf")).scatter_(2, noisy.clamp(min=0)[..., None], 0.0)
        return torch.where(known[..., None], carried, logp)  # unmasked digits are carried over

    def _head(self, item: bool = False) -> tuple[Tensor, Tensor]:
        """Output weights [n, V, d] and biases [n, V]: the digit heads (tied to the digit embeddings), or with
        `item` and an own item head, the whole-code step's."""
        if item and self.item_emb is not None:
            return self.item_emb.weight[self.head_rows], self.item_b
        return self.tok_emb.weight[self.head_rows], self.head_b

    def _embed(self, noisy: Tensor) -> Tensor:
        """Digit slots noisy [R, n] -> decoder input [R, n, d] (a masked slot holds the mask embedding)."""
        known = noisy != MASK
        x = torch.where(known[..., None], self.tok_emb(noisy.clamp(min=0) + self.offsets), self.mask_emb)
        return x + self.digit_pos.weight

    def _denoise_fast(self, ctx: Context, rows: Tensor | int, noisy: Tensor, item: bool = False) -> Tensor:
        """denoise without autograd (sampling), same result with less work:
        - the first block's self-attention sublayer sees only the row's slots, not the user: it runs
          once per distinct code (a beam search's rows share a few hundred partial codes);
        - known digits are carried, so when every row has as many masked slots (beam searches) the
          last block queries the masked slots only; the output heads always run on masked slots only."""
        r, n = noisy.shape
        masked = noisy == MASK
        count = masked.sum(dim=1)  # [R]
        prune = r > 0 and bool((count == count[0]).all()) and 0 < int(count[0]) < n
        codes, inverse = self._distinct(noisy)  # [C, n], [R]
        at = masked.nonzero()[:, 1].view(r, -1) if prune else None  # [R, m] masked positions of each row
        blocks = list(zip(self.decoder, ctx.kv, ctx.folded or [None] * len(ctx.kv), strict=True))
        x = self._embed(codes)
        for i, (block, kv, folded) in enumerate(blocks):
            last = at if i == len(blocks) - 1 else None
            if i == 0:
                x, y = block.mix(x, None if last is None else (codes == MASK).nonzero()[:, 1].view(len(codes), -1))
                x, y = x[inverse], y[inverse]  # [R, n or m, d]
            else:
                x, y = block.mix(x, last)
            x = block.attend(x, y, kv, ctx.keep, rows, folded)
        h = self.ln_f(x)
        if at is not None:
            slot_row = torch.arange(r, device=h.device).repeat_interleave(at.shape[1])
            return self._masked_head(h.reshape(-1, h.shape[-1]), slot_row, at.reshape(-1), noisy, item)
        slot_row, slot_pos = masked.nonzero(as_tuple=True)
        return self._masked_head(h[slot_row, slot_pos], slot_row, slot_pos, noisy, item)

    def _distinct(self, noisy: Tensor) -> tuple[Tensor, Tensor]:
        """Distinct rows of noisy [R, n] -> (codes [C, n], inverse [R]: the code of each row)."""
        base = int(self.vocab_ok.shape[1]) + 1
        if base ** noisy.shape[1] < 2**62:  # one int64 key per row
            key = ((noisy + 1) * base ** torch.arange(noisy.shape[1], device=noisy.device)).sum(dim=1)
            _, first, inverse = _unique_first(key)
            return noisy[first], inverse
        codes, inverse = torch.unique(noisy, dim=0, return_inverse=True)
        return codes, inverse

    def _masked_head(self, h: Tensor, slot_row: Tensor, slot_pos: Tensor, noisy: Tensor, item: bool = False) -> Tensor:
        """Output heads on the masked slots: h [Q, d] final states of slots (slot_row, slot_pos) [Q];
        the known digits of noisy [R, n] are carried (log-prob 0 at the digit) -> logp [R, n, V] float32."""
        r, n = noisy.shape
        weight, bias = self._head(item)  # [n, V, d], [n, V]
        carried = torch.where(noisy != MASK, 0.0, float("-inf"))[..., None]  # [R, n, 1]
        out = torch.full((r, n, weight.shape[1]), float("-inf"), device=h.device)
        out.scatter_(2, noisy.clamp(min=0)[..., None], carried)
        for j in range(n):  # one head per digit position, on the slots where it is masked
            at = (slot_pos == j).nonzero().squeeze(1)
            if len(at):
                logits = (h[at] @ weight[j].T + bias[j]).float()  # [Q_j, V]
                out[slot_row[at], j] = torch.log_softmax(logits.masked_fill(~self.vocab_ok[j], float("-inf")), dim=-1)
        return out

    # --- training --------------------------------------------------------------------------

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        history = batch["history"]
        if self.training and self.history_dropout:
            history = drop_history(history, self.history_dropout)
        history = history[:, -self.max_len :]
        memory, keep = self._memory(history)
        target = batch["target"]  # [B]
        ctx, gen = self._context(history, memory, keep), self.noise_generator()
        share = 1.0  # the examples the generator learns from, as a share of the batch
        if self.explore_new and (repeats := (history == target[:, None]).any(-1)).any():
            # RepeatNet's explore expert learns the items outside the window only (its term averaged over the
            # batch, as in RepeatNet's loss); the repeats are the pointer's (mode_nll below)
            rows = (~repeats).nonzero().squeeze(1)
            ctx, target = Context([kv[:, rows] for kv in ctx.kv], ctx.keep[rows]), target[rows]
            share = len(rows) / len(repeats)
        loss = history.new_zeros((), dtype=torch.float32)
        if len(target):
            loss = self.objective(self._logp_fn(ctx), self.codes[target], gen)
            if self.item_loss:
                loss = loss + self.item_loss * self.item_nll(ctx, target, gen)
            loss = loss * share if share < 1 else loss
        if self.repeat is None:
            return loss
        heads = self.repeat(memory[:, -1], memory[:, :-1], history >= 0)
        return loss + mode_nll(*heads, history, batch["target"]).mean()

    def item_nll(self, ctx: Context, target: Tensor, gen: torch.Generator | None = None) -> Tensor:
        """Cross-entropy of the target items [B] under the whole-code score (the one-call decoding's): every
        item scores the sum of its digits' log-probs from the all-masked pass, softmaxed over the catalogue
        -> mean nats. Trains the digits' marginals to rank items jointly. A catalogue above
        `item_loss_items` is softmaxed over the batch's targets and that many items drawn uniformly from
        `gen` (a sampled softmax: memory follows the setting, not the catalogue)."""
        b, n_items = target.shape[0], self.codes.shape[0]
        logp = self.denoise(ctx, 1, torch.full((b, self.n_digits), MASK, device=target.device), item=True)  # [B, n, V]
        if n_items <= self.item_loss_items:
            return F.cross_entropy(whole_code_scores(logp, self.codes), target)
        drawn = torch.randint(n_items, (self.item_loss_items,), generator=gen).to(target.device)
        items = torch.unique(torch.cat([target, drawn]))  # [C] sorted
        return F.cross_entropy(whole_code_scores(logp, self.codes[items]), torch.searchsorted(items, target))

    def noise_generator(self) -> torch.Generator:
        """Generator of this training step's masks: a function of (seed, step, rank), so resume replays it."""
        rank = int(os.environ.get("RANK", "0"))
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(self.noise_step) * 7919 + rank) % 2**63)
        if self.training:
            self.noise_step += 1
        return gen

    def _logp_fn(self, ctx: Context):
        """(rows [R], noisy [R, n]) -> logp [R, n, V], each row reading its example's encoding. Rows that are
        every example's s consecutive views (k_dce's one view each, diffgrm's example-major views) attend to
        the example's keys and values at once instead of through a per-row copy (training: ~13% per step)."""
        users = ctx.keep.shape[0]

        def logp(rows: Tensor, noisy: Tensor) -> Tensor:
            s = len(rows) // max(users, 1)
            grouped = torch.arange(users, device=rows.device).repeat_interleave(s)
            return self.denoise(ctx, s if s * users == len(rows) and torch.equal(rows, grouped) else rows, noisy)

        return logp

    @torch.no_grad()
    def likelihood_bound(self, history: Tensor, target: Tensor, batch_size: int = 128) -> Tensor:
        """Exact any-order bound on -log p(target | history) in nats per user ([U] float64)."""
        out = []
        for h, t in zip(history.split(batch_size), target.split(batch_size), strict=True):
            out.append(any_order_bound(self._logp_fn(self.encode(h)), self.codes[t]))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    # --- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def recommend(
        self, history: Tensor, *, k: int, sampler: str | None = None, options: Any = None, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-k distinct items per user (see `stages/samplers/base.py` for the loop).

        Excluded items ([B, M] ids) are invalid completions during the search. A user left with
        fewer than k items (duplicate samples, beams merging into the same items) gets another
        round of the sampler with the items found so far excluded too; each round adds at least
        one, so exactly k come out whenever the catalogue minus the excluded items allows. The
        lists are merged by score (path log-probabilities). Unconstrained (`options.constrained`
        off, `--no-constraint`): one search over every code; codes of no item come back as -2.
        With `repeat_head`, the list is then mixed with the user's allowed history items at the item level
        (`repeat_head.mix_lists`), so scores are the repeat / explore mixture's log-probs.
        """
        from stages.samplers import make_sampler
        from stages.samplers.base import SamplerOptions, top_distinct

        name = self.check_sampler(sampler)
        opts = SamplerOptions.of(options)
        schedule = make_schedule(self.schedule_name, beta_max=self.beta_max)
        smp = make_sampler(name, table=self.table(), schedule=schedule, options=opts, k=k)
        b, dev = history.shape[0], history.device
        users = torch.arange(b, device=dev) if opts.users is None else torch.as_tensor(opts.users, device=dev).long()
        n_items, prefix = self.codes.shape[0], smp.prefix.to(dev)
        # the user's history (sparse [B, N]: memory follows the history, not the catalogue)
        history_set = ItemSets.from_lists(exclude, n_items) if exclude is not None else ItemSets.empty(b, n_items, dev)
        recent = history[:, -self.max_len :]  # the items the repeat expert points at
        search_set = history_set  # what the search skips: the excluded items, and the window's with `explore_new`
        explore_new = self.explore_new and self.repeat is not None and opts.constrained
        if explore_new:  # RepeatNet's explore expert: window items get the repeat expert's mass alone (below)
            some = recent >= 0
            search_set = history_set.add(torch.arange(b, device=dev)[:, None].expand_as(recent)[some], recent[some])
        banned = search_set  # the excluded items and the items found so far (a new ItemSets per round)
        # banned items that have the prefix, per user: a user can get more while this is below the count
        # of items with the prefix (found items always have it, so it grows by the items found)
        user, item = search_set.pairs()
        fits = ((prefix < 0) | (self.codes[item] == prefix)).all(dim=1)
        left = int(self.table().pair_counts(prefix[None])[0]) - torch.bincount(user[fits], minlength=b)  # [B]
        items = torch.full((b, k), -1, dtype=torch.long, device=dev)
        scores = torch.full((b, k), float("-inf"), device=dev)
        ctx, rows, evals, rounds = self.encode(history, fold=not smp.one_pass()), torch.arange(b, device=dev), 0, 0
        for rnd in range(k):  # each round adds ≥ 1 item to every user it runs for
            sub = Context([kv[:, rows] for kv in ctx.kv], ctx.keep[rows]) if rnd else ctx
            state = smp.init_state(len(rows), dev, users[rows], rnd)
            if rnd or exclude is not None or explore_new:
                every = rnd == 0  # the first round runs for every user: the masks themselves, no copies
                state.extra["exclude"] = (
                    banned if every else banned.rows(rows)
                )  # the history and the items found so far
                state.extra["invalid"] = (
                    search_set if every else search_set.rows(rows)
                )  # the excluded items alone: out of the renormalisation too
            state, calls = self._search(
                smp, sub, state, opts.use_cache, item=smp.one_pass() and self.item_emb is not None
            )
            got, got_score = smp.finish(state, k)  # [r, k], none of them banned
            evals, rounds = evals + calls, rounds + 1
            if not opts.constrained:  # one search: its codes, invalid ones (-2) included, are the list
                items, scores = got, got_score
                break
            merged, merged_score = top_distinct(
                torch.cat([items[rows], got], 1), torch.cat([scores[rows], got_score], 1), k
            )
            items[rows], scores[rows] = merged, merged_score
            banned = banned.add(rows[:, None].expand_as(got)[got >= 0], got[got >= 0])
            left[rows] -= (got >= 0).sum(dim=1)  # found items are distinct, allowed and have the prefix
            short = (merged < 0).any(dim=1) & (left[rows] > 0)
            rows = rows[short]
            if not len(rows):
                break
        self.sample_stats = {"nfe": evals / max(b, 1), "function_evals": evals, "rounds": rounds}
        if ctx.repeat is None or not opts.constrained:  # (unconstrained: the list is the search's codes, as is)
            return items, scores
        allowed = ~history_set.contains(torch.arange(b, device=dev)[:, None].expand_as(recent), recent)
        allowed &= ((prefix < 0) | (self.codes[recent.clamp(min=0)] == prefix)).all(-1)
        self.sample_stats["repeat_gate"] = float(ctx.repeat[1].exp().mean())  # mean P(repeat) of these users
        return top_distinct(*mix_lists(items, scores, recent, ctx.repeat, allowed), k)

    def _search(self, smp: Any, ctx: Context, state: Any, use_cache: bool, item: bool = False) -> tuple[Any, int]:
        """Run one sampler to the end on the users of `ctx` -> (final state, function evaluations).
        item: the search is the whole-code step (read the item head where the model has one)."""
        evals, denoise = 0, (lambda *args: self.denoise(*args, item=True)) if item else self.denoise
        while not smp.done(state):
            b, s, n = state.tokens.shape
            if use_cache and state.logp is None and s > 1 and bool((state.tokens == state.tokens[:, :1]).all()):
                # every row of a user holds the same code (e.g. the all-masked start): one evaluation per user
                state.logp = denoise(ctx, 1, state.tokens[:, 0])[:, None].repeat(1, s, 1, 1)
                state.fresh = torch.ones(b, s, dtype=torch.bool, device=state.tokens.device)
                evals += b
            if state.logp is None or state.fresh is None or not use_cache:
                state.logp = (
                    state.logp if state.logp is not None else self.head_b.new_empty(b, s, n, self.vocab_ok.shape[1])
                )
                state.fresh = torch.zeros(b, s, dtype=torch.bool, device=state.tokens.device)
            need = ~state.fresh
            skip = smp.needless(state)  # rows whose log-probs the step does not read: no evaluation
            if skip is not None and bool(skip.any()):
                state.logp[skip] = 0.0
                need &= ~skip
            rows = need.flatten().nonzero().squeeze(1)  # rows needing a function evaluation
            if len(rows) == b * s:  # every row: a user's rows share its keys/values, no copy of the output
                state.logp = denoise(ctx, s, state.tokens.reshape(b * s, n)).view(b, s, n, self.vocab_ok.shape[1])
                evals += len(rows)
            elif len(rows):
                state.logp.view(b * s, n, -1)[rows] = denoise(ctx, rows // s, state.tokens.reshape(b * s, n)[rows])
                evals += len(rows)
            state = smp.step(state, state.logp)
        return state, evals


def _unique_first(key: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct values of key [R] -> (values [C], index of one row holding each [C], inverse [R])."""
    values, inverse = torch.unique(key, return_inverse=True)
    first = torch.empty(len(values), dtype=torch.long, device=key.device).scatter_(
        0, inverse, torch.arange(len(key), device=key.device)
    )
    return values, first, inverse


class DiffusionFamily(ModelFamily):
    """The diffusion model in the train flow (`gdr diffuse`): every prefix, validation by cpd."""

    kind = "diffusion"
    config = DiffuseConfig
    train_config = DiffuseTrainConfig
    needs_ids = True
    default_max_len = 20

    def build(self, data: FamilyData, cfg: DiffuseConfig) -> DiffusionRecommender:
        from gdr_cli.errors import GdrError

        assert data.codes is not None and data.vocab_sizes is not None
        if cfg.d_model % cfg.n_heads:
            raise GdrError(
                f"n_heads {cfg.n_heads} does not divide d_model {cfg.d_model}", fix="pick n_heads dividing d_model"
            )
        if cfg.validation.digits_per_step > len(data.vocab_sizes):
            raise GdrError(f"validation digits_per_step {cfg.validation.digits_per_step} exceeds the code length {len(data.vocab_sizes)}",
                           fix=f"set validation.digits_per_step to 1..{len(data.vocab_sizes)}")  # fmt: skip
        sizes = cfg.model_dump(include=MODEL_KEYS)
        return DiffusionRecommender.from_codes(
            data.codes, data.vocab_sizes, max_len=data.max_len, seed=data.seed, **sizes
        )

    def examples(self, data: FamilyData, cfg: DiffuseConfig) -> dict[str, Tensor]:
        from stages.data.sequences import training_examples

        ex = training_examples(data.splits, data.max_len)
        return {"history": ex["history"], "target": ex["target"]}

    def validation_options(self, cfg: DiffuseConfig) -> tuple[str | None, Any]:
        from stages.samplers.base import SamplerOptions

        return "cpd", SamplerOptions(beam=cfg.validation.beam, digits_per_step=cfg.validation.digits_per_step)

    def decoding_choices(self, cfg: DiffuseConfig, data: FamilyData) -> list[tuple[dict[str, Any], str | None, Any]]:
        """cpd at `gdr sample`'s beam with every digits-per-step, cheapest first by `decoding_cost` (ties: fewer steps)."""
        from stages.config.sample import SampleConfig
        from stages.samplers.base import SamplerOptions

        if not cfg.validation.choose_digits_per_step:
            return []
        beam = SampleConfig.model_fields["beam"].default
        codes = data.codes
        n, ipc = (0 if codes is None else codes.shape[1]), cfg.validation.items_per_call
        ways = [(d, "exact") for d in range(n, 0, -1)] + ([(n, "beam")] if n else [])
        first = {w: first_candidates(codes, w[0], beam if w[1] == "beam" else 0) for w in ways}  # type: ignore[arg-type]
        ways.sort(key=lambda w: decoding_cost(n, w[0], beam, first[w], ipc))  # stable: ties keep fewer steps first
        return [
            ({"digits_per_step": d, **({"whole_code": w} if w == "beam" else {})}, "cpd",
             SamplerOptions(beam=beam, digits_per_step=d, whole_code=w))
            for d, w in ways
        ]  # fmt: skip

    def decoding_tolerance(self, cfg: DiffuseConfig) -> float:
        return cfg.validation.choose_within_se

    def stats(self, model: Recommender, data: FamilyData, cfg: DiffuseConfig) -> dict[str, Any]:
        """The exact any-order likelihood bound on the validation targets (codes of up to MAX_DIGITS digits)."""
        import math

        from stages.data.sequences import eval_histories, validation_subset
        from stages.diffusion.likelihood import MAX_DIGITS

        n = len(data.vocab_sizes or [])
        if n > MAX_DIGITS:
            return {"loss": cfg.loss}
        val = eval_histories(data.eval_splits, "valid", data.max_len, with_target=True)
        val, _ = validation_subset(val, cfg.train.val_users, data.seed)  # the users validation reads
        device = next(model.parameters()).device
        bound = model.likelihood_bound(val["history"].to(device), val["target"].to(device)).mean().item()
        return {
            "loss": cfg.loss,
            "val_nll_bound_nats": round(bound, 6),
            "val_perplexity_per_digit": round(math.exp(bound / n), 6),
        }

    def summary(self, stats: dict[str, Any]) -> str:
        if "val_nll_bound_nats" not in stats:
            return f", {stats['loss']}"
        return (f", {stats['loss']}, val bound {stats['val_nll_bound_nats']:.3f} nats/item "
                f"(perplexity {stats['val_perplexity_per_digit']:.2f}/digit)")  # fmt: skip


MODEL_KEYS = {"d_model", "n_heads", "enc_layers", "dec_layers", "d_ff", "dropout", "loss", "schedule", "augment_factor",
              "mask_prob", "lambda_floor", "label_smoothing", "beta_max", "history_dropout", "repeat_head", "repeat_explore",
              "item_loss", "item_loss_items", "item_head"}  # fmt: skip
"""DiffuseConfig fields that are DiffusionRecommender constructor arguments."""
