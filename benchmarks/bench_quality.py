"""`make bench-quality`: every model on MovieLens 100K and Last.fm 2K (item view), one report each.

For each dataset it runs the whole chain with one config preset (`--config full` by default):
preprocess -> build-ids -> pop and every registered model (train-rec families, diffuse) -> sample the
test split with history items kept and excluded -> `gdr evaluate --report`, and prints one table of
test NDCG@10 / Recall@10 per model and history mode with the training time of each run.

    .venv/bin/python benchmarks/bench_quality.py [--config full] [--models pop,sasrec,tiger,diffusion]
                                                 [--datasets ml-100k,lastfm-2k] [--out bench-out/quality]
                                                 [--seeds 42,3,7]

With several `--seeds` every trained model runs once per seed (runs `MODEL-sSEED`; popularity has no seed)
and a second table gives validation and test NDCG@10 (history kept) as mean ± sample std over the seeds.
On ~1,000 users one seed moves validation NDCG@10 by ~0.003 and the best-of-many-checkpoints choice
inflates it: in benchmarks/ablation_quality.md (round 6) single-seed validation differences below ~0.008
did not predict the test differences on MovieLens 100K, so compare defaults over seeds.

The data comes from ../shared/data (PROTOCOL.md §5); a dataset whose folder is missing is skipped.
Model selection inside each run is on validation NDCG@10 only; the test split is read once, by evaluate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
SOURCES = {
    "ml-100k": ["recbole", "--input", str(SHARED / "ml-100k")],
    "lastfm-2k": ["lastfm-2k", "--input", str(SHARED / "hetrec2011-lastfm-2k")],
}


def gdr(*args: str) -> None:
    from gdr_cli.app import main

    code = main(list(args))
    if code:
        raise SystemExit(f"gdr {' '.join(args)} exited {code}")


def _families() -> dict:
    from stages.models.registry import model_families

    return model_families()


def default_models() -> list[str]:
    return ["pop", *[k for k in _families() if k != "diffusion"], "diffusion"]


def run_names(models: list[str], seeds: list[int]) -> list[tuple[str, str, int | None]]:
    """(model, run name, seed) of every run: one per model and seed (`MODEL-sSEED` with several seeds);
    popularity, which has no seed, runs once."""
    out = []
    for model in models:
        for seed in [None] if model == "pop" else seeds:
            run = model if model == "pop" or len(seeds) == 1 else f"{model}-s{seed}"
            out.append((model, run, seed))
    return out


def run_dataset(name: str, models: list[str], config: str, out: Path, seeds: list[int]) -> list[dict]:
    d = ["--data-dir", str(out), "--config", config]
    gdr("preprocess", *SOURCES[name], "--name", name, *d)
    gdr("build-ids", name, "--ids", "ids", *d)
    seconds: dict[str, float] = {}
    generative = {k for k, f in _families().items() if f.needs_ids}
    runs = run_names(models, seeds)
    for model, run, seed in runs:
        start = time.perf_counter()
        seeded = [] if seed is None else ["--seed", str(seed)]
        if model == "diffusion":
            gdr("diffuse", name, "--ids", "ids", "--run", run, *seeded, *d)
        else:
            ids = ["--ids", "ids"] if model in generative else []
            gdr("train-rec", name, "--model", model, *ids, "--run", run, *seeded, *d)
        seconds[run] = time.perf_counter() - start
        gdr("sample", name, "--run", run, "--split", "test", *d)
        gdr("sample", name, "--run", run, "--split", "test", "--exclude-history", "--name", f"{run}-excl", *d)
    gdr("evaluate", name, "--split", "test", "--report", *d)
    metrics = out / name / "metrics"
    rows = []
    for model, run, seed in runs:
        manifest = json.loads((out / name / "runs" / run / "manifest.json").read_text())
        val = manifest.get("stats", {}).get("best_val_ndcg@10")
        for suffix, mode in (("", "kept"), ("-excl", "excluded")):
            m = json.loads((metrics / f"{run}{suffix}" / "test" / "metrics.json").read_text())
            rows.append({"dataset": name, "model": model, "run": run, "seed": seed, "history": mode, "val": val,
                         "ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"], "train_s": seconds[run]})  # fmt: skip
    return rows


def seed_table(rows: list[dict]) -> str:
    """Markdown table: per dataset and model, validation and test NDCG@10 (history kept) as mean ± std over seeds."""
    import statistics

    lines = [
        "| dataset | model | seeds | val NDCG@10 | test NDCG@10 | per seed (val / test) |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["history"] == "kept":
            groups.setdefault((r["dataset"], r["model"]), []).append(r)

    def fmt(xs: list[float | None]) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "–"
        return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"

    for (dataset, model), rs in groups.items():
        each = ", ".join(
            f"{r['seed'] or '–'}: {'–' if r['val'] is None else format(r['val'], '.4f')} / {r['ndcg@10']:.4f}"
            for r in rs
        )
        lines.append(
            f"| {dataset} | {model} | {len(rs)} | {fmt([r['val'] for r in rs])} | {fmt([r['ndcg@10'] for r in rs])} | {each} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="full")
    parser.add_argument("--models", default=None, help="comma-separated; default: pop and every registered model")
    parser.add_argument("--datasets", default="ml-100k,lastfm-2k")
    parser.add_argument("--out", default=str(ROOT / "bench-out" / "quality"))
    parser.add_argument("--seeds", default="42", help="comma-separated seeds; each trained model runs once per seed")
    args = parser.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    models = args.models.split(",") if args.models else default_models()
    rows = []
    for name in args.datasets.split(","):
        if not Path(SOURCES[name][2]).exists():
            print(f"skip {name}: {SOURCES[name][2]} not found")
            continue
        rows += run_dataset(name, models, args.config, Path(args.out), seeds)
    print("\n| dataset | run | history | NDCG@10 | Recall@10 | train (s) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['run']} | {r['history']} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['train_s']:.0f} |"
        )
    if len(seeds) > 1:
        print("\n" + seed_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
