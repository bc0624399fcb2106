"""Benchmark: DiffuRec on MovieLens 100K under the protocol (leave-one-out, full ranking, history kept).

Preprocesses the shared RecBole atomic files into a temporary data root (as tests/test_pipeline.py
does), trains `DiffurecFamily` with its defaults (or `--set key=value` overrides of the model or
loop config) through the shared `fit`, then reports the validation NDCG@10 curve, seconds per
epoch, and test NDCG@10 / Recall@10 of the best-validation weights (the test split is read once,
at the end). References on this split: RecBole SASRec 0.0612 / 0.1283, popularity 0.0224 / 0.0498.

    OMP_NUM_THREADS=1 python benchmarks/bench_diffurec.py
    OMP_NUM_THREADS=1 python benchmarks/bench_diffurec.py --set d_model=128 --set max_epochs=4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("GDR_QUIET", "1")

from gdr_cli.config import parse_sets  # noqa: E402
from stages.config.diffurec import DiffurecConfig, DiffurecTrainConfig  # noqa: E402
from stages.config.preprocess import PreprocessConfig  # noqa: E402
from stages.data.sequences import eval_histories  # noqa: E402
from stages.metrics.ranking import metrics_from_ranks, target_rank  # noqa: E402
from stages.models.diffurec import DiffurecFamily  # noqa: E402
from stages.models.family import FamilyData  # noqa: E402
from stages.preprocess import run as preprocess  # noqa: E402
from stages.training.loop import fit  # noqa: E402
from stages.training.validation import make_validator  # noqa: E402

ML100K = REPO.parent / "shared" / "data" / "ml-100k"


def split_sets(pairs: list[str]) -> tuple[dict, dict]:
    """`key=value` pairs (gdr's own --set parsing) -> (model config overrides, loop config overrides)."""
    flat = parse_sets(pairs)
    model = {k: v for k, v in flat.items() if k in DiffurecConfig.model_fields}
    return model, {k: v for k, v in flat.items() if k not in model}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, default=ML100K, help="folder of the ml-100k RecBole atomic files")
    ap.add_argument("--set", action="append", default=[], help="override a DiffurecConfig / DiffurecTrainConfig field")
    ap.add_argument("--max-len", type=int, default=DiffurecFamily.default_max_len)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--val-steps", type=int, nargs="*", default=[], help="also report validation NDCG@10 of the best weights "
                    "with these numbers of reverse steps (validation only: to choose sample_steps)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_kw, loop_kw = split_sets(args.set)
    cfg, loop = DiffurecConfig(**model_kw), DiffurecTrainConfig(**loop_kw)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        preprocess(source="recbole", input=args.input, data_dir=root, config=PreprocessConfig(), name="ml")
        splits = pl.read_parquet(root / "ml" / "processed" / "splits.parquet")
        n_items = pl.read_parquet(root / "ml" / "processed" / "items.parquet").height
        data = FamilyData(splits=splits, n_items=n_items, max_len=args.max_len, seed=args.seed)
        family = DiffurecFamily()
        model, train = family.build(data, cfg), family.examples(data, cfg)
        val = eval_histories(splits, "valid", args.max_len, with_target=True)
        validate = make_validator(val["history"], val["target"], batch_size=loop.eval_batch_size)
        start = time.perf_counter()
        res = fit(
            model=model,
            train=train,
            validate=validate,
            cfg=loop,
            seed=args.seed,
            workdir=root / "work",
            desc="diffurec",
        )
        wall = time.perf_counter() - start

    model.load_state_dict(res.best_state)
    model.eval()
    by_steps = {}
    for steps in args.val_steps:
        t0 = time.perf_counter()
        total, users = make_validator(val["history"], val["target"], batch_size=loop.eval_batch_size,
                                      options=SimpleNamespace(sample_steps=steps))(model, 0, 1)  # fmt: skip
        by_steps[steps] = {"val_ndcg@10": round(total / users, 4), "seconds": round(time.perf_counter() - t0, 1)}
    test = eval_histories(splits, "test", args.max_len, with_target=True)
    t0 = time.perf_counter()
    ranks = torch.cat([target_rank(model.recommend(h, k=20)[0], y)
                       for h, y in zip(test["history"].split(512), test["target"].split(512), strict=True)])  # fmt: skip
    decode = time.perf_counter() - t0
    metrics = metrics_from_ranks(ranks)
    epochs = res.steps / max(1, -(-len(train["target"]) // loop.batch_size))
    curve = [
        (r["step"], r["epoch"], round(r["val_ndcg@10"], 4), r["wall_s"])
        for r in res.log
        if r["val_ndcg@10"] is not None
    ]
    # training-only time per epoch from the logged examples/s (fit's wall time includes validations)
    train_rows = [r for r in res.log if r["examples_per_s"]]
    ex_per_s = sum(r["examples_per_s"] for r in train_rows) / max(len(train_rows), 1)
    out = {
        "model": cfg.model_dump(),
        "loop": {
            k: v
            for k, v in loop.model_dump().items()
            if k
            in ("lr", "batch_size", "max_epochs", "max_steps", "warmup_steps", "weight_decay", "eval_every", "patience")
        },
        "max_len": args.max_len,
        "examples": len(train["target"]),
        "steps": res.steps,
        "epochs": round(epochs, 2),
        "stop_reason": res.stop_reason,
        "fit_wall_s": round(wall, 1),
        "train_s_per_epoch": round(len(train["target"]) / ex_per_s, 1) if ex_per_s else None,
        "val_curve (step, epoch, ndcg@10, wall_s)": curve,
        "best_val_ndcg@10": round(res.best_metric, 4),
        "best_step": res.best_step,
        "test_ndcg@10": round(metrics["ndcg@10"], 4),
        "test_recall@10": round(metrics["recall@10"], 4),
        "test_ndcg@20": round(metrics["ndcg@20"], 4),
        "test_recall@20": round(metrics["recall@20"], 4),
        "test_decode_s": round(decode, 2),
        "val_by_sample_steps": by_steps,
        "history": "kept",
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
