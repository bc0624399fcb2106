"""The word vocabulary of textual IDs: a word-level tokenizer trained offline on the dataset's text.

`tokenizers` (Hugging Face's Rust library, a transformers dependency) learns it from the texts
alone: lower-cased, punctuation turned into spaces, split on whitespace, the `vocab_size` most
frequent words seen at least `min_frequency` times. Specials first: 0 = [PAD] (also the decoders'
start token), 1 = [UNK], 2 = [EMPTY] (the whole input of a text-less item). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gdr_cli.errors import GdrError

SPECIALS = ("[PAD]", "[UNK]", "[EMPTY]")
PAD, UNK, EMPTY = 0, 1, 2
FILE = "tokenizer.json"


def train_tokenizer(texts: list[str], *, vocab_size: int, min_frequency: int) -> Any:
    """A WordLevel `tokenizers.Tokenizer` learned from `texts` (specials first, then words by frequency)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token=SPECIALS[UNK]))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]|_"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(folder: Path) -> Any:
    from tokenizers import Tokenizer

    path = Path(folder) / FILE
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on unreadable files
        raise GdrError(f"unreadable tokenizer: {exc}", where=str(path), fix="retrain with `gdr train-gen`") from None


def words(tok: Any) -> list[str]:
    """The vocabulary as a list: word id -> word."""
    vocab = tok.get_vocab()
    out = [""] * len(vocab)
    for word, i in vocab.items():
        out[i] = word
    return out


def encode_texts(tok: Any, texts: list[str], max_len: int) -> Tensor:
    """Word ids of each text, cut to `max_len`, right-padded with PAD; an empty text is [EMPTY].
    -> [N, max_len] int64."""
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=PAD, pad_token=SPECIALS[PAD], length=max_len)
    try:
        out = torch.tensor([enc.ids for enc in tok.encode_batch(texts)], dtype=torch.int64).view(len(texts), max_len)
    finally:
        tok.no_truncation()
        tok.no_padding()
    out[:, 0] = torch.where((out == PAD).all(1), EMPTY, out[:, 0])
    return out
