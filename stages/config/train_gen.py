"""Config of `gdr train-gen` (IDGenRec's textual IDs and alternating rounds) and of `gdr train`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gdr_cli.config import StageConfig
from stages.config.train_rec import TigerConfig
from stages.config.training import TrainLoopConfig


class TokenizerConfig(StageConfig):
    """The word vocabulary, learned offline from the dataset's item text (`tokenizers`, no download)."""

    vocab_size: int = Field(
        8000,
        ge=8,
        description="Most words kept (plus 3 specials); 8000 covers every word of Last.fm 2K's kept artist names.",
    )
    min_frequency: int = Field(
        1,
        ge=1,
        description="Fewest occurrences of a kept word; 1 keeps rare names (an artist's own name is often its only word).",
    )
    max_text_len: int = Field(
        32,
        ge=1,
        description="Words of an entity's text the generator reads (longer texts are cut); 32 holds ten artist names of a user profile.",
    )


class GenTrainConfig(TrainLoopConfig):
    """The shared loop's settings for the generator's rounds (validated once per epoch, no early stop)."""

    lr: float = Field(
        1e-3, gt=0, description="Peak AdamW learning rate of the generator; 1e-3 suits a small T5 from scratch."
    )
    batch_size: int = Field(
        128, ge=1, description="Examples per step: entities (first round) or recommendation prefixes (later rounds)."
    )
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up steps; 20 is short because a round is short.")
    patience: int = Field(0, ge=0, description="0 = no early stopping: a round runs its --id-epochs.")


class GeneratorConfig(StageConfig):
    """Sizes of the ID generator (a T5 encoder-decoder over the word vocabulary)."""

    d_model: int = Field(
        64, ge=8, description="Width of embeddings and hidden states (64, as tiger's default: small data, CPU)."
    )
    d_kv: int = Field(16, ge=4, description="Width of each attention head (d_model / n_heads).")
    d_ff: int = Field(256, ge=8, description="Hidden width of the feed-forward blocks (4 x d_model).")
    n_heads: int = Field(4, ge=1, description="Attention heads per layer.")
    n_layers: int = Field(2, ge=1, description="Encoder layers (texts are a few dozen words).")
    n_decoder_layers: int = Field(2, ge=1, description="Decoder layers (IDs are a few words).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout of the generator, as T5's 0.1.")
    init: str | None = Field(
        None,
        description="Local pretrained T5 folder to start from (its architecture replaces the sizes; its embeddings are cut to the word vocabulary); None = from scratch.",
    )
    generate_batch_size: int = Field(256, ge=1, description="Entities per beam-search call when (re)generating IDs.")
    train: GenTrainConfig = Field(
        default_factory=lambda: GenTrainConfig(), description="The generator's training loop."
    )


class TrainGenConfig(StageConfig):
    view: Literal["item", "social"] = Field(
        "item",
        description="Whose IDs: 'item' (item text) or 'social' (users, from a profile text made of their training items' text).",
    )
    rounds: int = Field(
        2, ge=1,
        description="Rounds. Round 1: the generator learns to write each entity's TF-IDF keywords, IDs are generated, the "
        "recommender is trained on them. Round r > 1: the generator learns from the frozen recommender, IDs are regenerated, "
        "the recommender trains on them with the generator frozen. 2 is one alternation, short enough for a CPU.",
    )  # fmt: skip
    id_len: int = Field(
        3,
        ge=1,
        description="Words per ID (fixed length, so IDs fit the recommender's trie); 3 words are short yet leave room for unique phrases.",
    )
    id_epochs: int = Field(
        1,
        ge=1,
        description="Generator epochs per round r > 1 (passes over the recommendation prefixes, recommender frozen); 1 keeps a CPU round short.",
    )
    id_max_steps: int | None = Field(
        None, ge=1,
        description="Most generator steps of each round r > 1 (the soft-ID phase, whose epoch is one pass over the "
        "recommendation prefixes): a fixed cut for short runs that, unlike a wall-clock budget, gives the same IDs "
        "on any machine; unset = the whole --id-epochs.",
    )  # fmt: skip
    keyword_epochs: int = Field(
        20, ge=1,
        description="Generator epochs of round 1 (learning each entity's keywords from its text); an epoch is one pass over "
        "the entities, far fewer steps than a recommendation epoch: 20 are seconds and leave few clashes.",
    )  # fmt: skip
    rec_epochs: int = Field(2, ge=1, description="Recommender epochs per round (tiger's CPU default).")
    beams: int = Field(
        10,
        ge=1,
        description="Candidate IDs per entity from beam search; a clash moves an entity to its next beam (10 resolves all clashes seen on Last.fm 2K).",
    )
    diversity: float = Field(
        1.0,
        ge=0,
        description="Diverse beam search (IDGenRec's diverse ID generation): each of the `beams` groups pays this much log-prob "
        "per earlier group that chose the same word at the same step, so an entity's candidate IDs differ and a clash has "
        "real alternatives; 0 = plain beam search. 1 outweighs the typical gap between a small generator's top words.",
    )
    anchor: float = Field(
        1.0,
        ge=0,
        description="Weight of the generator's cross-entropy on the current IDs, added to the recommender's loss in rounds "
        "r > 1: it keeps the word distributions peaked so regenerated IDs stay distinct (with 0 the soft-ID loss alone "
        "flattened them on Last.fm 2K and 1127 of 1152 users fell back to the clash rule); 1 weighs both losses alike.",
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="Softmax temperature of the generator's word distribution read as soft IDs by the recommender (1 = IDGenRec's plain probabilities).",
    )
    profile_items: int = Field(
        10, ge=1, description="Social view: training items whose text makes a user's profile (the most recent ones)."
    )
    max_len: int = Field(
        20, ge=1, description="History items fed to the recommender (PROTOCOL.md: 20 for ID-generative models)."
    )
    seed: int = Field(42, description="Seed of initialisation, data order and dropout; same seed, same run.")
    name_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9_.-]*$",
        description="Prefix of every run and ID-set name of the rounds ('kl-' writes runs/kl-rec-item-round1, "
        "ids/kl-gen-item-round1, runs/kl-train-item), so variants share one data root and one `gdr evaluate` "
        "table; '' = the plain names.",
    )  # fmt: skip
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Word vocabulary of the IDs.")
    generator: GeneratorConfig = Field(
        default_factory=GeneratorConfig, description="ID generator sizes and training loop."
    )
    recommender: TigerConfig = Field(
        default_factory=TigerConfig,
        description="The textual-ID recommender: tiger's sizes, training loop (max_epochs = --rec-epochs) and corruption "
        "training (use_diffusion, ...: as tiger's, over the shared word vocabulary; with --view both the other view "
        "is the other session, alone other_view_run / other_view_ids name a textual run / ID set of the other view).",
    )
