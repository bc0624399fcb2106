"""Benchmark: SASRec / HSTU (gdr families, their default configs) on a real dataset.

Preprocesses the data with gdr's own `preprocess` stage into a temporary data root, trains the
family through the shared loop `fit` (validation NDCG@10 once per epoch, early stopping), then
ranks the test split once with the best-validation weights (history items kept, PROTOCOL.md §1).
Prints validation NDCG@10 and seconds per epoch, then test NDCG/Recall/MRR@10 (and popularity's).

    python benchmarks/bench_seqrec.py                                   # SASRec on MovieLens 100K
    python benchmarks/bench_seqrec.py --family hstu
    python benchmarks/bench_seqrec.py --source lastfm-2k --input ../shared/data/hetrec2011-lastfm-2k
    python benchmarks/bench_seqrec.py --set dropout=0.3 --set train.lr=2e-3   # try other settings

Reference on MovieLens 100K (RecBole atomic files, this split): RecBole's SASRec reaches test
NDCG@10 0.0612, Recall@10 0.1283 (~130 s/epoch on a 2-core box). Measured here with the defaults
(seed 42, 1 thread on a shared 2-core box; two runs, identical numbers): best val NDCG@10 0.0680 at
epoch 50 of 60 (early stop), 11-22 s/epoch incl. validation depending on the box's load; test
NDCG@10 0.0602, Recall@10 0.1220, MRR@10 0.0416 (popularity 0.0224 / 0.0498 / 0.0142). HSTU
(`--family hstu --set train.max_epochs=20`): val 0.0700, test NDCG@10 0.0585, Recall@10 0.1379,
~5.6 s/epoch. Last.fm 2K items (SASRec, capped at 40 epochs, still rising): val 0.0943, test
NDCG@10 0.0864, Recall@10 0.1337 (popularity 0.0274 / 0.0495).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gdr_cli.config import parse_sets  # noqa: E402
from gdr_cli.paths import DataPaths  # noqa: E402
from stages import preprocess  # noqa: E402
from stages.config.preprocess import PreprocessConfig  # noqa: E402
from stages.data.sequences import eval_histories  # noqa: E402
from stages.inputs import open_processed  # noqa: E402
from stages.metrics.ranking import metrics_from_ranks, target_rank  # noqa: E402
from stages.models.family import FamilyData  # noqa: E402
from stages.models.hstu import HstuFamily  # noqa: E402
from stages.models.popularity import Popularity  # noqa: E402
from stages.models.sasrec import SasrecFamily  # noqa: E402
from stages.training.loop import fit  # noqa: E402
from stages.training.validation import make_validator  # noqa: E402

FAMILIES = {"sasrec": SasrecFamily, "hstu": HstuFamily}


def overrides(pairs: list[str]) -> tuple[dict, dict]:
    """--set key=value (gdr's own --set parsing) -> (model section, train section) overrides."""
    model = parse_sets(pairs)
    return model, model.pop("train", {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), default="sasrec")
    ap.add_argument("--source", default="recbole")
    ap.add_argument("--input", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="model or train.* setting, e.g. dropout=0.3")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    family = FAMILIES[args.family]()
    model_set, train_set = overrides(args.set)
    cfg = family.config(**model_set)
    train_cfg = family.train_config(**{"log_every": 1000, "checkpoint_every": 100_000, **train_set})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        preprocess.run(source=args.source, data_dir=root, config=PreprocessConfig(), input=args.input, name="data")
        processed = open_processed(DataPaths(root, "data"))
        splits = processed.table("splits")
        max_len = args.max_len or family.default_max_len
        data = FamilyData(splits=splits, n_items=processed.n_items, max_len=max_len, seed=args.seed)
        model = family.build(data, cfg)
        train = family.examples(data, cfg)
        val = eval_histories(splits, "valid", max_len, with_target=True)
        validate = make_validator(val["history"], val["target"], batch_size=train_cfg.eval_batch_size)
        t0 = time.perf_counter()
        result = fit(model=model, train=train, validate=validate, cfg=train_cfg, seed=args.seed, workdir=root / "work",
                     desc=f"{args.family} bench")  # fmt: skip
        seconds = time.perf_counter() - t0

        model.load_state_dict(result.best_state)
        model.eval()
        test = eval_histories(splits, "test", max_len, with_target=True)
        ranks = torch.cat([
            target_rank(model.recommend(test["history"][lo:lo + 512], k=10)[0], test["target"][lo:lo + 512])
            for lo in range(0, len(test["target"]), 512)
        ])  # fmt: skip
        metrics = metrics_from_ranks(ranks, ks=(10,))
        pop = Popularity(n_items=processed.n_items)
        pop.fit_counts(torch.from_numpy(splits["train"].explode().drop_nulls().to_numpy().astype("int64")))
        pop_metrics = metrics_from_ranks(target_rank(pop.recommend(test["history"], k=10)[0], test["target"]), ks=(10,))

    epochs = [r for r in result.log if r["val_ndcg@10"] is not None]
    print(f"{args.family} on {args.source} ({processed.n_items} items, {len(train['seq'])} windows, max_len {max_len})")
    print(f"model config: {cfg.model_dump()}")
    print(
        f"train config: {train_cfg.model_dump(include={'lr', 'batch_size', 'weight_decay', 'warmup_steps', 'patience', 'min_lr_ratio'})}"
    )
    print("epoch  val_ndcg@10  loss")
    for r in epochs:
        loss = "-" if r["loss"] is None else f"{r['loss']:.4f}"
        print(f"{r['epoch']:5.0f}  {r['val_ndcg@10']:.4f}       {loss}")
    print(
        f"{len(epochs)} epochs in {seconds:.1f} s ({seconds / max(len(epochs), 1):.2f} s/epoch incl. validation); "
        f"best val NDCG@10 {result.best_metric:.4f} at step {result.best_step} ({result.stop_reason})"
    )
    print("test (best-validation weights, history kept): "
          + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))  # fmt: skip

    print(
        "popularity on the same test users (history kept): " + ", ".join(f"{k} {v:.4f}" for k, v in pop_metrics.items())
    )


if __name__ == "__main__":
    main()
