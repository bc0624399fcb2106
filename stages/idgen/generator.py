"""The ID generator: a T5 encoder-decoder that reads an entity's text and writes its ID, `id_len`
words of the dataset's word vocabulary (IDGenRec's ID generator, here fixed-length so the IDs fit
the recommender's trie of equal-length codes).

    text   [U, T] word ids (PAD right-padded; a text-less entity reads [EMPTY])
    ID     [U, id_len] word ids, never a special token (PAD / UNK / EMPTY are masked out)

Built from a config and trained from scratch (seeded T5 initialisation, as tiger's), or from a
local pretrained T5 (`init`): its weights, the token embeddings cut or extended to this vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.idgen.tokenizer import PAD, SPECIALS
from stages.models.tiger import Tiger, _drop_tied, _restore_tied, init_t5, pretrained_sizes, t5_config

NEG_INF = float("-inf")


class IdGenerator(nn.Module):
    kind = "idgen"

    def __init__(self, *, n_words: int, id_len: int, d_model: int = 64, d_kv: int = 16, d_ff: int = 256, n_heads: int = 4,
                 n_layers: int = 2, n_decoder_layers: int = 2, dropout: float = 0.1, feed_forward: str = "relu",
                 scale_outputs: bool = True, seed: int = 0):  # fmt: skip
        super().__init__()
        sizes = dict(d_model=d_model, d_kv=d_kv, d_ff=d_ff, n_heads=n_heads, n_layers=n_layers,
                     n_decoder_layers=n_decoder_layers, dropout=dropout, feed_forward=feed_forward,
                     scale_outputs=scale_outputs)  # fmt: skip
        self.init_kwargs: dict[str, Any] = dict(n_words=n_words, id_len=id_len, seed=seed, **sizes)
        from transformers import T5ForConditionalGeneration

        self.vocab_size, self.id_len = n_words, id_len
        with torch.random.fork_rng(devices=[]):  # T5's own init draws from the global RNG; keep it untouched
            self.t5 = T5ForConditionalGeneration(t5_config(n_words, **sizes))
        init_t5(self.t5, self.init_kwargs, torch.Generator().manual_seed(seed))  # tiger's T5 initialisation
        self.register_state_dict_post_hook(_drop_tied)
        self.register_load_state_dict_pre_hook(_restore_tied)

    @classmethod
    def create(cls, *, n_words: int, id_len: int, init: str | Path | None, seed: int, **sizes: Any) -> IdGenerator:
        """A generator from scratch, or from the local T5 checkpoint `init` (its architecture wins)."""
        if init is not None:
            sizes = {**sizes, **pretrained_sizes(Path(init))}
        model = cls(n_words=n_words, id_len=id_len, seed=seed, **sizes)
        if init is not None:
            Tiger.load_pretrained(model, Path(init))  # type: ignore[arg-type]
        return model

    def word_logits(self, text: Tensor, ids: Tensor) -> Tensor:
        """Teacher-forced next-word logits of the IDs `ids` [U, L] given `text` [U, T] -> [U, L, W] float32,
        specials at -inf (an ID is made of words only)."""
        dec = F.pad(ids[:, :-1], (1, 0), value=PAD)  # [U, L] starts with the decoder start token
        out = self.t5(input_ids=text, attention_mask=(text != PAD).long(), decoder_input_ids=dec)
        return _mask_specials(out.logits.float())

    @torch.no_grad()
    def beam(self, text: Tensor, *, beams: int, diversity: float = 0.0) -> tuple[Tensor, Tensor]:
        """The `beams` most likely IDs of each text by beam search over `id_len` words.

        text [U, T] -> (ids [U, B, L] int64, distinct per row, best first; scores [U, B] float32 total log-probs).
        Every step is one decoder call on all rows and beams at once (L is a few words: no cache needed).
        `diversity` > 0: diverse (group) beam search instead, one beam per group (see `_diverse`).
        """
        u = text.shape[0]
        mask = (text != PAD).long()
        hidden = self.t5.encoder(input_ids=text, attention_mask=mask).last_hidden_state  # [U, T, d]
        if diversity > 0:
            return self._diverse(hidden, mask, beams, diversity)
        width = 1
        seqs = torch.full((u, 1, 1), PAD, dtype=torch.int64, device=text.device)  # [U, W', t] decoder inputs
        scores = torch.zeros(u, 1, device=text.device)
        w = self.vocab_size
        for _ in range(self.id_len):
            out = self.t5.decoder(input_ids=seqs.flatten(0, 1), encoder_hidden_states=hidden.repeat_interleave(width, 0),
                                  encoder_attention_mask=mask.repeat_interleave(width, 0))  # fmt: skip
            logp = self.t5.lm_head(_scaled(self, out.last_hidden_state[:, -1])).float()
            logp = _mask_specials(logp).log_softmax(-1).view(u, width, w)  # [U, W', W]
            cand = (scores[:, :, None] + logp).view(u, width * w)
            scores, idx = cand.topk(min(beams, width * (w - len(SPECIALS))), dim=1)  # [U, B']
            parent, word = idx // w, idx % w
            seqs = torch.cat([seqs.gather(1, parent[..., None].expand(-1, -1, seqs.shape[2])), word[..., None]], 2)
            width = scores.shape[1]
        return seqs[:, :, 1:], scores

    def _next_logprobs(self, seqs: Tensor, hidden: Tensor, mask: Tensor) -> Tensor:
        """Word log-probs after each prefix. seqs [U, G, t], hidden [U, T, d] -> [U, G, W] float32."""
        u, g, _ = seqs.shape
        out = self.t5.decoder(input_ids=seqs.flatten(0, 1), encoder_hidden_states=hidden.repeat_interleave(g, 0),
                              encoder_attention_mask=mask.repeat_interleave(g, 0))  # fmt: skip
        logp = self.t5.lm_head(_scaled(self, out.last_hidden_state[:, -1])).float()
        return _mask_specials(logp).log_softmax(-1).view(u, g, -1)

    def _diverse(self, hidden: Tensor, mask: Tensor, groups: int, diversity: float) -> tuple[Tensor, Tensor]:
        """Diverse beam search with one beam per group (Hamming diversity): at every step group j takes the
        word maximising its log-prob minus `diversity` x (times groups 0..j-1 chose that word at this step),
        so candidate IDs differ from their first word on. -> (ids [U, G, L] best total log-prob first, scores [U, G])."""
        u = hidden.shape[0]
        rows = torch.arange(u, device=hidden.device)
        seqs = torch.full((u, groups, 1), PAD, dtype=torch.int64, device=hidden.device)
        scores = torch.zeros(u, groups, device=hidden.device)
        for _ in range(self.id_len):
            logp = self._next_logprobs(seqs, hidden, mask)  # [U, G, W] one decoder call for all groups
            counts = torch.zeros(u, self.vocab_size, device=hidden.device)
            picks = []
            for j in range(groups):  # groups are sequential by definition (each sees the earlier ones' words)
                pick = (logp[:, j] - diversity * counts).argmax(-1)  # [U]
                counts[rows, pick] += 1
                picks.append(pick)
            word = torch.stack(picks, 1)  # [U, G]
            scores = scores + logp.gather(2, word[..., None]).squeeze(-1)
            seqs = torch.cat([seqs, word[..., None]], 2)
        order = scores.argsort(dim=1, descending=True, stable=True)
        ids = seqs[:, :, 1:].gather(1, order[..., None].expand(-1, -1, self.id_len))
        return ids, scores.gather(1, order)


def _scaled(model: IdGenerator, hidden: Tensor) -> Tensor:
    """T5 scales tied output embeddings by d_model^-0.5 before the LM head."""
    cfg = model.t5.config
    return hidden * cfg.d_model**-0.5 if cfg.scale_decoder_outputs else hidden


def _mask_specials(logits: Tensor) -> Tensor:
    """-inf on the special tokens (the first len(SPECIALS) ids). logits: [..., W]."""
    return torch.cat([torch.full_like(logits[..., : len(SPECIALS)], NEG_INF), logits[..., len(SPECIALS) :]], -1)


def generate_all(
    model: IdGenerator, text: Tensor, *, beams: int, batch_size: int, diversity: float = 0.0
) -> tuple[Tensor, Tensor]:
    """`beam` over all entities in batches: text [N, T] -> (ids [N, B, L], scores [N, B]) on the CPU."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    parts = [
        model.beam(text[lo : lo + batch_size].to(dev), beams=beams, diversity=diversity)
        for lo in range(0, text.shape[0], batch_size)
    ]
    model.train(was)
    return torch.cat([p[0].cpu() for p in parts]), torch.cat([p[1].cpu() for p in parts])
