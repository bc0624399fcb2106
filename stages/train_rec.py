"""`gdr train-rec`: train a recommender on the training split and write a run folder.

    pop:   item counts of the training sequences (no gradient training).
    tiger: processed splits + an ID set -> training examples (every prefix, last `max_len` items)
           -> `fit` (validation NDCG@10 by constrained beam search, early stopping, budget, resume,
           DDP under torchrun) -> runs/<run>/ with the best weights, log, curve and manifest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import staged_dir
from gdr_cli.manifest import Manifest, Stopwatch, check_fresh, command_line, dump_config, input_ref, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.train_rec import TrainRecConfig
from stages.inputs import Processed, open_processed
from stages.models.popularity import Popularity
from stages.models.registry import save_model


def run(
    *, dataset: str, data_dir: Path, config: TrainRecConfig, run_name: str | None = None, resume: bool = False
) -> Manifest | None:
    """Train `config.model` on `dataset`; returns the manifest of `runs/<run_name>` (None on non-primary ranks)."""
    paths = DataPaths(data_dir, dataset)
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    name = run_name or config.model
    if config.model == "tiger":
        return _train_tiger(paths, processed, config, name, resume)
    return _count_pop(paths, processed, config, name)


def _count_pop(paths: DataPaths, processed: Processed, config: TrainRecConfig, name: str) -> Manifest:
    clock = Stopwatch()
    splits = processed.table("splits")
    train_items = torch.from_numpy(splits["train"].explode().drop_nulls().to_numpy().astype("int64"))
    model = Popularity(n_items=processed.n_items)
    model.fit_counts(train_items)
    stats = {"model": "pop", "train_interactions": int(train_items.numel()), "items": processed.n_items}
    with staged_dir(paths.run(name)) as tmp:
        save_model(tmp, model, meta={"dataset": paths.dataset, "max_len": config.max_len})
        write_manifest(
            tmp,
            Manifest(
                stage="train_rec", dataset=paths.dataset, name=name, command=command_line(), config=dump_config(config),
                seed=config.seed, inputs={"processed": processed.ref}, stats=stats, wall_time_s=clock.seconds(),
            ),
        )  # fmt: skip
    console.print(f"train-rec: {name} (pop) on {paths.dataset}: counts from {stats['train_interactions']:,} training interactions -> {paths.run(name)}")
    return Manifest.model_validate_json((paths.run(name) / "manifest.json").read_text())


def _train_tiger(paths: DataPaths, processed: Processed, config: TrainRecConfig, name: str, resume: bool) -> Manifest | None:
    from stages.config.sample import SampleConfig
    from stages.data.sequences import eval_histories, training_examples
    from stages.ids.codeset import load_codeset
    from stages.models.tiger import Tiger, n_params
    from stages.training import distributed as D
    from stages.training.loop import fit
    from stages.training.run import resume_fingerprint, save_run
    from stages.training.validation import make_validator

    clock = Stopwatch()
    if not config.ids:
        raise GdrError("tiger needs an ID set", fix=f"build one with `gdr build-ids {paths.dataset}` and pass --ids NAME")
    codeset, ids_manifest = load_codeset(paths, config.ids)
    ids_ref = input_ref(paths.ids(config.ids), paths.root, ids_manifest)
    splits = processed.table("splits")
    examples = training_examples(splits, config.max_len)
    train = {"history": examples["history"], "target": examples["target"]}
    val = eval_histories(splits, "valid", config.max_len, with_target=True)

    sizes = config.tiger.model_dump(exclude={"init", "beam"})
    model = Tiger.from_codes(codeset.as_tensor(), codeset.vocab_sizes, init=config.tiger.init, seed=config.seed, **sizes)
    options = SampleConfig(beam=config.tiger.beam, k=10)
    validate = make_validator(val["history"], val["target"], k=10, batch_size=config.train.eval_batch_size,
                              options=options, sampler="beam")  # fmt: skip
    fingerprint = resume_fingerprint(config, {"processed": processed.ref.sha256, "ids": ids_ref.sha256})
    result = fit(model=model, train=train, validate=validate, cfg=config.train, seed=config.seed, workdir=paths.work(name),
                 resume=resume, fingerprint=fingerprint, desc=f"train-rec {name} (tiger)")  # fmt: skip
    if not D.is_primary():
        return None

    rows = [r for r in result.log if r.get("examples_per_s")]
    stats = {
        "model": "tiger", "params": n_params(model), "examples": int(train["target"].shape[0]), "items": codeset.n_items,
        "n_digits": codeset.n_digits, "vocab_sizes": codeset.vocab_sizes, "best_val_ndcg@10": round(result.best_metric, 6),
        "best_step": result.best_step, "steps": result.steps, "stop_reason": result.stop_reason,
        "examples_per_s": round(sum(r["examples_per_s"] for r in rows) / len(rows), 1) if rows else None,
    }  # fmt: skip
    meta = {"dataset": paths.dataset, "max_len": config.max_len, "ids": config.ids}
    with staged_dir(paths.run(name)) as tmp:
        save_run(folder=tmp, model=model, result=result, meta=meta)
        write_manifest(
            tmp,
            Manifest(
                stage="train_rec", dataset=paths.dataset, name=name, command=command_line(), config=dump_config(config),
                seed=config.seed, inputs={"processed": processed.ref, "ids": ids_ref}, stats=stats,
                wall_time_s=clock.seconds(),
            ),
        )  # fmt: skip
    console.print(
        f"train-rec: {name} (tiger, {stats['params']:,} params) on {paths.dataset}: best val NDCG@10 {result.best_metric:.4f} "
        f"at step {result.best_step} of {result.steps} ({result.stop_reason}, {stats['examples_per_s']} ex/s) -> {paths.run(name)}"
    )
    return Manifest.model_validate_json((paths.run(name) / "manifest.json").read_text())
