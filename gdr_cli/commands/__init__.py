"""One module per stage command. `register` adds the commands that are real, in pipeline order."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from gdr_cli.commands import (
        augment,
        build_ids,
        config,
        diffuse,
        evaluate,
        export,
        preprocess,
        sample,
        train,
        train_gen,
        train_rec,
        tune,
    )

    app.command(
        "preprocess",
        help="Raw dumps or your own logs -> clean interactions, item text, social graph, leave-one-out splits.",
    )(preprocess.preprocess)
    app.command(
        "build-ids",
        help="Item (or user) IDs as short token codes: residual k-means, RQ-VAE, random, sequential, collaborative.",
    )(build_ids.build_ids)
    app.command(
        "augment",
        help="An augmented training split: diffusion-generated pseudo items prepended to short sequences (DiffuASR).",
    )(augment.augment)
    app.command(
        "train-rec",
        help="Train a recommender (pop, friendpop; baselines sasrec, hstu, diffurec; autoregressive T5 'tiger' over item codes) on the training split.",
    )(train_rec.train_rec)
    app.command(
        "train-gen",
        help="IDGenRec: learn textual IDs (a T5 writes each item's or user's ID from its text) and a tiger recommender on them, in alternating rounds.",
    )(train_gen.train_gen)
    app.command(
        "diffuse", help="Train the masked discrete-diffusion recommender over item codes (time-free RADD denoiser)."
    )(diffuse.diffuse)
    app.command("sample", help="Top-K recommendations for the validation or test users from a trained run.")(
        sample.sample
    )
    app.command("evaluate", help="Recall/NDCG/MRR@K of sampled recommendations; compares runs in one table.")(
        evaluate.evaluate
    )
    app.command(
        "train",
        help="The IDGenRec pipeline in one command: textual IDs, alternating rounds, sample + evaluate after each round (--view item|social|both).",
    )(train.train)
    app.command(
        "tune",
        help="Hyper-parameter search (Optuna, extra gdr[tune]) over train-rec runs on validation NDCG@10, with pruning and a persistent study.",
    )(tune.tune)
    app.command(
        "export",
        help="A processed dataset (+ ID codes, recommendations) as RecBole atomic files, an IDGenRec/SASRec folder or Parquet tables.",
    )(export.export)
    app.command(
        "config",
        help="Print a stage's resolved config (defaults < -c file < --set) with every key's description, as a file "
        "--config loads.",
    )(config.config)
