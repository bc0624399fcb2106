"""`make bench-quality`: every model on MovieLens 100K and Last.fm 2K (item view), one report each.

For each dataset it runs the whole chain with one config preset (`--config full` by default):
preprocess -> build-ids -> pop and every registered model (train-rec families, diffuse) -> sample the
test split with history items kept and excluded -> `gdr evaluate --report`, and prints one table of
test NDCG@10 / Recall@10 per model and history mode with the training time of each run.

    .venv/bin/python benchmarks/bench_quality.py [--config full] [--models pop,sasrec,tiger,diffusion]
                                                 [--datasets ml-100k,lastfm-2k] [--out bench-out/quality]

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


def run_dataset(name: str, models: list[str], config: str, out: Path) -> list[dict]:
    d = ["--data-dir", str(out), "--config", config]
    gdr("preprocess", *SOURCES[name], "--name", name, *d)
    gdr("build-ids", name, "--ids", "ids", *d)
    seconds: dict[str, float] = {}
    generative = {k for k, f in _families().items() if f.needs_ids}
    for model in models:
        start = time.perf_counter()
        if model == "diffusion":
            gdr("diffuse", name, "--ids", "ids", "--run", model, *d)
        else:
            ids = ["--ids", "ids"] if model in generative else []
            gdr("train-rec", name, "--model", model, *ids, "--run", model, *d)
        seconds[model] = time.perf_counter() - start
        gdr("sample", name, "--run", model, "--split", "test", *d)
        gdr("sample", name, "--run", model, "--split", "test", "--exclude-history", "--name", f"{model}-excl", *d)
    gdr("evaluate", name, "--split", "test", "--report", *d)
    metrics = out / name / "metrics"
    rows = []
    for model in models:
        for suffix, mode in (("", "kept"), ("-excl", "excluded")):
            m = json.loads((metrics / f"{model}{suffix}" / "test" / "metrics.json").read_text())
            rows.append({"dataset": name, "model": model, "history": mode, "ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"],
                         "train_s": seconds[model]})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="full")
    parser.add_argument("--models", default=None, help="comma-separated; default: pop and every registered model")
    parser.add_argument("--datasets", default="ml-100k,lastfm-2k")
    parser.add_argument("--out", default=str(ROOT / "bench-out" / "quality"))
    args = parser.parse_args()
    models = args.models.split(",") if args.models else default_models()
    rows = []
    for name in args.datasets.split(","):
        if not Path(SOURCES[name][2]).exists():
            print(f"skip {name}: {SOURCES[name][2]} not found")
            continue
        rows += run_dataset(name, models, args.config, Path(args.out))
    print("\n| dataset | model | history | NDCG@10 | Recall@10 | train (s) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['model']} | {r['history']} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['train_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
