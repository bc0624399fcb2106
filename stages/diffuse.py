"""`gdr diffuse`: train the masked discrete-diffusion recommender and write a run folder.

Reads the processed splits and an ID set, trains with the shared loop (validation NDCG@10 with the
`cpd` sampler, early stopping, budget, resume, DDP), then reports the exact any-order likelihood
bound on the validation targets (nats per item and perplexity per digit) in the manifest.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import staged_dir
from gdr_cli.manifest import Manifest, Stopwatch, check_fresh, command_line, dump_config, input_ref, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.diffuse import DiffuseConfig
from stages.data.sequences import eval_histories, training_examples
from stages.diffusion.likelihood import MAX_DIGITS
from stages.ids.codeset import load_codeset
from stages.inputs import open_processed
from stages.models.diffusion import DiffusionRecommender
from stages.samplers.base import SamplerOptions
from stages.training import distributed as D
from stages.training.loop import fit
from stages.training.run import resume_fingerprint, save_run
from stages.training.validation import make_validator


def build_model(config: DiffuseConfig, codes: torch.Tensor, vocab_sizes: list[int]) -> DiffusionRecommender:
    """A fresh model with the config's sizes and objective over codes [N, n]."""
    if config.d_model % config.n_heads:
        raise GdrError(f"n_heads {config.n_heads} does not divide d_model {config.d_model}", fix="pick n_heads dividing d_model")
    return DiffusionRecommender.from_codes(
        codes, vocab_sizes, max_len=config.max_len, d_model=config.d_model, n_heads=config.n_heads,
        enc_layers=config.enc_layers, dec_layers=config.dec_layers, d_ff=config.d_ff, dropout=config.dropout,
        loss=config.loss, schedule=config.schedule, augment_factor=config.augment_factor, mask_prob=config.mask_prob,
        lambda_floor=config.lambda_floor, seed=config.seed,
    )  # fmt: skip


def run(*, dataset: str, data_dir: Path, config: DiffuseConfig, run_name: str | None = None, resume: bool = False) -> Manifest | None:
    """Train on `dataset` with ID set `config.ids`; returns the manifest of `runs/<run_name>` (None on non-primary ranks)."""
    clock = Stopwatch()
    paths = DataPaths(data_dir, dataset)
    name = run_name or "diffusion"
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    codeset, ids_manifest = load_codeset(paths, config.ids)
    ids_ref = input_ref(paths.ids(config.ids), paths.root, ids_manifest)
    if config.validation.digits_per_step > codeset.n_digits:
        raise GdrError(f"validation digits_per_step {config.validation.digits_per_step} exceeds the code length {codeset.n_digits}",
                       fix=f"set validation.digits_per_step to 1..{codeset.n_digits}")  # fmt: skip

    splits = processed.table("splits")
    examples = training_examples(splits, config.max_len)
    train = {"history": examples["history"], "target": examples["target"]}
    val = eval_histories(splits, "valid", config.max_len, with_target=True)
    model = build_model(config, codeset.as_tensor(), codeset.vocab_sizes)
    options = SamplerOptions(beam=config.validation.beam, digits_per_step=config.validation.digits_per_step)
    validate = make_validator(val["history"], val["target"], k=10, batch_size=config.train.eval_batch_size, options=options, sampler="cpd")
    fingerprint = resume_fingerprint(config, {"processed": processed.ref.sha256, "ids": ids_ref.sha256})
    result = fit(model=model, train=train, validate=validate, cfg=config.train, seed=config.seed, workdir=paths.work(name),
                 resume=resume, fingerprint=fingerprint, desc=f"diffuse {name}")  # fmt: skip
    if not D.is_primary():
        return None

    model.load_state_dict(result.best_state)
    model.eval()
    device = next(model.parameters()).device
    params = sum(p.numel() for p in model.parameters())
    stats = {
        "model": "diffusion", "loss": config.loss, "params": params, "examples": int(train["target"].shape[0]),
        "n_digits": codeset.n_digits, "best_val_ndcg@10": round(result.best_metric, 6), "best_step": result.best_step,
        "steps": result.steps, "stop_reason": result.stop_reason,
    }  # fmt: skip
    if codeset.n_digits <= MAX_DIGITS:
        bound = model.likelihood_bound(val["history"].to(device), val["target"].to(device)).mean().item()
        stats["val_nll_bound_nats"] = round(bound, 6)
        stats["val_perplexity_per_digit"] = round(math.exp(bound / codeset.n_digits), 6)
    with staged_dir(paths.run(name)) as tmp:
        save_run(folder=tmp, model=model, result=result, meta={"dataset": dataset, "max_len": config.max_len, "ids": config.ids})
        write_manifest(
            tmp,
            Manifest(
                stage="diffuse", dataset=dataset, name=name, command=command_line(), config=dump_config(config),
                seed=config.seed, inputs={"processed": processed.ref, "ids": ids_ref}, stats=stats,
                wall_time_s=clock.seconds(),
            ),
        )  # fmt: skip
    bound_text = (f", val bound {stats['val_nll_bound_nats']:.3f} nats/item (perplexity {stats['val_perplexity_per_digit']:.2f}/digit)"
                  if "val_nll_bound_nats" in stats else "")  # fmt: skip
    console.print(
        f"diffuse: {name} ({config.loss}, {params:,} params) on {dataset}: best val NDCG@10 {result.best_metric:.4f} "
        f"at step {result.best_step}{bound_text} -> {paths.run(name)}"
    )
    return Manifest.model_validate_json((paths.run(name) / "manifest.json").read_text())
