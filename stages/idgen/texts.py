"""What the ID generator reads, and what it first learns to write.

Item view: an item's text from `items.parquet` (title, categories, ... whatever the source has).
Social view: a user's profile text, the texts of the last `profile_items` items of their training
sequence (`splits.parquet`, so validation and test items never leak into an ID), oldest first.
An entity with no text reads the single token [EMPTY]; its ID comes out of the same beam search
and the clash resolution makes it unique (both counted in the manifest).

The generator's first round learns to write each entity's keywords: its `id_len` distinct words
of highest TF-IDF (term count in the text x log(N / document frequency)), ties by first position;
a text with fewer distinct words repeats them in that order. [EMPTY] texts have no target.
"""

from __future__ import annotations

import polars as pl
import torch
from torch import Tensor

from stages.idgen.tokenizer import PAD, SPECIALS
from stages.inputs import Processed


def item_texts(processed: Processed) -> list[str]:
    """Text of every item in id order ('' where the source has none)."""
    items = processed.table("items").sort("item")
    return items["text"].fill_null("").to_list()


def profile_texts(processed: Processed, texts: list[str], profile_items: int) -> list[str]:
    """Profile text of every user in id order: the texts of their last `profile_items` training items."""
    splits = processed.table("splits").select("user", pl.col("train").list.tail(profile_items))
    item_text = pl.DataFrame({"item": pl.Series(range(len(texts)), dtype=pl.Int32), "text": texts})
    rows = (
        splits.explode("train")
        .with_row_index("pos")
        .join(item_text, left_on="train", right_on="item", how="left")
        .sort("pos")
        .group_by("user", maintain_order=True)
        .agg(pl.col("text").fill_null("").str.join(" "))
    )
    users = processed.table("users").select("user").sort("user")
    return users.join(rows, on="user", how="left")["text"].fill_null("").to_list()


def keyword_targets(text: Tensor, id_len: int) -> tuple[Tensor, Tensor]:
    """First-round targets. text [N, T] word ids -> (targets [N, id_len] int64, has_target [N] bool)."""
    n, t = text.shape
    word = text >= len(SPECIALS)  # real words (not PAD / UNK / EMPTY)
    same = (text[:, :, None] == text[:, None, :]) & word[:, :, None] & word[:, None, :]  # [N, T, T]
    tf = same.sum(2).float()  # [N, T] count of the word at each position within its text
    earlier = torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=-1)
    first = word & ~(same & earlier).any(2)  # first occurrence of each distinct word
    vocab = int(text.max()) + 1 if text.numel() else 1
    df = torch.zeros(vocab).index_add_(0, text[first], torch.ones(int(first.sum())))
    idf = torch.log(n / df.clamp(min=1))
    score = torch.where(first, tf * idf[text] + 1e-6, -1.0)  # +eps: a word in every text still beats no word
    order = torch.argsort(score, dim=1, descending=True, stable=True)  # ties: first position
    n_distinct = first.sum(1)  # [N]
    slot = torch.arange(id_len)[None, :] % n_distinct.clamp(min=1)[:, None]  # cycle when fewer distinct words
    targets = text.gather(1, order.gather(1, slot))
    has = n_distinct > 0
    return torch.where(has[:, None], targets, PAD), has
