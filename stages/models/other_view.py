"""The other view of corruption training (`use_diffusion: 1`): its run or ID set, checked and loaded.

One place for every recommender that corrupts its input (tiger on codes through `train-rec`, the
textual-ID recommender of `train-gen` / `train`):

    other_view_run   a tiger run of the other view of the same dataset: its codes give the cross-view
                     tokens and, frozen, it is the other side of the KL term (when lambda_kl > 0)
    other_view_ids   an ID set of the other view: cross-view tokens only
    neither          a single view: corrupted tokens become random tokens (said once by the caller)

Cross-view tokens (`OtherView.pool`) depend on the ID kind:
    codes  two ID sets number their digits independently, so every code token of the other view is
           exclusive: the pool is the other view's token ids in ITS vocabulary (extra input embeddings)
    text   both views write words of one tokenizer: the pool is the shared-vocabulary token ids of the
           words in the other view's current IDs that occur in none of this view's IDs
Whatever was read is returned as manifest input refs (`OtherView.inputs`), so a run names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from gdr_cli.manifest import InputRef, input_ref, read_manifest
from stages.models.tiger_corruption import FIRST_CODE_TOKEN, code_token_ids

if TYPE_CHECKING:
    from stages.models.tiger import Tiger


@dataclass
class OtherView:
    """pool: [K] int64 cross-view token ids (empty = random tokens only); model: the frozen other-view
    recommender of the KL term (None = no KL); inputs: manifest refs by role; notes: what to tell the user."""

    pool: Tensor
    model: Tiger | None = None
    inputs: dict[str, InputRef] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def other_name(view: str) -> str:
    return "social" if view == "item" else "item"


def exclusive_tokens(this_codes: Tensor, other_codes: Tensor) -> Tensor:
    """Shared-vocabulary token ids [K] (sorted) of the words in `other_codes` [M, D] that occur nowhere
    in `this_codes` [N, D] (word ids; token = 2 + word id)."""
    this, other = torch.unique(torch.as_tensor(this_codes)), torch.unique(torch.as_tensor(other_codes))
    return other[~torch.isin(other, this)].to(torch.int64) + FIRST_CODE_TOKEN


def resolve(paths: Any, cfg: Any, *, view: str, this_codes: Tensor, words: list[str] | None) -> OtherView:
    """The other view of a run of `view` from `cfg` (a `TigerConfig`: other_view_run, other_view_ids,
    lambda_kl); `words` = this view's word list for textual IDs, None for codes."""
    other = other_name(view)
    if cfg.other_view_run and cfg.other_view_ids:
        raise GdrError("both other_view_run and other_view_ids are set",
                       fix="give one: the run's ID set is the other view's vocabulary")  # fmt: skip
    if cfg.other_view_run:
        model, ref, other_words = load_run(paths, cfg.other_view_run, view=view, text=words is not None)
        _same_words(words, other_words, f"run {cfg.other_view_run!r}", str(paths.run(cfg.other_view_run)))
        pool = _pool(this_codes, model.codes, model.init_kwargs["vocab_sizes"], text=words is not None)
        out = OtherView(pool, model if cfg.lambda_kl > 0 else None, {"other_view_run": ref})
    elif cfg.other_view_ids:
        from stages.ids.codeset import load_codeset

        codeset, manifest = load_codeset(paths, cfg.other_view_ids, view=other)
        folder = paths.ids(cfg.other_view_ids)
        _same_kind(codeset.kind == "text", words is not None, f"ID set {cfg.other_view_ids!r}", str(folder))
        _same_words(words, codeset.tokens, f"ID set {cfg.other_view_ids!r}", str(folder))
        pool = _pool(this_codes, codeset.as_tensor(), list(codeset.vocab_sizes), text=words is not None)
        out = OtherView(pool, None, {"other_view_ids": input_ref(folder, paths.root, manifest)})
        if cfg.lambda_kl > 0:
            out.notes.append("corruption: no other-view run (other_view_run): no KL term")
    else:
        out = OtherView(torch.zeros(0, dtype=torch.int64))
        out.notes.append(
            "corruption: single view (no other_view_run / other_view_ids): corrupted tokens become random tokens"
        )
        if cfg.lambda_kl > 0:
            out.notes.append("corruption: no other-view run (other_view_run): no KL term")
    if (cfg.other_view_run or cfg.other_view_ids) and out.pool.numel() == 0:
        out.notes.append(f"corruption: the {other} view's IDs use no word outside this view's IDs: random tokens")
    return out


def load_run(paths: Any, name: str, *, view: str, text: bool) -> tuple[Tiger, InputRef, list[str] | None]:
    """The frozen tiger run `name` of the other view of `view` in `paths.dataset`, its manifest ref and (for
    textual IDs) its word list; a missing run, another dataset's, another view's or another ID kind's is a
    one-line `GdrError`."""
    from stages.models.registry import load_model

    other = other_name(view)
    folder = paths.run(name)
    fix = (f"train it first: gdr train-rec {paths.dataset} --model tiger --view {other} --ids NAME --run {name}"
           if not text else f"train it first: gdr train-gen {paths.dataset} --view {other}, and give its "
           f"rec-{other}-round<r> run")  # fmt: skip
    if not (folder / "model.json").is_file() or not (folder / "manifest.json").is_file():
        raise GdrError(f"no run {name!r} for the other view", where=str(folder), fix=fix)
    manifest = read_manifest(folder, what=f"run {name!r}", fix=fix)
    if manifest.dataset != paths.dataset:
        raise GdrError(f"run {name!r} was trained on dataset {manifest.dataset!r}, not {paths.dataset!r}",
                       where=str(folder), fix=fix)  # fmt: skip
    model, meta = load_model(folder)
    if model.kind != "tiger":
        raise GdrError(f"run {name!r} is a {model.kind!r} model, not tiger", where=str(folder), fix=fix)
    if meta.get("view", "item") == view:
        raise GdrError(f"run {name!r} is of the {view} view, the same as this run", where=str(folder), fix=fix)
    _same_kind(model.init_kwargs.get("vocab_kind") == "shared", text, f"run {name!r}", str(folder))
    words = None
    if text:
        from stages.ids.codeset import CodeSet

        ids = paths.ids(str(meta.get("ids")))
        if not (ids / "codes.parquet").is_file():
            raise GdrError(f"the ID set of run {name!r} ({meta.get('ids')!r}) is missing", where=str(ids), fix=fix)
        words = CodeSet.load(ids).tokens
    return model, input_ref(folder, paths.root, manifest), words  # type: ignore[return-value]


def _pool(this_codes: Tensor, other_codes: Tensor, other_vocab: list[int], *, text: bool) -> Tensor:
    if text:
        return exclusive_tokens(this_codes, other_codes)
    return code_token_ids(other_codes, other_vocab)


def _same_kind(other_text: bool, text: bool, what: str, where: str) -> None:
    if other_text != text:
        kinds = ("textual IDs", "codes")
        raise GdrError(f"{what} is over {kinds[not other_text]}, this run over {kinds[not text]}", where=where,
                       fix="give the other view's run or ID set of the same ID kind")  # fmt: skip


def _same_words(words: list[str] | None, other: list[str] | None, what: str, where: str) -> None:
    if words is not None and other != words:
        raise GdrError(f"{what} has another word vocabulary than this run's IDs", where=where,
                       fix="train both views with one tokenizer (`gdr train --view both`, or the same tokenizer settings)")  # fmt: skip
