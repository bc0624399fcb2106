"""The one flow every gradient-trained model goes through (`gdr train-rec`, `gdr diffuse`).

processed splits (+ ID set when the family needs one) -> family.build / family.examples ->
validator (NDCG@10 of `model.recommend` on the validation users) -> `fit` -> run folder with the
best weights, log, curve and a manifest. Adding a model touches its module and the registry only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import staged_dir
from gdr_cli.manifest import InputRef, Manifest, Stopwatch, command_line, dump_config, input_ref, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.training import TrainLoopConfig
from stages.data.sequences import eval_histories, validation_subset
from stages.data.views import n_entities, view_note, view_splits, with_self
from stages.inputs import Processed
from stages.models.family import FamilyData, ModelFamily


@dataclass
class TrainRequest:
    """What one training run is: the family, its config section, and the stage settings around it."""

    stage: str  # "train_rec" | "diffuse" (manifest stage name)
    family: ModelFamily
    section: Any  # the family's config section (e.g. TigerConfig, DiffuseConfig)
    train: TrainLoopConfig
    stage_config: Any  # the whole resolved stage config (manifest + resume fingerprint)
    ids: str | None
    max_len: int | None  # None = the family's default
    seed: int
    name: str
    resume: bool = False
    view: str = "item"  # "item" (splits) or "social" (social_splits: the "items" are users)
    train_split: str | None = None  # None / "base" or "augmented/<name>" (item view only)
    on_validation: Any = None  # fit's hook (step, val_ndcg@10) after each validation, e.g. `gdr tune`'s pruning


def load_data(paths: DataPaths, processed: Processed, req: TrainRequest) -> tuple[FamilyData, dict[str, InputRef]]:
    """The family's inputs and the input refs of the manifest (processed data, ID set).

    The view picks the split table and the catalogue: in the social view the sequences are friend
    lists and the "items" are the users (the ID set must be one built with `--view social`).
    """
    from stages.augmentation.splits import BASE, open_train_split, split_name

    inputs = {"processed": processed.ref}
    max_len = req.max_len or req.family.default_max_len
    splits = view_splits(processed, req.view)
    data = FamilyData(
        splits=splits,
        n_items=n_entities(processed, req.view),
        max_len=max_len,
        seed=req.seed,
        view=req.view,
        processed=processed,
        paths=paths,
    )
    if split_name(req.train_split) != BASE:
        if req.view != "item":
            raise GdrError("an augmented training split holds item sequences, not friend lists",
                           where=f"--train-split {req.train_split}", fix="use --view item, or drop --train-split")  # fmt: skip
        chosen = open_train_split(paths, processed, req.train_split)
        data.splits, data.base_splits, data.train_split = chosen.splits, splits, chosen.name
        if chosen.ref is not None:
            inputs["train_split"] = chosen.ref
    if req.family.needs_ids:
        from stages.ids.codeset import load_codeset

        if not req.ids:
            social = " --view social" if req.view == "social" else ""
            raise GdrError(
                f"{req.family.kind} needs an ID set",
                fix=f"build one with `gdr build-ids {paths.dataset}{social}` and pass --ids NAME",
            )
        codeset, ids_manifest = load_codeset(paths, req.ids, view=req.view)
        inputs["ids"] = input_ref(paths.ids(req.ids), paths.root, ids_manifest)
        data.codes, data.vocab_sizes = codeset.as_tensor(), list(codeset.vocab_sizes)
        data.id_kind, data.tokens = codeset.kind, codeset.tokens
    inputs.update(req.family.prepare(data, req.section, paths, processed))
    return data, inputs


def train_family(paths: DataPaths, processed: Processed, req: TrainRequest) -> Manifest | None:
    """Train `req.family` and write `runs/<req.name>/`; returns its manifest (None on non-primary ranks)."""
    from stages.training import distributed as D
    from stages.training.loop import fit
    from stages.training.run import resume_fingerprint, save_run
    from stages.training.validation import make_user_ndcg, make_validator

    clock = Stopwatch()
    family, cfg = req.family, req.section
    data, inputs = load_data(paths, processed, req)
    model = family.build(data, cfg)
    train = family.examples(data, cfg)
    val = eval_histories(data.eval_splits, "valid", data.max_len, with_target=True)
    val, val_rows = validation_subset(val, req.train.val_users, req.seed)  # rows None: every user
    sampler, options = family.validation_options(cfg)
    seen = None
    if family.validation_excludes_history(cfg):  # the whole training history, as `sample --exclude-history`
        longest = int(data.splits["train"].list.len().max() or 0)
        seen = eval_histories(data.splits, "valid", max(longest, 1), with_target=False)["history"]
        seen = seen if val_rows is None else seen[val_rows]

    def validator(options: Any, sampler: str | None, list_k: int | None = None, per_user: bool = False) -> Any:
        make = make_user_ndcg if per_user else make_validator
        return make(
            val["history"], val["target"], k=10, batch_size=req.train.eval_batch_size, options=options, sampler=sampler,
            exclude=with_self(val["user"], seen, req.view),  # social view: never the user themself
            users=val["user"],  # models that score users by ID (graph models) read them from options.users
            list_k=list_k,
        )  # fmt: skip

    validate = validator(options, sampler)
    fingerprint = resume_fingerprint(req.stage_config, {k: v.sha256 for k, v in inputs.items()})
    result = fit(model=model, train=train, validate=validate, cfg=req.train, seed=req.seed, workdir=paths.work(req.name),
                 resume=req.resume, fingerprint=fingerprint, on_validation=req.on_validation, desc=f"{req.stage.replace('_', '-')} {req.name} ({family.kind})")  # fmt: skip
    if not D.is_primary():
        return None

    model.load_state_dict(result.best_state)
    model.eval()
    rows = [r for r in result.log if r.get("examples_per_s")]
    n_examples = int(next(iter(train.values())).shape[0])
    stats = {
        "model": family.kind, "view": req.view, "train_split": data.train_split, "params": sum(p.numel() for p in model.parameters()), "examples": n_examples,
        "items": data.n_items, "max_len": data.max_len, "best_val_ndcg@10": round(result.best_metric, 6),
        "best_step": result.best_step, "steps": result.steps, "epochs": round(result.steps / max(1, result.steps_per_epoch), 3),
        "stop_reason": result.stop_reason, "validation_history": "excluded" if seen is not None else "kept", "val_users": len(val["target"]),
        "examples_per_s": round(sum(r["examples_per_s"] for r in rows) / len(rows), 1) if rows else None,
    }  # fmt: skip
    if data.vocab_sizes is not None:
        stats.update(n_digits=len(data.vocab_sizes), vocab_sizes=data.vocab_sizes)
    stats.update(family.stats(model, data, cfg))
    meta = {
        "dataset": paths.dataset,
        "max_len": data.max_len,
        "ids": req.ids if family.needs_ids else None,
        "view": req.view,
        "train_split": data.train_split,
    }
    choices = family.decoding_choices(cfg, data)
    if choices:
        tolerance = family.decoding_tolerance(cfg)
        chosen, scores, gaps = choose_decoding(model, choices, validator, tolerance)
        meta.update(chosen)
        stats["decoding"] = {**chosen, "val_ndcg@10": scores, "gap_se": gaps, "within_se": tolerance}
    with staged_dir(paths.run(req.name)) as tmp:
        save_run(folder=tmp, model=model, result=result, meta=meta)
        write_manifest(
            tmp,
            Manifest(
                stage=req.stage, dataset=paths.dataset, name=req.name, command=command_line(),
                config=dump_config(req.stage_config), seed=req.seed, inputs=inputs, stats=stats, wall_time_s=clock.seconds(),
            ),
        )  # fmt: skip
    rate = f", {stats['examples_per_s']} ex/s" if stats["examples_per_s"] else ""
    if "decoding" in stats:  # the choice `gdr sample` will use
        label, top = _label(chosen), max(scores, key=scores.__getitem__)
        rate += f"; decodes with {label} (val NDCG@10 {scores[label]:.4f}"
        rate += ")" if label == top else f", within {tolerance:g} SE of {top}'s {scores[top]:.4f})"
    console.print(
        f"{req.stage.replace('_', '-')}: {req.name} ({family.kind}, {stats['params']:,} params) on {paths.dataset}{view_note(req.view)}: best val NDCG@10 "
        f"{result.best_metric:.4f} at step {result.best_step} of {result.steps} ({result.stop_reason}{rate}){family.summary(stats)} "
        f"-> {paths.run(req.name)}"
    )
    return Manifest.model_validate_json((paths.run(req.name) / "manifest.json").read_text())


def choose_decoding(
    model: Any, choices: list[tuple[dict[str, Any], str | None, Any]], validator: Any, tolerance: float = 0.0
) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """Choose among decoding choices (`ModelFamily.decoding_choices`, cheapest first) by validation NDCG@10 on the
    trained model, from lists as long as `gdr sample`'s default k (what `sample --split valid` + `evaluate` then
    report): the cheapest choice whose mean is within `tolerance` paired standard errors of the best one's (the
    one-standard-error rule with tolerance 1; 0: the best score, an equal score keeps the cheaper).
    validator(options, sampler, list_k, per_user=True) -> fn(model, 0, 1) giving [U] per-user NDCG@10.
    -> (the chosen run-meta entries, {label: val NDCG@10}, {label: standard error of the user-paired difference
    to the best choice}), labels like "digits_per_step=4"."""
    import torch

    from stages.config.sample import SampleConfig

    depth = SampleConfig.model_fields["k"].default
    users: dict[str, Any] = {}
    with torch.no_grad():
        for entries, sampler, options in choices:
            users[_label(entries)] = validator(options, sampler, depth, per_user=True)(model, 0, 1)  # [U] float64
    mean = {label: float(v.mean()) if len(v) else 0.0 for label, v in users.items()}
    top = max(mean, key=mean.__getitem__)  # the first (cheapest) of equal bests
    gaps: dict[str, float] = {}
    chosen: dict[str, Any] | None = None
    for entries, _, _ in choices:
        label = _label(entries)
        diff = users[top] - users[label]  # [U] paired by user
        se = float(diff.std() / len(diff) ** 0.5) if len(diff) > 1 else 0.0
        gaps[label] = round(se, 6)
        if chosen is None and mean[label] >= mean[top] - tolerance * se:
            chosen = entries
    return chosen or {}, {label: round(m, 6) for label, m in mean.items()}, gaps


def _label(entries: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in entries.items())
