"""Benchmark: which ID set helps TIGER — codebook size rule x embedding source.

For each dataset, builds one ID set per {codebook 256, auto} x {text (TF-IDF -> SVD), collab,
hybrid (TF-IDF + collab), minilm (all-MiniLM-L6-v2, when the `embed` extra is installed)} with
`gdr build-ids` (rqkmeans, 3 levels, every other key at its default), reports the collision rate
(share of items whose semantic code, before the collision digit, another item shares) and the
largest collision group, then trains TIGER for a FIXED number of steps (`gdr train-rec --model
tiger --set train.max_steps=S`, validated once at the end) and reports validation NDCG@10
(never test). Every command runs as a subprocess of the CLI, one at a time.

    OMP_NUM_THREADS=1 python benchmarks/bench_ids.py                       # both datasets, 400 steps (the table below)
    python benchmarks/bench_ids.py --datasets ml-100k --steps 200 --sources text collab
    python benchmarks/bench_ids.py --data-dir /tmp/ids-bench --shared ../shared/data

Measured 2026-11-30 with `OMP_NUM_THREADS=1 python benchmarks/bench_ids.py --steps 400` (2-core
CPU shared with other jobs, so the seconds are loaded wall times; TIGER defaults, batch 128,
seed 42, 400 steps = about half an epoch, validated once at the end; collide = share of items
whose semantic code another item shares; max = largest such group = the collision digit's size):

    dataset    codes source         vocab            collide  max   val@10
    ml-100k      256 text           256x256x256x4     11.3%    4   0.0261  (12s + 253s)
    ml-100k      256 collab         256x256x256x1      0.0%    1   0.0342  (14s + 191s)
    ml-100k      256 hybrid         256x256x256x2      0.3%    2   0.0423  (11s + 199s)
    ml-100k      256 minilm         256x256x256x2      1.6%    2   0.0289  (38s + 234s)
    ml-100k     auto text           37x37x37x15       45.2%   15   0.0310  (14s + 212s)
    ml-100k     auto collab         37x37x37x10       18.8%   10   0.0439  (13s + 224s)
    ml-100k     auto hybrid         37x37x37x6        23.4%    6   0.0494  (15s + 252s)
    ml-100k     auto minilm         37x37x37x4        10.5%    4   0.0327  (46s + 213s)
    lastfm-2k    256 text           256x256x256x12    32.4%   12   0.0213  (16s + 225s)
    lastfm-2k    256 collab         256x256x256x6      3.2%    6   0.0314  (19s + 197s)
    lastfm-2k    256 hybrid         256x256x256x4      2.2%    4   0.0301  (20s + 210s)
    lastfm-2k    256 minilm         256x256x256x2      1.2%    2   0.0233  (55s + 191s)
    lastfm-2k   auto text           65x65x65x66       43.3%   66   0.0185  (15s + 174s)
    lastfm-2k   auto collab         65x65x65x19       29.7%   19   0.0370  (11s + 133s)
    lastfm-2k   auto hybrid         65x65x65x8        10.8%    8   0.0313  (14s + 146s)
    lastfm-2k   auto minilm         65x65x65x6         8.1%    6   0.0228  (40s + 152s)

    extra, auto + hybrid with --set embed.collab_weight=0.75 (default 0.5), same 400 steps:
    ml-100k     auto hybrid-w.75    37x37x37x5        17.5%    5   0.0426
    lastfm-2k   auto hybrid-w.75    65x65x65x8        22.5%    8   0.0325

    extra, the two best again with TIGER seed 43 (`--set seed=43`), and the 2-seed means:
    ml-100k     auto collab     0.0485   mean 0.0462     auto hybrid     0.0439   mean 0.0467
    lastfm-2k   auto collab     0.0327   mean 0.0349     auto hybrid     0.0293   mean 0.0303

For scale: popularity's test NDCG@10 on MovieLens 100K is 0.022 (PROTOCOL.md). `auto` beats 256 for every source on
MovieLens 100K and for collab/hybrid on Last.fm (mean over the sources: 0.0329 -> 0.0393 and
0.0265 -> 0.0274). Text alone is weakest (Last.fm text is only the artist name; its TF-IDF puts
66 artists on one code); MiniLM beats TF-IDF text in all four cells (+0.002 to +0.004) but stays
far below collab and hybrid. One seed: differences
below ~0.004 are within noise (~940 / ~1,150 validation users); the second seed moved single
cells by up to 0.005.

Defaults chosen from these validation numbers on both datasets (stages/config/build_ids.py,
configs/default.yaml): codebook auto (better than 256 averaged over the sources on both) and
source collab (with auto: tied with hybrid on MovieLens 100K, 0.0462 vs 0.0467 over 2 seeds, and
ahead on Last.fm 2K in both seeds, 0.0349 vs 0.0303). Hybrid stays the choice when text should
place items that have no training co-occurrence.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = {  # label -> build-ids flags
    "text": ["--source", "text"],
    "collab": ["--source", "collab"],
    "hybrid": ["--source", "hybrid"],
    "minilm": ["--source", "text", "--embedder", "minilm"],
    "hybrid-minilm": ["--source", "hybrid", "--embedder", "minilm"],
}
PREPROCESS = {  # dataset -> (preprocess source, folder under --shared)
    "ml-100k": ("recbole", "ml-100k"),
    "lastfm-2k": ("lastfm-2k", "hetrec2011-lastfm-2k"),
}


def gdr(*args: str) -> None:
    """Run one `gdr` command (quiet), failing loudly with its stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "GDR_QUIET": "1"}
    res = subprocess.run([sys.executable, "-m", "gdr_cli", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"gdr {' '.join(args)} failed:\n{res.stderr[-3000:]}")


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def ensure_processed(root: Path, dataset: str, shared: Path) -> None:
    if (root / dataset / "processed" / "manifest.json").exists():
        return
    source, folder = PREPROCESS[dataset]
    gdr("preprocess", source, "--input", str(shared / folder), "--name", dataset, "--data-dir", str(root))


def bench(root: Path, dataset: str, codebooks: list[str], sources: list[str], steps: int, seed: int) -> list[dict]:
    rows = []
    for codebook in codebooks:
        for label in sources:
            name = f"bench-{codebook}-{label}"
            t0 = time.perf_counter()
            gdr("build-ids", dataset, "--data-dir", str(root), "--ids", name, "--codebook", codebook, *SOURCES[label])
            ids = manifest(root / dataset / "ids" / name)["stats"]
            t1 = time.perf_counter()
            gdr("train-rec", dataset, "--data-dir", str(root), "--model", "tiger", "--ids", name, "--run", name,
                "--set", f"train.max_steps={steps}", "--set", f"train.eval_every={steps}", "--set", f"seed={seed}")  # fmt: skip
            run = manifest(root / dataset / "runs" / name)["stats"]
            row = {
                "dataset": dataset,
                "codebook": codebook,
                "source": label,
                "vocab": ids["vocab_sizes"],
                "collision": ids["colliding_items"] / ids["entities"],
                "max_group": ids["max_collisions"],
                "val_ndcg10": run["best_val_ndcg@10"],
                "ids_s": round(t1 - t0, 1),
                "train_s": round(time.perf_counter() - t1, 1),
            }
            print(fmt(row), flush=True)
            rows.append(row)
    return rows


def fmt(r: dict) -> str:
    vocab = "x".join(str(v) for v in r["vocab"])
    return (f"{r['dataset']:<10} {r['codebook']:>5} {r['source']:<14} {vocab:<16} {r['collision']:>6.1%} {r['max_group']:>4} "
            f"{r['val_ndcg10']:>8.4f}  ({r['ids_s']:.0f}s + {r['train_s']:.0f}s)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(PREPROCESS), choices=list(PREPROCESS))
    ap.add_argument("--codebooks", nargs="+", default=["256", "auto"])
    ap.add_argument("--sources", nargs="+", default=["text", "collab", "hybrid", "minilm"], choices=list(SOURCES))
    ap.add_argument("--steps", type=int, default=400, help="TIGER optimiser steps (fixed; validated once at the end)")
    ap.add_argument("--seed", type=int, default=42, help="TIGER seed")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/gdr-bench-ids"))
    ap.add_argument(
        "--shared",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="folder with ml-100k/ and hetrec2011-lastfm-2k/",
    )
    args = ap.parse_args()
    sources = [s for s in args.sources if "minilm" not in s or importlib.util.find_spec("all_minilm_l6_v2")]
    print(f"{'dataset':<10} {'codes':>5} {'source':<14} {'vocab':<16} {'collide':>7} {'max':>4} {'val@10':>8}")
    for dataset in args.datasets:
        ensure_processed(args.data_dir, dataset, args.shared)
        bench(args.data_dir, dataset, args.codebooks, sources, args.steps, args.seed)


if __name__ == "__main__":
    main()
