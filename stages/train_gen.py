"""`gdr train-gen`: IDGenRec's textual IDs for one view, trained in alternating rounds.

    tokenizer   word vocabulary learned offline from the items' text (shared by both views)
    round 1     generator learns each entity's TF-IDF keywords -> IDs generated (unique) ->
                tiger (on the word vocabulary) trained on them
    round r>1   generator learns from the frozen recommender through soft IDs -> IDs regenerated ->
                recommender trained on the new IDs (continuing from round r-1), generator frozen

Every round writes ordinary artifacts: the generator `runs/gen-<who>-round<r>/` (weights, tokenizer,
log, manifest), its IDs `ids/gen-<who>-round<r>/` (a textual ID set) and the recommender
`runs/rec-<view>-round<r>/` (a tiger run: `gdr sample` / `gdr evaluate` take it like any other);
<who> is 'item' or 'friend' (the users' IDs of the social view). `--resume` continues at the first
round without both runs, inside a phase from its checkpoint (`runs/.<run>.work/`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import atomic_path, atomic_write_json, staged_dir, write_parquet
from gdr_cli.manifest import InputRef, Manifest, command_line, dump_config, input_ref, read_manifest, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.sample import SampleConfig
from stages.config.train_gen import TrainGenConfig
from stages.data.sequences import eval_histories, training_examples, validation_subset
from stages.data.views import n_entities, view_note, view_splits, with_self
from stages.idgen.generator import IdGenerator, generate_all
from stages.idgen.joint import Keywords, round_model
from stages.idgen.texts import item_texts, keyword_targets, profile_texts
from stages.idgen.tokenizer import FILE as TOKENIZER_FILE
from stages.idgen.tokenizer import SPECIALS, encode_texts, load_tokenizer, train_tokenizer, words
from stages.idgen.unique import assign_unique
from stages.ids.codeset import CodeSet
from stages.inputs import Processed, open_processed
from stages.models.tiger import Tiger
from stages.training.checkpoint import has_checkpoint
from stages.training.loop import FitResult, fit
from stages.training.run import log_frame, plot_curve, resume_fingerprint, save_run
from stages.training.validation import make_validator

GEN_WEIGHTS, GEN_SPEC = "generator.safetensors", "generator.json"


def names(view: str, r: int, prefix: str = "") -> tuple[str, str]:
    """(generator run and ID set name, recommender run name) of round `r` of `view` (`train_gen.name_prefix` first)."""
    who = "item" if view == "item" else "friend"
    return f"{prefix}gen-{who}-round{r}", f"{prefix}rec-{view}-round{r}"


@dataclass
class Session:
    """One view's state across rounds: the entities' texts, the tokenizer and both models."""

    paths: DataPaths
    processed: Processed
    config: TrainGenConfig
    view: str
    tokenizer: Any
    text: Tensor  # [N, T] word ids of each entity's text
    empty: int  # entities with no text (they read [EMPTY])
    gen: IdGenerator | None = None
    rec: Tiger | None = None
    codeset: CodeSet | None = None
    timings: dict[int, dict[str, float]] = field(default_factory=dict)
    partner: bool = False  # `gdr train --view both`: the other session is corruption's other view
    said: set[str] = field(default_factory=set)  # notes already printed (each once per session)

    def names(self, r: int) -> tuple[str, str]:
        return names(self.view, r, self.config.name_prefix)

    def note(self, text: str) -> None:
        """Print `text` the first time this session says it."""
        if text not in self.said:
            self.said.add(text)
            console.print(text)

    @property
    def words(self) -> list[str]:
        return words(self.tokenizer)


def open_session(*, paths: DataPaths, processed: Processed, config: TrainGenConfig, tokenizer: Any = None) -> Session:
    """Texts and tokenizer of `config.view` (a social view without a friend graph is a one-line error).
    `tokenizer`: reuse one (the other view's, so both share a word vocabulary); None = train it."""
    splits = view_splits(processed, config.view)  # raises when the dataset has no friend lists
    del splits
    texts = item_texts(processed)
    if tokenizer is None:
        tc = config.tokenizer
        tokenizer = train_tokenizer([t for t in texts if t], vocab_size=tc.vocab_size, min_frequency=tc.min_frequency)
    if len(words(tokenizer)) <= len(SPECIALS):
        raise GdrError(f"dataset {paths.dataset!r} has no item text to learn a word vocabulary from",
                       where=str(processed.folder / "items.parquet"), fix="use `gdr build-ids` (codes) for this dataset")  # fmt: skip
    if config.view == "social":
        texts = profile_texts(processed, texts, config.profile_items)
    text = encode_texts(tokenizer, texts, config.tokenizer.max_text_len)
    empty = sum(1 for t in texts if not t.strip())
    return Session(
        paths=paths, processed=processed, config=config, view=config.view, tokenizer=tokenizer, text=text, empty=empty
    )


def completed_rounds(paths: DataPaths, view: str, rounds: int, prefix: str = "") -> int:
    """Rounds 1..r whose generator and recommender runs are both written (the resume point is r + 1)."""
    from gdr_cli.manifest import check_fresh

    done = 0
    for r in range(1, rounds + 1):
        gen, rec = names(view, r, prefix)
        if not ((paths.run(gen) / "manifest.json").is_file() and (paths.run(rec) / "manifest.json").is_file()):
            break
        try:  # a round built on an earlier round that has since been rebuilt is not done
            for name in (gen, rec):
                check_fresh(read_manifest(paths.run(name), what="run", fix=""), paths.root, what=f"run {name!r}")
        except GdrError:
            break
        done = r
    return done


# ----- generator artifacts ---------------------------------------------------------------------------
def save_generator(folder: Path, gen: IdGenerator, tokenizer: Any) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in gen.state_dict().items()}
    with atomic_path(folder / GEN_WEIGHTS) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(folder / GEN_SPEC, {"kind": gen.kind, "init_kwargs": gen.init_kwargs})
    with atomic_path(folder / TOKENIZER_FILE) as tmp:
        tokenizer.save(str(tmp))


def load_generator(folder: Path, dataset: str) -> tuple[IdGenerator, Any]:
    """A generator run folder of `dataset` -> (generator, tokenizer); another dataset's is a one-line error
    (its words are that dataset's vocabulary)."""
    from safetensors.torch import load_file

    manifest = read_manifest(folder, what="generator run", fix="give a `gen-*-round*` run folder of `gdr train-gen`")
    if manifest.stage != "train_gen" or not (folder / GEN_SPEC).is_file():
        raise GdrError(f"{folder} is not a generator run (stage {manifest.stage!r})", where=str(folder),
                       fix="give a `runs/gen-*-round*` folder of `gdr train-gen`, or a T5 checkpoint folder")  # fmt: skip
    if manifest.dataset != dataset:
        raise GdrError(
            f"generator checkpoint was trained on dataset {manifest.dataset!r}, not {dataset!r} (its word vocabulary is that dataset's)",
            where=str(folder), fix=f"train a generator on {dataset!r} (`gdr train-gen {dataset}`), or pass a plain T5 checkpoint",
        )  # fmt: skip
    try:
        spec = json.loads((folder / GEN_SPEC).read_text())
        gen = IdGenerator(**spec["init_kwargs"])
        gen.load_state_dict(load_file(str(folder / GEN_WEIGHTS)))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GdrError(
            f"corrupted generator checkpoint: {first}", where=str(folder), fix="retrain it with `gdr train-gen`"
        ) from None
    return gen, load_tokenizer(folder)


def new_generator(s: Session) -> IdGenerator:
    """Round 1's generator: from scratch, from a local T5 (`generator.init`), or from a generator run of this dataset."""
    cfg = s.config.generator
    sizes = cfg.model_dump(exclude={"init", "generate_batch_size", "train"})
    n_words = len(s.words)
    init = Path(cfg.init) if cfg.init else None
    if init is not None and (init / "manifest.json").is_file():
        gen, tok = load_generator(init, s.paths.dataset)
        if words(tok) != s.words or gen.id_len != s.config.id_len:
            raise GdrError("generator checkpoint has another word vocabulary or ID length", where=str(init),
                           fix="use the same tokenizer and id_len settings, or start from scratch")  # fmt: skip
        return gen
    return IdGenerator.create(n_words=n_words, id_len=s.config.id_len, init=init, seed=s.config.seed, **sizes)


# ----- one round ----------------------------------------------------------------------------------------
def _fit(s: Session, module: torch.nn.Module, train: dict[str, Tensor], validate: Any, loop: Any, run: str,
         inputs: dict[str, str], resume: bool) -> FitResult:  # fmt: skip
    work = s.paths.work(run)
    fingerprint = resume_fingerprint(s.config, {**inputs, "run": run})
    return fit(model=module, train=train, validate=validate, cfg=loop, seed=s.config.seed, workdir=work,
               resume=resume and has_checkpoint(work), fingerprint=fingerprint, desc=f"train-gen {run}" + (" (val = keyword accuracy)" if isinstance(module, Keywords) else ""))  # fmt: skip


def _validator(s: Session, splits: Any, keep: int) -> Any:
    """Validation NDCG@10 of the round's recommender on the validation users (a seeded subset of `keep`, 0 = all)."""
    val = eval_histories(splits, "valid", s.config.max_len, with_target=True)
    val, _ = validation_subset(val, keep, s.config.seed)
    rc = s.config.recommender
    return make_validator(val["history"], val["target"], k=10, batch_size=rc.train.eval_batch_size,
                          options=SampleConfig(beam=rc.beam, k=10), exclude=with_self(val["user"], None, s.view))  # fmt: skip


def generator_phase(s: Session, r: int, *, resume: bool) -> dict[str, Any]:
    """Train the generator of round `r`, regenerate unique IDs, write its run and ID set."""
    cfg = s.config
    gen_name, _ = s.names(r)
    splits = view_splits(s.processed, s.view)
    inputs: dict[str, InputRef] = {"processed": s.processed.ref}
    if r == 1:
        s.gen = new_generator(s)
        targets, has = keyword_targets(s.text, cfg.id_len)
        module = round_model("text", s.gen, None, s.text, targets=targets)
        entities = has.nonzero().flatten()
        if entities.numel() == 0:
            raise GdrError("no entity has text words to learn IDs from", fix="check items.parquet's text column")
        train = {"entity": entities}
        assert isinstance(module, Keywords)

        def validate(model: Any, rank: int, world: int) -> tuple[float, int]:
            return model.accuracy(entities[rank::world].to(model.text.device))

        metric = "keyword accuracy"
    else:
        assert s.gen is not None and s.rec is not None
        prev = s.paths.run(s.names(r - 1)[1])
        inputs["recommender"] = input_ref(
            prev, s.paths.root, read_manifest(prev, what="previous round", fix="rerun without --resume")
        )
        module = round_model("id", s.gen, s.rec, s.text, temperature=cfg.temperature, anchor=cfg.anchor)
        ex = training_examples(splits, cfg.max_len)
        train = {"history": ex["history"], "target": ex["target"]}
        validate = _validator(s, splits, cfg.generator.train.val_users)
        metric = "val NDCG@10 (soft IDs)"
    loop = cfg.generator.train.model_copy(update={"max_epochs": cfg.keyword_epochs if r == 1 else cfg.id_epochs})
    if r > 1 and cfg.id_max_steps is not None:
        loop = loop.model_copy(update={"max_steps": min(cfg.id_max_steps, loop.max_steps or cfg.id_max_steps)})
    result = _fit(s, module, train, validate, loop, gen_name, {k: v.sha256 for k, v in inputs.items()}, resume)
    module.load_state_dict(result.best_state)
    s.gen.eval()

    clock = time.perf_counter()
    beams, scores = generate_all(
        s.gen, s.text, beams=cfg.beams, batch_size=cfg.generator.generate_batch_size, diversity=cfg.diversity
    )
    ids, id_stats = assign_unique(beams, scores, first_word=len(SPECIALS), n_words=len(s.words))
    if id_stats["collisions_final"]:
        raise GdrError(
            f"{id_stats['collisions_final']} IDs still collide after clash resolution", fix="raise train_gen.beams"
        )
    key = "item" if s.view == "item" else "user"
    s.codeset = CodeSet(ids.numpy(), [len(s.words)] * cfg.id_len, key=key, kind="text", tokens=s.words)
    gen_seconds = time.perf_counter() - clock
    stats = {
        "view": s.view, "round": r, "phase": "keywords" if r == 1 else "soft-ids", "selection_metric": metric,
        "best_metric": round(result.best_metric, 6), "steps": result.steps, "entities": int(s.text.shape[0]),
        "empty_text": s.empty, "empty_text_rule": "reads the single token [EMPTY]; its ID is made unique by the clash resolution",
        "id_len": cfg.id_len, "beams": cfg.beams, "diversity": cfg.diversity, "words": len(s.words), **id_stats, "generate_s": round(gen_seconds, 2),
        "train_s": round(result.log[-1]["wall_s"], 2) if result.log else 0.0,
        "params": sum(p.numel() for p in s.gen.parameters()),
    }  # fmt: skip
    manifest = Manifest(stage="train_gen", dataset=s.paths.dataset, name=gen_name, command=command_line(),
                        config=dump_config(cfg), seed=cfg.seed, inputs=inputs, stats=stats)  # fmt: skip
    with staged_dir(s.paths.run(gen_name)) as tmp:
        save_generator(tmp, s.gen, s.tokenizer)
        frame = log_frame(result.log)
        write_parquet(tmp / "train_log.parquet", frame)
        plot_curve(tmp / "curve.png", frame, title=f"{gen_name}: {metric} (orange axis)")
        manifest.wall_time_s = stats["train_s"] + stats["generate_s"]
        write_manifest(tmp, manifest)
    ids_stats = {"view": s.view, "method": "idgen", "id_kind": "text", "entities": s.codeset.n_items,
                 "n_digits": cfg.id_len, "vocab_sizes": s.codeset.vocab_sizes, **id_stats, "empty_text": s.empty,
                 "examples": dict(zip(map(str, range(5)), s.codeset.phrases(torch.arange(min(5, s.codeset.n_items)).numpy()), strict=False))}  # fmt: skip
    gen_ref = input_ref(s.paths.run(gen_name), s.paths.root, manifest)
    with staged_dir(s.paths.ids(gen_name)) as tmp:
        s.codeset.save(tmp)
        write_manifest(tmp, Manifest(stage="train_gen", dataset=s.paths.dataset, name=gen_name, command=command_line(),
                                     config=dump_config(cfg), seed=cfg.seed, inputs={"processed": s.processed.ref, "generator": gen_ref},
                                     stats=ids_stats))  # fmt: skip
    return stats


def recommender_phase(s: Session, r: int, *, resume: bool) -> dict[str, Any]:
    """Train the recommender of round `r` on the round's IDs (generator frozen); write its tiger run."""
    assert s.gen is not None and s.codeset is not None
    cfg = s.config
    gen_name, rec_name = s.names(r)
    codes = s.codeset.as_tensor()
    rc = cfg.recommender
    other = corruption_other(s, r, codes) if rc.use_diffusion else None
    if s.rec is None:
        from stages.models.tiger import corrupting_tiger
        from stages.models.tiger_corruption import CORRUPTION_KEYS

        sizes = rc.model_dump(exclude={"init", "beam", "train", *CORRUPTION_KEYS})
        kw = dict(init=rc.init, seed=cfg.seed, vocab_kind="shared", **sizes)
        s.rec = (Tiger.from_codes(codes, s.codeset.vocab_sizes, **kw) if other is None
                 else corrupting_tiger(codes, s.codeset.vocab_sizes, rc, other, **kw))  # fmt: skip
    else:
        if (other is None) != (s.rec.corruption is None):
            raise GdrError(f"round {r - 1}'s recommender was trained with use_diffusion {int(other is None)}, this config "
                           f"has {rc.use_diffusion}", where="train_gen.recommender.use_diffusion",
                           fix="keep the setting of the earlier rounds, or start again without --resume")  # fmt: skip
        s.rec.set_codes(codes)
        if other is not None and s.rec.corruption is not None:
            s.rec.corruption.set_vocab_pool(other.pool)
            s.rec.corruption.set_other(other.model)
    module = round_model("rec", s.gen, s.rec, s.text)
    splits = view_splits(s.processed, s.view)
    ex = training_examples(splits, cfg.max_len)
    ids_folder = s.paths.ids(gen_name)
    inputs = {"processed": s.processed.ref,
              "ids": input_ref(ids_folder, s.paths.root, read_manifest(ids_folder, what="ID set", fix="rerun train-gen"))}  # fmt: skip
    if other is not None:
        inputs.update(other.inputs)
    if r > 1:
        prev = s.paths.run(s.names(r - 1)[1])
        inputs["previous"] = input_ref(
            prev, s.paths.root, read_manifest(prev, what="previous round", fix="rerun without --resume")
        )
    loop = cfg.recommender.train.model_copy(update={"max_epochs": cfg.rec_epochs})
    result = _fit(s, module, {"history": ex["history"], "target": ex["target"]}, _validator(s, splits, cfg.recommender.train.val_users), loop, rec_name,
                  {k: v.sha256 for k, v in inputs.items()}, resume)  # fmt: skip
    s.rec.load_state_dict(result.best_state)
    s.rec.eval()
    if s.rec.corruption is not None:
        s.rec.corruption.set_other(None)  # the frozen partner is this round's only: not kept past it
    stats = {
        "model": "tiger", "view": s.view, "round": r, "id_kind": "text", "params": sum(p.numel() for p in s.rec.parameters()),
        "examples": int(ex["target"].shape[0]), "items": n_entities(s.processed, s.view), "max_len": cfg.max_len,
        "best_val_ndcg@10": round(result.best_metric, 6), "best_step": result.best_step, "steps": result.steps,
        "stop_reason": result.stop_reason, "n_digits": cfg.id_len, "vocab_sizes": s.codeset.vocab_sizes,
        "train_s": round(result.log[-1]["wall_s"], 2) if result.log else 0.0,
    }  # fmt: skip
    if other is not None:
        stats.update(cross_view_tokens=int(other.pool.numel()), kl=other.model is not None)
    meta = {"dataset": s.paths.dataset, "max_len": cfg.max_len, "ids": gen_name, "view": s.view}
    with staged_dir(s.paths.run(rec_name)) as tmp:
        save_run(folder=tmp, model=s.rec, result=result, meta=meta)
        write_manifest(tmp, Manifest(stage="train_gen", dataset=s.paths.dataset, name=rec_name, command=command_line(),
                                     config=dump_config(cfg), seed=cfg.seed, inputs=inputs, stats=stats,
                                     wall_time_s=stats["train_s"]))  # fmt: skip
    return stats


def corruption_other(s: Session, r: int, codes: Tensor) -> Any:
    """The other view of round `r`'s corruption training (`stages.models.other_view.OtherView`), its notes
    printed once. Alone: `recommender.other_view_run` / `other_view_ids` (or random tokens). With `--view both`
    (`s.partner`): the other view's latest IDs (KL off) or latest recommender (KL on) at the time this view
    trains: the social view's of round r - 1 for the item view (it trains first), the item view's of round r
    for the social view; the item view's round 1 has none (random tokens, no KL)."""
    from stages.models.other_view import OtherView, other_name, resolve

    rc = s.config.recommender
    if s.partner:
        other = other_name(s.view)
        k = r - 1 if s.view == "item" else r
        if k < 1:
            s.note(
                f"corruption: the item view's round 1 trains before any {other} IDs exist: random tokens, no KL term"
            )
            return OtherView(torch.zeros(0, dtype=torch.int64))
        gen_name, rec_name = names(other, k, s.config.name_prefix)
        kl = rc.lambda_kl > 0
        rc = rc.model_copy(
            update={"other_view_run": rec_name if kl else None, "other_view_ids": None if kl else gen_name}
        )
    found = resolve(s.paths, rc, view=s.view, this_codes=codes, words=s.words)
    for note in found.notes:
        s.note(note)
    return found


def check_other_view(s: Session) -> None:
    """Fail before any training when a named other view (`recommender.other_view_run` / `other_view_ids`) is
    bad: missing, of another dataset, view or ID kind, or over another word vocabulary."""
    rc = s.config.recommender
    if rc.use_diffusion and not s.partner and (rc.other_view_run or rc.other_view_ids):
        corruption_other(s, 0, torch.zeros(0, s.config.id_len, dtype=torch.int64))


def restore(s: Session, r: int) -> None:
    """Load the models and IDs that round `r` left (to continue after it)."""
    from stages.ids.codeset import load_codeset
    from stages.models.registry import load_model

    gen_name, rec_name = s.names(r)
    s.gen, _ = load_generator(s.paths.run(gen_name), s.paths.dataset)
    s.codeset, _ = load_codeset(s.paths, gen_name, view=s.view)
    rec, _ = load_model(s.paths.run(rec_name))
    assert isinstance(rec, Tiger)
    s.rec = rec


def run_round(s: Session, r: int, *, resume: bool = False) -> dict[str, Any]:
    """Round `r` of session `s` (both phases); with `resume`, a finished generator phase is reused and
    an interrupted phase continues from its checkpoint. Returns the round's stats."""
    gen_name, _ = s.names(r)
    clock = time.perf_counter()
    if resume and r > 1 and (s.gen is None or s.rec is None):
        restore(s, r - 1)
    gen_done = (
        resume
        and (s.paths.run(gen_name) / "manifest.json").is_file()
        and (s.paths.ids(gen_name) / "manifest.json").is_file()
    )
    if gen_done:
        from stages.ids.codeset import load_codeset

        s.gen, _ = load_generator(s.paths.run(gen_name), s.paths.dataset)
        s.codeset, _ = load_codeset(s.paths, gen_name, view=s.view)
        gen_stats = json.loads((s.paths.run(gen_name) / "manifest.json").read_text())["stats"]
    else:
        gen_stats = generator_phase(s, r, resume=resume)
    mid = time.perf_counter()
    rec_stats = recommender_phase(s, r, resume=resume)
    end = time.perf_counter()
    s.timings[r] = {"generator_s": round(mid - clock, 2), "recommender_s": round(end - mid, 2)}
    console.print(
        f"train-gen: {s.paths.dataset}{view_note(s.view)} round {r}: IDs of {gen_stats['entities']:,} "
        f"{'items' if s.view == 'item' else 'users'} ({gen_stats['retried']} retried a clash, {gen_stats['fallback']} fallback, "
        f"{gen_stats['collisions_final']} collisions), recommender val NDCG@10 {rec_stats['best_val_ndcg@10']:.4f} "
        f"({mid - clock:.0f}s + {end - mid:.0f}s)"
    )
    return {"round": r, "view": s.view, "generator": gen_stats, "recommender": rec_stats, **s.timings[r]}


def run(*, dataset: str, data_dir: Path, config: TrainGenConfig, resume: bool = False) -> list[dict[str, Any]]:
    """All rounds of `config.view`; returns each round's stats (only the rounds run now, under `resume`)."""
    paths = DataPaths(Path(data_dir), dataset)
    processed = open_processed(paths)
    s = open_session(paths=paths, processed=processed, config=config)
    check_other_view(s)
    start = completed_rounds(paths, config.view, config.rounds, config.name_prefix) + 1 if resume else 1
    if resume and start > 1:
        restore(s, start - 1)
    return [run_round(s, r, resume=resume) for r in range(start, config.rounds + 1)]
