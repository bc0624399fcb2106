"""TIGER: an encoder-decoder Transformer (T5) that reads the codes of a user's recent items and
writes the code of the next one, digit by digit.

Token layout (one flat vocabulary): 0 = pad (also the decoder's start token, as in T5),
1 = eos (kept for T5's conventions; codes have a fixed length D so it is never produced),
then one block per digit position d of vocab_sizes[d] tokens: token = 2 + offset[d] + digit.
Textual IDs (`gdr train-gen`, `vocab_kind="shared"`) are codes over ONE word vocabulary: every
position uses the same block, token = 2 + word id (one model family, two ID kinds).

    history [B, L] item ids -> codes [B, L, D] -> encoder tokens [B, L*D] (pad where no item)
                               ('items' input: L positions, each the sum of its D token embeddings / sqrt(D))
    target  [B]    item id  -> labels [B, D];  decoder input = [pad, labels[:, :-1]]
    loss = cross-entropy of the D next-token predictions (full-vocabulary softmax, optional label smoothing)

`batch["history_embeds"]` [B, L, D, d_model], when given, replaces the history's token embeddings
(IDGenRec: the ID generator's probabilities x this model's embedding matrix, so the loss reaches it).

The model owns its item -> code table (buffer `codes`, saved with the weights), so a run folder
rebuilds it; the trie of valid codes is derived from that table on first use.

Recommendation is trie-constrained beam search (`stages/samplers/beam.py`): only prefixes of
real codes survive, and each finished beam is a distinct item. Optional heads on the encoder states:
`repeat_head` (on by default; `repeat_head.py`) mixes a pointer over the history into every prefix's
score, `dense_weight` (`dense_head.py`) re-ranks the beam's candidates by a dense next-item softmax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.config.train_rec import TigerConfig, TigerTrainConfig
from stages.models import t5_lean
from stages.models.base import Recommender
from stages.models.dense_head import DenseHead
from stages.models.family import FamilyData, ModelFamily
from stages.models.history_dropout import drop_history
from stages.models.repeat_head import NEG, CopyPrior, RepeatHead, explore_new
from stages.models.tiger_corruption import CorruptionTraining

PAD, EOS, FIRST_CODE_TOKEN = 0, 1, 2
TIED = ("t5.encoder.embed_tokens.weight", "t5.decoder.embed_tokens.weight", "t5.lm_head.weight")
"""Aliases of `t5.shared.weight` (T5 ties them): left out of the state dict, restored on load."""


def t5_config(vocab_size: int, **sizes: Any):
    """A from-scratch `T5Config` over the code vocabulary (sizes: d_model, d_kv, d_ff, n_heads, ...)."""
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=sizes["d_model"],
        d_kv=sizes["d_kv"],
        d_ff=sizes["d_ff"],
        num_layers=sizes["n_layers"],
        num_decoder_layers=sizes["n_decoder_layers"],
        num_heads=sizes["n_heads"],
        dropout_rate=sizes["dropout"],
        feed_forward_proj=sizes["feed_forward"],
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        tie_word_embeddings=sizes["scale_outputs"],  # in transformers 5 this only switches output scaling
    )


class Tiger(Recommender):
    kind: ClassVar[str] = "tiger"
    samplers: ClassVar[tuple[str, ...]] = ("beam",)

    def __init__(
        self,
        *,
        n_items: int,
        vocab_sizes: list[int],
        d_model: int = 128,
        d_kv: int = 64,
        d_ff: int = 1024,
        n_heads: int = 6,
        n_layers: int = 4,
        n_decoder_layers: int = 4,
        dropout: float = 0.1,
        feed_forward: str = "relu",
        encoder_input: str = "tokens",
        item_embedding: bool = False,
        recency_embedding: int = 0,
        history_dropout: float = 0.0,
        dense_weight: float = 0.0,
        repeat_head: bool = False,
        repeat_explore: str = "all",
        label_smoothing: float = 0.1,
        scale_outputs: bool = True,
        vocab_kind: str = "digits",
        seed: int = 0,
        corruption: dict[str, Any] | None = None,
    ):
        sizes = dict(d_model=d_model, d_kv=d_kv, d_ff=d_ff, n_heads=n_heads, n_layers=n_layers,
                     n_decoder_layers=n_decoder_layers, dropout=dropout, feed_forward=feed_forward,
                     scale_outputs=scale_outputs)  # fmt: skip
        if encoder_input not in ("tokens", "items"):
            raise GdrError(f"unknown encoder_input {encoder_input!r}", fix="use 'tokens' or 'items'")
        shared = vocab_kind == "shared"
        if vocab_kind not in ("digits", "shared") or (shared and len(set(vocab_sizes)) > 1):
            raise GdrError(f"bad vocab_kind {vocab_kind!r} for vocab sizes {list(vocab_sizes)}",
                           fix="'digits' (a block per digit) or 'shared' (one word vocabulary, equal sizes)")  # fmt: skip
        extra = {} if corruption is None else {"corruption": dict(corruption)}  # absent = the plain model
        if recency_embedding:  # absent when off, so older checkpoints' specs stay valid
            extra["recency_embedding"] = int(recency_embedding)
        if history_dropout:
            extra["history_dropout"] = float(history_dropout)
        if dense_weight:
            if corruption is not None:
                raise GdrError("dense_weight does not combine with corruption training (use_diffusion 1)",
                               fix="set one of tiger.dense_weight=0 or tiger.use_diffusion=0")  # fmt: skip
            extra["dense_weight"] = float(dense_weight)
        if repeat_head:
            extra["repeat_head"] = True
        if explore_new(repeat_explore, repeat_head, "tiger.repeat_explore"):  # absent when 'all' (older checkpoints)
            extra["repeat_explore"] = "new"
        if shared:
            extra["vocab_kind"] = vocab_kind
        super().__init__(
            n_items=n_items,
            vocab_sizes=[int(v) for v in vocab_sizes],
            encoder_input=encoder_input,
            item_embedding=item_embedding,
            label_smoothing=label_smoothing,
            seed=seed,
            **sizes,
            **extra,
        )
        from transformers import T5ForConditionalGeneration

        self.n_digits = len(vocab_sizes)
        self.vocab_size = FIRST_CODE_TOKEN + (vocab_sizes[0] if shared else sum(vocab_sizes))
        with torch.random.fork_rng(devices=[]):  # T5's own init draws from the global RNG; keep it untouched
            self.t5 = T5ForConditionalGeneration(t5_config(self.vocab_size, **sizes))
        # optional [N, d] table of the history items' own identities (encoder side only; decoding stays over codes)
        self.item_embed = torch.nn.Embedding(n_items, d_model) if item_embedding else None
        # optional [R, d] table of the R most recent history positions (row 0 = the latest item)
        self.recency = torch.nn.Embedding(recency_embedding, d_model) if recency_embedding else None
        self.history_dropout = float(history_dropout)  # training only: see `drop_history`
        self.dense = DenseHead(d_model) if dense_weight else None  # LIGER's dense head (dense_head.py)
        self.repeat = RepeatHead(d_model) if repeat_head else None  # RepeatNet's repeat expert (repeat_head.py)
        self.explore_new = repeat_explore == "new"  # the generator covers items outside the history window only
        self.init_weights(torch.Generator().manual_seed(seed))
        offsets = torch.tensor([0, *vocab_sizes[:-1]], dtype=torch.int64).cumsum(0) * (not shared) + FIRST_CODE_TOKEN
        self.register_buffer("codes", torch.zeros(n_items, self.n_digits, dtype=torch.int64))  # [N, D] item -> code
        self.register_buffer("offsets", offsets, persistent=False)  # [D] first token of each digit block
        self._trie: Any = None
        self.corruption: CorruptionTraining | None = None  # training-time input corruption (tiger_corruption.py)
        if corruption is not None:
            per_position = self.n_digits if encoder_input == "items" else 1
            self.corruption = CorruptionTraining(vocab_size=self.vocab_size, d_model=d_model, per_position=per_position,
                                                 seed=seed, **corruption)  # fmt: skip
        self.register_state_dict_post_hook(_drop_tied)
        self.register_load_state_dict_pre_hook(_restore_tied)
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_trie", None))

    # ----- construction -----------------------------------------------------------------------
    @classmethod
    def from_codes(
        cls, codes: Tensor, vocab_sizes: list[int], *, init: str | Path | None = None, **sizes: Any
    ) -> Tiger:
        """A model for items coded `codes` [N, D]; `init` = a local T5 checkpoint folder to start from."""
        if init is not None:
            sizes = {**sizes, **pretrained_sizes(Path(init))}
        model = cls(n_items=int(codes.shape[0]), vocab_sizes=vocab_sizes, **sizes)
        model.set_codes(codes)
        if init is not None:
            model.load_pretrained(Path(init))
        return model

    def set_codes(self, codes: Tensor) -> None:
        """Install the item -> code table (checked against this model's shape)."""
        codes = torch.as_tensor(codes, dtype=torch.int64)
        self.check_codes(codes)
        self.codes.copy_(codes)
        self._trie = None
        self.sample_stats: dict[str, float] = {}  # last recommend(): nfe (decoder rows per user), rounds

    def check_codes(self, codes: Tensor) -> None:
        """Raise a `GdrError` when `codes` [N, D] cannot be the code table of this model."""
        vocab = self.init_kwargs["vocab_sizes"]
        if tuple(codes.shape) != tuple(self.codes.shape):
            raise GdrError(
                f"code table of shape {tuple(codes.shape)} does not match the model's {tuple(self.codes.shape)}",
                fix="use the ID set the run was trained with, or retrain the run with this ID set",
            )
        if codes.numel() and ((codes < 0).any() or (codes >= torch.tensor(vocab)).any()):
            raise GdrError(
                f"code digits fall outside the model's vocabulary sizes {vocab}", fix="retrain the run with this ID set"
            )

    @torch.no_grad()
    def init_weights(self, gen: torch.Generator) -> None:
        """T5's initialisation (Mesh TensorFlow scales), drawn from `gen` for reproducibility."""
        init_t5(self.t5, self.init_kwargs, gen)
        if self.item_embed is not None:
            self.item_embed.weight.copy_(torch.randn(self.item_embed.weight.shape, generator=gen))
        if self.recency is not None:
            self.recency.weight.copy_(torch.randn(self.recency.weight.shape, generator=gen))
        for w in (
            getattr(self.dense, "query", None),
            getattr(self.repeat, "query", None),
            getattr(self.repeat, "gate", None),
        ):
            if w is not None:  # the heads' projections: unit-variance outputs; the repeat gate starts at g = 1/2
                w.weight.copy_(torch.randn(w.weight.shape, generator=gen) * w.weight.shape[1] ** -0.5)
                if w.bias is not None:
                    w.bias.zero_()

    @torch.no_grad()
    def load_pretrained(self, folder: Path) -> None:
        """Start from a local T5 checkpoint: all its weights, except that the token embeddings are cut or
        extended to the code vocabulary (rows it lacks keep this model's seeded initialisation)."""
        from transformers import T5ForConditionalGeneration

        try:
            with torch.random.fork_rng(devices=[]):
                hf = T5ForConditionalGeneration.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise GdrError(f"cannot load a T5 checkpoint: {first}", where=str(folder),
                           fix="give a folder with config.json and model weights of a T5 model (no download is made)") from None  # fmt: skip
        state = {k: v for k, v in hf.state_dict().items() if f"t5.{k}" not in TIED}
        shared = state.pop("shared.weight")
        rows = min(shared.shape[0], self.vocab_size)
        self.t5.shared.weight[:rows] = shared[:rows]
        missing, unexpected = self.t5.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "shared.weight" and f"t5.{k}" not in TIED]
        if missing or unexpected:
            raise GdrError(f"T5 checkpoint does not fit: missing {missing[:2]}, unexpected {unexpected[:2]}", where=str(folder),
                           fix="use a T5ForConditionalGeneration checkpoint")  # fmt: skip

    # ----- tokens ------------------------------------------------------------------------------
    def item_tokens(self, items: Tensor) -> Tensor:
        """Code tokens of items. items: [...] int64 (-1 = none) -> [..., D] int64 (PAD where none)."""
        tokens = self.codes[items.clamp(min=0)] + self.offsets  # [..., D]
        return torch.where((items >= 0)[..., None], tokens, PAD)

    def item_vectors(self, items: Tensor) -> Tensor:
        """Items [...] int64 (>= 0) -> [..., d] the sum of their code-token embeddings / sqrt(D): the dense
        head's keys (the 'items' encoder input of the same item, without the optional own vector)."""
        return self.t5.shared(self.item_tokens(items)).sum(-2) * self.n_digits**-0.5

    def word_embeddings(self) -> Tensor:
        """[W, d_model] embedding rows of the shared word block (textual IDs): word w is token 2 + w."""
        return self.t5.shared.weight[FIRST_CODE_TOKEN:]

    def encoder_inputs(
        self,
        history: Tensor,
        embeds: Tensor | None = None,
        tokens: Tensor | None = None,
        timesteps: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """history [B, L] -> (input embeddings [B, S, d_model], attention mask [B, S] int64);
        `embeds` [B, L, D, d_model] replaces the token embeddings of the history (soft IDs).

        'tokens': S = L*D, one position per code token (as in TIGER). 'items': S = L, one position
        per item holding the sum of its D token embeddings / sqrt(D) (4x shorter, much cheaper).
        With `item_embedding`, each item's own learned vector joins its token embeddings (in the
        sum, or added to each of its D positions) and the sum is scaled by 1/sqrt(D+1).
        With `recency_embedding` R, the learned vector of each item's recency (0 = latest; history is
        left-padded, so the latest item is last) is added to its position(s); items older than R get none.
        A user with no history attends to one pad position, so attention is always defined.
        `tokens` [B, L, D]: input ids to use instead of the history's codes (a corrupted copy).
        With corruption training, [TIMESTEP_t] comes first (S + 1 positions; `timesteps` [B], None = 0,
        the clean input: sampling and validation always read t = 0).
        """
        tokens = self.item_tokens(history) if tokens is None else tokens  # [B, L, D]
        if embeds is not None:
            embed = embeds  # [B, L, D, d]
        elif self.corruption is None:
            embed = self.t5.shared(tokens)  # [B, L, D, d]
        else:
            embed = self.corruption.embed(self.t5.shared, tokens)
        own = None if self.item_embed is None else self.item_embed(history.clamp(min=0))  # [B, L, d]
        recency = self.recency_embeds(history.shape[1])  # [L, d] or None
        if self.init_kwargs["encoder_input"] == "items":
            parts = embed.sum(2) if own is None else embed.sum(2) + own
            embed = parts * (self.n_digits + (own is not None)) ** -0.5  # [B, L, d]
            if recency is not None:
                embed = embed + recency
            mask = history >= 0  # [B, L]
        else:
            if own is not None:
                embed = (embed + own[:, :, None]) * 0.5**0.5
            if recency is not None:
                embed = embed + recency[:, None]
            embed, mask = embed.flatten(1, 2), tokens.flatten(1) != PAD  # [B, L*D, d], [B, L*D]
        mask[:, -1] |= ~mask.any(dim=1)
        if self.corruption is not None:
            embed, mask = self.corruption.prepend_timestep(embed, mask, timesteps)
        return embed, mask.long()

    def recency_embeds(self, length: int) -> Tensor | None:
        """[L, d] recency vectors of L left-padded history positions (position L-1 = the latest item;
        positions older than the table get zeros), or None without `recency_embedding`."""
        if self.recency is None:
            return None
        newest = self.recency.weight[:length].flip(0)  # [min(R, L), d], the latest item's row last
        return F.pad(newest, (0, 0, length - newest.shape[0], 0))  # older positions: zero rows in front

    # ----- training ----------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        if self.training and self.history_dropout:
            batch = {**batch, "history": drop_history(batch["history"], self.history_dropout)}
        if self.corruption is not None and self.training:
            return self.corruption.loss(self, batch)  # CE + noise-head BCE + cross-view KL on a corrupted batch
        hidden, mask = self.encode(batch["history"], batch.get("history_embeds"))  # [B, S, d], [B, S]
        labels = self.item_tokens(batch["target"])  # [B, D]
        dec_in = F.pad(labels[:, :-1], (1, 0), value=PAD)  # [B, D], starts with the pad token
        out = self.t5.decoder(input_ids=dec_in, encoder_hidden_states=hidden, encoder_attention_mask=mask)
        logits = self.logits(out.last_hidden_state)  # [B, D, V]
        loss = self.code_loss(
            logits, labels, hidden, batch["history"], batch["target"], self.init_kwargs["label_smoothing"]
        )
        if self.dense is None:
            return loss
        keys = self.item_vectors(torch.arange(self.codes.shape[0], device=hidden.device))  # [N, d]
        return loss + self.init_kwargs["dense_weight"] * self.dense.loss(hidden[:, -1], keys, batch["target"])

    def code_loss(self, logits: Tensor, labels: Tensor, hidden: Tensor, history: Tensor, target: Tensor,
                  smooth: float = 0.0) -> Tensor:  # fmt: skip
        """Mean per-digit cross-entropy of the target's code (logits [B, D, V], labels [B, D]); with the repeat
        head, -log of the repeat / explore mixture / D instead (hidden: the encoder states of `history`). Label
        smoothing `smooth` mixes in the cross-entropy against the uniform distribution either way."""
        if self.repeat is None:
            return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), label_smoothing=smooth)
        logp = logits.float().log_softmax(-1)  # [B, D, V]
        gen_logp = logp.gather(-1, labels[..., None]).squeeze(-1).sum(1)  # [B] log p_gen(code of target)
        if self.explore_new:  # RepeatNet's explore expert has no mass on window items: repeats are the pointer's
            gen_logp = gen_logp.masked_fill((history == target[:, None]).any(-1), NEG)
        heads = self.repeat(*self.history_states(hidden, history.shape[1]), history >= 0)
        loss = RepeatHead.mix_nll(gen_logp, *heads, history, target).mean() / self.n_digits
        return loss if not smooth else (1 - smooth) * loss - smooth * logp.mean()

    def history_states(self, hidden: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """Encoder states [B, S, d] -> (state at the latest item [B, d], state of each history item [B, L, d]):
        with 'tokens' input an item's state is its last code token's."""
        if self.init_kwargs["encoder_input"] == "tokens":
            states = hidden[:, -length * self.n_digits :][:, self.n_digits - 1 :: self.n_digits]
        else:
            states = hidden[:, -length:]
        return states[:, -1], states

    def copy_prior(self, history: Tensor, hidden: Tensor) -> CopyPrior | None:
        """The repeat expert of users with `history` [B, L] and encoder states `hidden`, for the beam search."""
        if self.repeat is None:
            return None
        log_explore, log_repeat, log_a = self.repeat(*self.history_states(hidden, history.shape[1]), history >= 0)
        return CopyPrior(log_explore, log_repeat, log_a, self.codes[history.clamp(min=0)], self.explore_new)

    def token_logprobs(self, history: Tensor, items: Tensor) -> Tensor:
        """Teacher-forced log p(code of item | history), summed over digits: the exact score that beam
        search maximises. history [B, L], items [B, M] -> [B, M] float32 (brute force; for checks)."""
        b, m = items.shape
        hidden, mask = self.encode(history)
        labels = self.item_tokens(items).flatten(0, 1)  # [B*M, D]
        dec_in = F.pad(labels[:, :-1], (1, 0), value=PAD)
        out = self.t5.decoder(input_ids=dec_in, encoder_hidden_states=hidden.repeat_interleave(m, 0),
                              encoder_attention_mask=mask.repeat_interleave(m, 0))  # fmt: skip
        logp = self.logits(out.last_hidden_state).float().log_softmax(-1)  # [B*M, D, V]
        return logp.gather(-1, labels[..., None]).squeeze(-1).sum(-1).view(b, m)

    # ----- decoding (used by the beam search) ---------------------------------------------------
    def encode(self, history: Tensor, embeds: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """history [B, L] -> (encoder states [B, S, d_model], mask [B, S]); `embeds` as in `encoder_inputs`."""
        embed, mask = self.encoder_inputs(history, embeds)
        if torch.is_grad_enabled() or self.training:
            return self.t5.encoder(inputs_embeds=embed, attention_mask=mask).last_hidden_state, mask
        return t5_lean.encoder(self.t5.encoder, embed, mask), mask  # decoding: the same encoder by hand

    def logits(self, hidden: Tensor) -> Tensor:
        """Decoder states [..., d_model] -> vocabulary logits [..., V] (T5 scales tied outputs)."""
        if self.t5.config.scale_decoder_outputs:
            hidden = hidden * self.t5.config.d_model**-0.5
        return self.t5.lm_head(hidden)

    def decode_step(self, tokens: Tensor, hidden: Tensor, mask: Tensor) -> Tensor:
        """Log-probs of the next token after decoder inputs `tokens` [M, t] -> [M, V] float32, through the
        transformers decoder on the whole prefix (the reference the cached decoder is checked against)."""
        out = self.t5.decoder(input_ids=tokens, encoder_hidden_states=hidden, encoder_attention_mask=mask)
        return self.logits(out.last_hidden_state[:, -1]).float().log_softmax(-1)

    def start_decoding(self, hidden: Tensor, mask: Tensor) -> DecodeCache:
        """The cache of incremental decoding for encoder states `hidden` [B, S, d] and `mask` [B, S]:
        cross-attention keys/values of every decoder layer, once per user (never copied per beam)."""
        b, s, _ = hidden.shape
        h, dk = self.t5.config.num_heads, self.t5.config.d_kv
        cross = []
        for block in self.t5.decoder.block:
            att = block.layer[1].EncDecAttention
            k, v = (proj(hidden).view(b, s, h, dk).transpose(1, 2) for proj in (att.k, att.v))  # [B, H, S, dk]
            cross.append((k.transpose(2, 3).contiguous(), v))  # keys [B, H, dk, S]: no transposed copy per step
        bias = torch.zeros(b, 1, 1, s, dtype=hidden.dtype, device=hidden.device)  # [B, 1, 1, S] additive mask
        bias.masked_fill_(mask[:, None, None, :] == 0, torch.finfo(hidden.dtype).min)
        first = self.t5.decoder.block[0].layer[0]
        position = first.SelfAttention.compute_bias(self.n_digits, self.n_digits, device=hidden.device)[0]  # [H, D, D]
        # layer 0's self-attention input is a function of the token alone: its q, k, v become a lookup table
        y = first.layer_norm(self.t5.decoder.embed_tokens.weight)  # [V, d]
        att = first.SelfAttention
        qkv = torch.stack([att.q(y), att.k(y), att.v(y)], 1).view(-1, 3, h, dk)  # [V, 3, H, dk]
        # the output layer padded to a multiple of 8 tokens (a 771-wide matmul runs at half the speed of a 776-wide
        # one on CPU); `next_logprobs` sets the padding tokens' logits to -inf, so they add nothing to the normaliser
        weight = self.t5.lm_head.weight  # [V, d]
        cache = DecodeCache(cross, bias, position.transpose(0, 1), qkv)  # position [D, H, D]: query position first
        cache.head = torch.cat([weight, weight.new_zeros(-weight.shape[0] % 8, weight.shape[1])])  # [V', d]
        return cache

    def next_logprobs(self, tokens: Tensor, cache: DecodeCache, span: tuple[int, int] | None = None) -> Tensor:
        """Log-probs of the next token of every beam: tokens [B, W] (each beam's newest decoder input)
        -> [B, W, V] float32, or only the vocabulary rows span = (lo, hi) -> [B, W, hi - lo] (still
        normalised over the whole vocabulary; the beam reads one code level). Extends `cache` by one position.

        The decoder layers of `self.t5` run by hand on the newest position only: the same weights and
        arithmetic as the transformers decoder, without its per-call machinery. Each user's W beams are
        W queries against ONE copy of that user's cross-attention keys/values ([B, H, W, S] scores).
        """
        cfg = self.t5.config
        b, w = tokens.shape
        t = cache.length
        x = self.t5.decoder.embed_tokens(tokens)  # [B, W, d]
        bias = cache.position[t, :, : t + 1]  # [H, t+1] relative position bias of query position t
        for i, block in enumerate(self.t5.decoder.block):
            self_layer, cross_layer, ff = block.layer
            att = self_layer.SelfAttention
            if i == 0:
                q, k, v = cache.first_qkv[tokens].unbind(2)  # [B, W, H, dk]
            else:  # one matmul for q, k and v (their weights stacked once per cache)
                y = t5_lean.rms_norm(self_layer.layer_norm, x)
                q, k, v = F.linear(y, cache.self_qkv(i, att)).view(b, w, 3, cfg.num_heads, cfg.d_kv).unbind(2)
            keys, values = cache.append(i, k, v)  # [t+1, B, W, H, dk]
            score = (q * keys).sum(-1) + bias.T[:, None, None]  # [t+1, B, W, H] (T5 does not scale q.k)
            out = (score.softmax(0)[..., None] * values).sum(0)  # [B, W, H, dk]
            x = x + att.o(out.flatten(2))
            att = cross_layer.EncDecAttention
            q = att.q(t5_lean.rms_norm(cross_layer.layer_norm, x)).view(b, w, cfg.num_heads, cfg.d_kv).transpose(1, 2)
            out = t5_lean.attention(q, *cache.cross[i], cache.bias)  # [B, H, W, dk] against [B, H, S, dk] each user
            x = x + att.o(out.transpose(1, 2).flatten(2))
            x = x + t5_lean.feed_forward(ff.DenseReluDense, t5_lean.rms_norm(ff.layer_norm, x))
        cache.length += 1
        hidden = t5_lean.rms_norm(self.t5.decoder.final_layer_norm, x)
        if cfg.scale_decoder_outputs:  # as `logits`, through the padded output layer of the cache
            hidden = hidden * cfg.d_model**-0.5
        logits = F.linear(hidden, cache.head).float()  # [B, W, V'] (no bias: an addmm would copy it in first)
        v = self.t5.lm_head.weight.shape[0]
        logits[..., v:] = float("-inf")  # the padding tokens
        if logits.requires_grad:  # one fused pass (half the time of a logsumexp)
            logp = logits.log_softmax(-1)
        else:  # decoding: in place, no second [B, W, V'] tensor (a fresh one costs as much as the pass itself)
            logp = torch.log_softmax(logits, -1, out=logits)
        return logp[..., :v] if span is None else logp[..., span[0] : span[1]]

    def trie(self):
        """The trie of this model's item codes (built once per device and code table)."""
        from stages.ids.trie import Trie

        if self._trie is None or self._trie.leaf_item.device != self.codes.device:
            self._trie = Trie(self.codes, self.init_kwargs["vocab_sizes"])
        return self._trie

    @torch.no_grad()
    def recommend(
        self, history: Tensor, *, k: int, sampler: str | None = None, options: Any = None, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-k items by trie-constrained beam search of width `options.beam` (default max(20, k));
        `exclude` [B, M] item ids are never returned. Scores are total code log-probs (with `repeat_head`, of the
        repeat / explore mixture; with `dense_weight`, plus the dense log-prob)."""
        self.check_sampler(sampler)
        return self.search(self, history, self.encode(history), k=k, options=options, exclude=exclude)

    def search(self, decoder: Any, history: Tensor, encoded: tuple[Tensor, Tensor], *, k: int, options: Any = None,
               exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """`recommend` with a given decoder interface (this model, or IDGenRec's soft-ID wrapper) and its encoding
        `encoded` of `history` [B, L] (run once per user): the beam, with the repeat head's mixture inside it and
        the dense head's re-ranking after it when the model has them."""
        from stages.samplers.beam import beam_search

        beam = int(getattr(options, "beam", None) or max(20, k))
        constrained = bool(getattr(options, "constrained", True))
        copy = self.copy_prior(history, encoded[0])
        kw = dict(trie=self.trie(), exclude=exclude, constrained=constrained, encoded=encoded, copy=copy)
        items, scores = beam_search(decoder, history, k=k if self.dense is None else max(k, beam), beam=beam, **kw)
        if copy is not None:  # the mean P(repeat) of these users, for `gdr sample`'s summary
            decoder.sample_stats["repeat_gate"] = float(copy.log_repeat.exp().mean())
        if self.dense is None:
            return items, scores
        dense = self.dense.logprobs(encoded[0][:, -1], self.item_vectors, self.codes.shape[0], items)  # [B, W]
        scores, order = (scores + dense).topk(k, dim=1)  # product of the experts, re-ranked
        return items.gather(1, order), scores


class DecodeCache:
    """Keys/values of incremental decoding (`Tiger.start_decoding`).

    cross[i]: layer i's cross-attention (keys [B, H, dk, S], values [B, H, S, dk]), one copy per user;
    bias: [B, 1, 1, S] additive encoder mask; position: [D, H, D] relative position bias (query first);
    first_qkv: [V, 3, H, dk] layer 0's self-attention query, key, value of every token;
    head: [V', d] the output layer padded with zero rows to V' (a multiple of 8) tokens;
    selves[i]: layer i's self-attention (keys, values) [t, B, W, H, dk] of the t positions decoded so far.
    """

    def __init__(self, cross: list[tuple[Tensor, Tensor]], bias: Tensor, position: Tensor, first_qkv: Tensor):
        self.cross, self.bias, self.position, self.first_qkv = cross, bias, position, first_qkv
        self.head = cross[0][0].new_zeros(0, 0)  # the padded output layer (set by `Tiger.start_decoding`)
        self.selves: list[tuple[Tensor, Tensor] | None] = [None] * len(cross)
        self.stacked: dict[int, Tensor] = {}  # layer -> stacked self-attention q, k, v weights
        self.buffers: list[Tensor | None] = [None] * len(cross)  # per layer [2, D, B, W, H, dk], filled up to length
        self.spares: list[Tensor | None] = [None] * len(cross)  # per layer a buffer of the same shape to reorder into
        self.length = 0

    def self_qkv(self, i: int, att: Any) -> Tensor:
        """Layer i's self-attention q, k, v weights stacked -> [3 * H * dk, d] (made once per cache)."""
        if i not in self.stacked:
            self.stacked[i] = torch.cat([att.q.weight, att.k.weight, att.v.weight])
        return self.stacked[i]

    def append(self, i: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the newest position's k, v [B, W, H, dk] to layer i -> all keys, values [t+1, B, W, H, dk].
        Written in place into a position-major buffer of every position (no concatenation of the past)."""
        b, w, h, dk = k.shape
        t = self.length
        buf = self.buffers[i]
        if buf is None or buf.shape[3] != w:  # the beam width changed (after the first step): a new buffer
            new = k.new_empty(2, self.position.shape[0], b, w, h, dk)
            if t:
                past = self.selves[i]
                assert past is not None
                new[0, :t], new[1, :t] = past  # [t, B, W, H, dk] each, already reordered
            buf = self.buffers[i] = new
        buf[0, t], buf[1, t] = k, v
        self.selves[i] = (buf[0, : t + 1], buf[1, : t + 1])
        return self.selves[i]  # type: ignore[return-value]

    def reorder(self, parent: Tensor) -> None:
        """Keep, for each user, the beams `parent` [B, W'] (indices into the current W beams)."""
        user = torch.arange(parent.shape[0], device=parent.device)[:, None]
        for i, kv in enumerate(self.selves):
            if kv is None:
                continue
            buf = self.buffers[i]
            t = kv[0].shape[0]
            assert buf is not None
            if buf.shape[3] == parent.shape[1]:  # same width: gather the beams' rows into the spare buffer
                w = parent.shape[1]  # index_select over (user, beam) rows: ~10x an advanced-index gather
                rows, new = (user * w + parent).flatten(), self.spares[i]
                if buf.requires_grad:  # (the soft-ID bridge trains through decoding: no out= there)
                    new = buf.flatten(2, 3).index_select(2, rows).view_as(buf)
                else:  # only the t positions decoded so far: keys and values are each one contiguous block
                    new = torch.empty_like(buf) if new is None or new.shape != buf.shape else new
                    for src, dst in zip(kv, (new[0, :t], new[1, :t]), strict=True):
                        torch.index_select(src.flatten(1, 2), 1, rows, out=dst.flatten(1, 2))
                self.buffers[i], self.spares[i] = new, buf  # the old buffer is the next spare (no new allocation)
                self.selves[i] = (new[0, :t], new[1, :t])
            else:  # width changes: plain tensors, a buffer of the new width is made at the next append
                self.selves[i] = (kv[0][:, user, parent], kv[1][:, user, parent])


def _drop_tied(module: Tiger, state: dict[str, Tensor], prefix: str, local_metadata: Any) -> None:
    for key in TIED:
        state.pop(prefix + key, None)


def _restore_tied(module: Tiger, state: dict[str, Tensor], prefix: str, *args: Any) -> None:
    shared = state.get(prefix + "t5.shared.weight")
    if shared is not None:
        for key in TIED:
            state.setdefault(prefix + key, shared)


@torch.no_grad()
def init_t5(t5: Any, sizes: dict[str, Any], gen: torch.Generator) -> None:
    """T5's initialisation (Mesh TensorFlow scales) of every weight of `t5`, drawn from `gen`
    (sizes: d_model, d_kv, n_heads, d_ff). Shared by tiger and the textual-ID generator."""
    d, kv, h, ff = (sizes[k] for k in ("d_model", "d_kv", "n_heads", "d_ff"))
    for name, p in t5.named_parameters():
        leaf = name.rsplit(".", 2)[-2]
        std = {
            "shared": 1.0, "q": (d * kv) ** -0.5, "k": d**-0.5, "v": d**-0.5, "o": (h * kv) ** -0.5,
            "wi": d**-0.5, "wi_0": d**-0.5, "wi_1": d**-0.5, "wo": ff**-0.5,
            "relative_attention_bias": d**-0.5, "lm_head": d**-0.5,
        }.get(leaf)  # fmt: skip
        if std is None:  # layer norms
            p.fill_(1.0)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def pretrained_sizes(folder: Path) -> dict[str, Any]:
    """The architecture of a local T5 checkpoint, as `Tiger` sizes (so the run rebuilds without it)."""
    from transformers import T5Config

    try:
        cfg = T5Config.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GdrError(f"not a T5 checkpoint: {first}", where=str(folder),
                       fix="give a local folder with a T5 config.json and weights (no download is made)") from None  # fmt: skip
    if cfg.model_type != "t5":
        raise GdrError(
            f"checkpoint is a {cfg.model_type!r} model, not T5", where=str(folder), fix="use a T5 checkpoint"
        )
    return dict(d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff, n_heads=cfg.num_heads, n_layers=cfg.num_layers,
                n_decoder_layers=cfg.num_decoder_layers, feed_forward=cfg.feed_forward_proj,
                scale_outputs=bool(cfg.scale_decoder_outputs))  # fmt: skip


def corrupting_tiger(codes: Tensor, vocab_sizes: list[int], cfg: Any, other: Any, *, vocab_kind: str = "digits",
                     **kwargs: Any) -> Tiger:  # fmt: skip
    """A tiger with corruption training (`cfg`: a `TigerConfig` with use_diffusion 1) whose cross-view tokens
    and frozen KL partner come from `other` (`stages.models.other_view.OtherView`). Codes: the pool becomes
    extra input embeddings; textual IDs (`vocab_kind` 'shared'): ids of the word vocabulary, specials protected."""
    from stages.models.tiger_corruption import corruption_kwargs, text_first_token

    text = vocab_kind == "shared"
    n_cross = 0 if text else len(other.pool)
    first = text_first_token() if text else FIRST_CODE_TOKEN
    model = Tiger.from_codes(codes, vocab_sizes, vocab_kind=vocab_kind, corruption=corruption_kwargs(cfg, n_cross, first),
                             **kwargs)  # fmt: skip
    assert model.corruption is not None
    if text:
        model.corruption.set_vocab_pool(other.pool)
    else:
        model.corruption.cross_tokens.copy_(other.pool)
    model.corruption.set_other(other.model)
    return model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class TigerFamily(ModelFamily):
    """tiger in the train flow: every prefix of the training sequences, validation by beam search."""

    kind = "tiger"
    config = TigerConfig
    train_config = TigerTrainConfig
    needs_ids = True
    default_max_len = 20

    def prepare(self, data: FamilyData, cfg: TigerConfig, paths: Any, processed: Any) -> dict[str, Any]:
        """Corruption training: load the other view (run or ID set) into `data.extra`; its manifest refs."""
        if not cfg.use_diffusion:
            return {}
        from gdr_cli.console import console
        from stages.models.other_view import resolve

        assert data.codes is not None
        other = resolve(paths, cfg, view=data.view, this_codes=data.codes, words=data.tokens)
        for note in other.notes:
            console.print(note)
        data.extra["other_view"] = other
        return dict(other.inputs)

    def build(self, data: FamilyData, cfg: TigerConfig) -> Tiger:
        assert data.codes is not None and data.vocab_sizes is not None
        from stages.models.tiger_corruption import CORRUPTION_KEYS

        sizes = cfg.model_dump(exclude={"init", "beam", "train", *CORRUPTION_KEYS})
        kind = "shared" if data.id_kind == "text" else "digits"
        if not cfg.use_diffusion:
            return Tiger.from_codes(
                data.codes, data.vocab_sizes, init=cfg.init, seed=data.seed, vocab_kind=kind, **sizes
            )
        other = data.extra.get("other_view")
        if other is None:  # build without the flow's prepare (tests): load it now
            self.prepare(data, cfg, data.paths, data.processed)
            other = data.extra["other_view"]
        return corrupting_tiger(data.codes, data.vocab_sizes, cfg, other, init=cfg.init, seed=data.seed,
                                vocab_kind=kind, **sizes)  # fmt: skip

    def examples(self, data: FamilyData, cfg: TigerConfig) -> dict[str, Tensor]:
        from stages.data.sequences import training_examples

        ex = training_examples(data.splits, data.max_len)
        return {"history": ex["history"], "target": ex["target"]}

    def validation_options(self, cfg: TigerConfig) -> tuple[str | None, Any]:
        from stages.config.sample import SampleConfig

        return "beam", SampleConfig(beam=cfg.beam, k=10)
