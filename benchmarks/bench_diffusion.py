"""Benchmark: the masked-diffusion recommender against the autoregressive tiger on MovieLens 100K
(or Last.fm 2K, `--dataset fm`).

Both models are trained through the real CLI (`gdr train-rec --model tiger`, `gdr diffuse`) on the
same ID set with `-c default` (the `make all` preset: fixed epochs) and about the same parameter count,
each selected on validation NDCG@10; then, on the test split, measured in one process with the same beam width:

- tiger: trie-constrained autoregressive beam search (one digit per step, KV cache)
- diffusion/cpd: the run's own step size (chosen on validation by `gdr diffuse`, what `gdr sample` uses)
- diffusion/cpd: the whole code in one step (every item scored by its digits' marginals: one model call)
- diffusion/cpd: the whole code in one step, its top found by a trie beam over the digits (`--whole-code beam`)
- diffusion/cpd: confidence-guided parallel beam search, 2 digits per step
- diffusion/cpd: 1 digit per step
- popularity (the floor)

Prints NDCG@10 / Recall@10 and users/s of each, the cpd/beam throughput ratio (target >= 2 at no
NDCG loss), the exact likelihood bound of the diffusion model, and the function evaluations per
user of `tweedie` with and without the per-row cache.

    python benchmarks/bench_diffusion.py                 # both models trained with -c default
    python benchmarks/bench_diffusion.py --quick         # 300 steps per model
    python benchmarks/bench_diffusion.py --dataset fm    # Last.fm 2K
    python benchmarks/bench_diffusion.py --data-dir D    # reuse D/ml (preprocessed + rqkmeans ids)
    python benchmarks/bench_diffusion.py --steps 300 --small --threads 1   # equal steps, small models
    python benchmarks/bench_diffusion.py --data-dir D --split valid --threads 1   # D/ml/runs/{tiger,diffusion} as trained

On a CPU both searches are compute-bound and evaluate about the same number of decoder slots
(cpd re-reads all n slots in 2 passes, the KV-cached beam reads 1 slot in n passes), so cpd's
halved number of sequential steps shows as throughput mainly on a GPU, where steps are latency-bound.
cpd's second pass shares what depends on the code alone (the first block's self-attention runs
once per distinct partial code) and its last block and heads run on the masked slots only; with
`--steps 300 --small --threads 1` on a 2-core CPU that measured cpd(2/step) 570 vs beam 503 users/s
(x1.13, from 257 vs 363 = x0.71), same NDCG@10 as before (0.0201 vs 0.0186), encoder + 2 passes ~80% of cpd's time.

2026-12-01, with the item-level loss (`item_loss` 1, the default since ablation round 10: the whole-code ranking is
trained directly), the step size chosen on validation; `--data-dir D --threads 1`, test users, beam 20, k 10;
users/s relative to tiger's beam in the same process:

    data, diffusion run                          tiger      run's step size            whole code (1 call/user)
    MovieLens 100K, make all's runs              0.0495     2/step 0.0420  x0.77        0.0455  x2.82
    Last.fm 2K, seed 42 (tiger seed 42)          0.0822     4/step 0.0968  x2.92        0.0968  x2.88
    Last.fm 2K, seed 3 (tiger seed 42)           0.0822     3/step 0.0997  x0.76        0.0995  x2.60
    (NDCG@10; the Last.fm runs: /tmp data roots linking `gdr diffuse fm -c default [--seed 3]` and
    `gdr train-rec fm --model tiger -c default` as runs/diffusion and runs/tiger)

With the one-standard-error step rule (`validation.choose_within_se` 1, ablation round 11), `make all`'s diffusion run
takes the whole code (0.0630 on validation, within one paired standard error 0.0053 of 2/step's 0.0650):

    MovieLens 100K, make all's runs              0.0495     4/step 0.0455  x3.16        0.0455  x3.20

(tiger − diffusion +0.0040 on test, p = 0.38 in the report's paired test; Last.fm seed 3 keeps 3/step: its whole code
is 0.0016 below on validation with a paired standard error of 0.0011.)

Before the item loss (same command, the round-9 defaults): MovieLens 1/step 0.0524 x0.36, whole code 0.0357 x2.85;
Last.fm seed 42 3/step 0.0848 x0.82, whole 0.0898 x2.61; seed 3 4/step 0.0902 x3.00. On Last.fm 2K the whole code
is now 0.015-0.017 above tiger at 2.6-2.9x its users/s; on MovieLens 100K it moved from 0.014 to 0.004 below tiger,
and validation there picks 2 digits per step (0.0650 against 0.0630 for the whole code), which decodes at 0.77x.
Where the time goes with the whole code (cProfile, 943 users): ~55% the history encoder (2 layers over 21
positions, once per user), ~20% the one decoder pass, ~10% the candidate gather and top-k, ~5% the repeat-head mix.

With both models trained by `-c default` (`--data-dir D --threads 1`, 943 users, beam 20, k 10; 2026-11-30):

    split   tiger       cpd 1/step (default)   cpd 1/step first=10   cpd 2/step         cpd 2/step first=5
    valid   0.0608      0.0593  x0.35           0.0598  x0.44         0.0463  x0.65      0.0556  x1.72
    test    0.0473      0.0505  x0.32           0.0502  x0.38         0.0454  x0.63      0.0419  x1.57
            (NDCG@10, and users/s relative to tiger's beam in the same process)

Only 2 digits per step with a narrow first step comes near 2x tiger, and it loses NDCG@10 on both splits, as
does 2/step at full width; first=10 with 1 digit/step is +0.0005 on validation, -0.0003 on test. So the
default stays cpd 1/step, beam 20. Where cpd's time goes (cProfile / torch.profiler, 943 users): ~75% the
decoder passes (59.4 model calls per user against tiger's 61, but a call runs n = 4 slots through the first
block and the masked slots through the last, against one cached position for tiger: matmuls ~35%, attention
~18%, GELU ~9%), ~6% the history encoder (once per user, its cross-attention keys/values projected once),
~15-20% validity bookkeeping (binary searches in the sorted code keys, top-k, gathers), little Python per
step (4 steps). Sampling rows attend to their user's keys/values in place ([users, slots, n] queries, not a
per-row copy) and excluded items are sparse lists: with `gdr sample`'s defaults (k 20, batch 256, 943 test
users, runs alternated with the previous code in separate processes) cpd went from 290 to 354-375 users/s
(tiger 900-1030 before and after: cpd/tiger x0.31 -> x0.37), and under --exclude-history from 43 to 98 users/s.

The `speed` branch (2026-11-30; both models trained by `-c default`, D/ml/runs/{tiger,diffusion}; lists
identical to the previous code for all 943 test users with cpd 1/step, 2/step and --exclude-history, scores
within 2e-6; the tiger changes are in `bench_decode.py`'s note):

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/bench_diffusion.py --data-dir D --threads 1 --first-beam
                       before (6 runs)          after (6 runs)           NDCG@10 (same before/after)
    tiger beam=20      1772-1937 users/s        1972-2203 users/s        0.0330
    cpd 1/step         604-686 (x0.32-0.36)     723-749 (x0.34-0.37)     0.0414   59.1 model calls per user
    cpd 2/step         1177-1366 (x0.61-0.71)   1343-1478 (x0.61-0.70)   0.0387   20.9 model calls per user
    (users/s; x = throughput relative to the faster of tiger's two passes in the same process)

With the old and new sampling paths switched in ONE process (alternated, `gdr sample` defaults: k 20, batch
256), cpd 1/step went from 571-607 to 721-760 users/s (+20-28%); tiger got faster too (its decoder changes),
so cpd/tiger moved only from ~x0.33 to ~x0.35-0.37. Where cpd's time goes now (cProfile, 943 users, k 20): 72%
the model calls (59.1 per user, against tiger's 61), 17% the beam step (candidates, top-k, representatives;
`needless` 1%), 7% the history encoder, Python self time <= 18% of it all (cProfile's upper bound). Inside
the model calls (torch.profiler): the feed-forward ~30% (now at the matmul's peak), cross-attention ~14%,
the other projections ~10%, self-attention ~6%, layer norms, gathers and copies the rest. A call costs ~3x
a tiger step because it runs all n = 4 slots of every row through the first block (the second block and
the heads run on the masked slots only) against one cached position per beam for tiger: per user ~360
slot-block evaluations against tiger's 122 decoder positions (plus 61 776-wide output layers). What this
branch changed, each checked against the previous path (tests in test_samplers.py): the feed-forward runs
over row chunks of ~1 MB hidden activations (`stages/models/row_chunks.py`: 20,480 slots x 256 = 20 MB made
it memory-bound; bit-identical, ~2x that sublayer); cross-attention has its query and output projections
folded into each user's keys and values once per batch (`DigitBlock.fold`: two batched matmuls per chunk
of users instead of two projections, the attention products and the head transposes; within 1e-6, +4-5%),
with a few-users-at-a-time matmul attention where no fold is at hand; and the one-digit step reads the allowed digits of
every masked position from the beams' few (beam, item) pairs in one scatter and one pass (binary searches
per digit only while the pairs outnumber beams x V). Already in place before (kept): the encoder and its
cross-attention keys/values once per user, read in place by all of the user's rows; the first block's
self-attention once per distinct partial code; the last block and the output heads on the masked slots
only; no model call for rows whose log-probs the step does not read (dead rows, codes one item completes).
Tried and dropped: the whole model call in chunks of 16-64 users (per-call overhead ate the cache gain:
-2% to -16%). The 2x target is out of reach without changing the lists: it needs fewer slot evaluations
(a cached encoder-decoder over the filled digits, or 2 digits per step with a narrow first step, which
lose NDCG@10 above).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("GDR_QUIET", "1")

from gdr_cli.app import main as gdr  # noqa: E402
from gdr_cli.paths import DataPaths  # noqa: E402
from stages.data.sequences import eval_histories  # noqa: E402
from stages.inputs import open_processed  # noqa: E402
from stages.metrics.ranking import metrics_from_ranks, target_rank  # noqa: E402
from stages.models.popularity import Popularity  # noqa: E402
from stages.models.registry import load_model  # noqa: E402
from stages.samplers.base import SamplerOptions  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DATASETS = {  # name -> (raw dump, preprocess arguments)
    "ml": (SHARED / "ml-100k", ["recbole"]),
    "fm": (SHARED / "hetrec2011-lastfm-2k", ["lastfm-2k"]),
}


def run(*args: str) -> None:
    code = gdr(list(args))
    if code:
        raise SystemExit(f"`gdr {' '.join(args)}` failed with exit code {code}")


def evaluate(
    model,
    history: torch.Tensor,
    target: torch.Tensor,
    *,
    sampler: str,
    options: SamplerOptions,
    batch: int,
    rounds: int = 2,
) -> dict:
    """Test NDCG@10/Recall@10 and users/s (best of `rounds` timed passes)."""
    best, items = float("inf"), None
    nfe = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        out, evals = [], 0.0
        for lo in range(0, len(history), batch):
            got, _ = model.recommend(history[lo : lo + batch], k=10, sampler=sampler, options=options)
            out.append(got)
            evals += getattr(model, "sample_stats", {}).get("nfe", 0.0) * len(got)
        best = min(best, time.perf_counter() - start)
        items, nfe = torch.cat(out), evals / len(history)
    metrics = metrics_from_ranks(target_rank(items, target), ks=(10,))
    return {
        "ndcg@10": metrics["ndcg@10"],
        "recall@10": metrics["recall@10"],
        "users_per_s": len(history) / best,
        "nfe": nfe,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 training steps per model")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock cap per model (default: none)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ml", help="ml: MovieLens 100K, fm: Last.fm 2K")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data root holding DATASET/ (built here if missing)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="train both for this many optimiser steps instead of a budget"
    )
    parser.add_argument("--small", action="store_true", help="d_model 64 / d_ff 256 for both models (4x cheaper)")
    parser.add_argument("--beam", type=int, default=20, help="beam width of both searches")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--split", choices=["test", "valid"], default="test", help="users' split to score (valid: model selection)"
    )
    parser.add_argument(
        "--first-beam",
        type=int,
        nargs="*",
        default=[10],
        help="extra cpd rows (1 and 2 digits per step) with these first-step widths",
    )
    parser.add_argument("--rounds", type=int, default=2, help="timed passes per row (the best is kept)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    raw, how = DATASETS[args.dataset]
    if not raw.exists() and args.data_dir is None:
        print(f"skipped: {raw} not found")
        return 0
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="gdr-bench-diffusion-"))
    ds = args.dataset
    paths = DataPaths(root, ds)
    d = str(root)
    if not (paths.processed / "manifest.json").exists():
        run("preprocess", *how, "-i", str(raw), "--name", ds, "--data-dir", d)
    if not (paths.ids("rqkmeans") / "manifest.json").exists():
        run("build-ids", ds, "-c", "default", "--data-dir", d)
    steps = args.steps or (300 if args.quick else None)
    budget = ["-c", "default"] + (["--set", f"train.max_steps={steps}"] if steps else [])
    budget += ["--max-minutes", str(args.minutes)] if args.minutes else []
    small = {"tiger": ["--set", "tiger.d_model=64", "--set", "tiger.d_kv=16", "--set", "tiger.d_ff=256"],
             "diffusion": ["--set", "d_model=64", "--set", "d_ff=256"]} if args.small else {"tiger": [], "diffusion": []}  # fmt: skip
    for name, cmd in (("tiger", ["train-rec", ds, "--model", "tiger"]), ("diffusion", ["diffuse", ds])):
        if not (paths.run(name) / "manifest.json").exists():
            run(*cmd, "--ids", "rqkmeans", "--run", name, "--data-dir", d, *budget, *small[name])

    splits = open_processed(paths).table("splits")
    test = eval_histories(splits, args.split, 20, with_target=True)
    history, target = test["history"], test["target"]
    tiger, _ = load_model(paths.run("tiger"))
    diffusion, meta = load_model(paths.run("diffusion"))
    chosen = int(meta.get("digits_per_step", 1))  # the run's step size, chosen on validation (`gdr sample`'s default)
    search = str(meta.get("whole_code", "exact"))  # and its whole-code search (`--whole-code`)
    whole = int(diffusion.codes.shape[1])  # digits per code
    params = {m.kind: sum(p.numel() for p in m.parameters()) for m in (tiger, diffusion)}
    pop = Popularity(n_items=open_processed(paths).n_items)
    pop.fit_counts(torch.from_numpy(splits["train"].explode().drop_nulls().to_numpy().astype("int64")))

    beam, r = args.beam, args.rounds
    rows = {
        "pop": evaluate(pop, history, target, sampler=None, options=SamplerOptions(beam=beam), batch=256, rounds=1),
        f"tiger beam={beam}": evaluate(tiger, history, target, sampler="beam", options=SamplerOptions(beam=beam), batch=256, rounds=r),
        f"diffusion cpd run's {chosen}/step{' (trie beam)' if search == 'beam' else ''}": evaluate(
            diffusion, history, target, sampler="cpd", batch=256, rounds=r,
            options=SamplerOptions(beam=beam, digits_per_step=chosen, whole_code=search)),
        f"diffusion cpd {whole}/step (whole code)": evaluate(
            diffusion, history, target, sampler="cpd", options=SamplerOptions(beam=beam, digits_per_step=whole), batch=256, rounds=r),
        f"diffusion cpd {whole}/step (trie beam)": evaluate(
            diffusion, history, target, sampler="cpd", batch=256, rounds=r,
            options=SamplerOptions(beam=beam, digits_per_step=whole, whole_code="beam")),
        f"diffusion cpd 2/step beam={beam}": evaluate(
            diffusion, history, target, sampler="cpd", options=SamplerOptions(beam=beam, digits_per_step=2), batch=256, rounds=r),
        f"diffusion cpd 1/step beam={beam}": evaluate(
            diffusion, history, target, sampler="cpd", options=SamplerOptions(beam=beam, digits_per_step=1), batch=256, rounds=r),
    }  # fmt: skip
    for (
        first
    ) in args.first_beam:  # DIFF_GRM's other lever: fewer beams after the first step (fewer rows in the second pass)
        for digits in (1, 2):
            rows[f"diffusion cpd {digits}/step first={first}"] = evaluate(diffusion, history, target, sampler="cpd", batch=256,
                rounds=r, options=SamplerOptions(beam=beam, first_beam=first, digits_per_step=digits))  # fmt: skip
    rows[f"tiger beam={beam} (again)"] = evaluate(
        tiger, history, target, sampler="beam", options=SamplerOptions(beam=beam), batch=256, rounds=r
    )
    cached = evaluate(diffusion, history[:256], target[:256], sampler="tweedie",
                      options=SamplerOptions(beam=beam, steps=16, use_cache=True), batch=256, rounds=1)  # fmt: skip
    plain = evaluate(diffusion, history[:256], target[:256], sampler="tweedie",
                     options=SamplerOptions(beam=beam, steps=16, use_cache=False), batch=256, rounds=1)  # fmt: skip
    stats = json.loads((paths.run("diffusion") / "manifest.json").read_text())["stats"]

    budget_text = f"{steps} steps" if steps else "-c default"
    print(f"{ds} {args.split} split, {len(history)} users, {budget_text} per model, history items kept, k 10")
    print(f"params: tiger {params['tiger']:,}, diffusion {params['diffusion']:,}")
    print(f"{'model / sampler':36s} {'NDCG@10':>8s} {'R@10':>7s} {'users/s':>9s} {'NFE/user':>9s}")
    for name, r in rows.items():
        print(f"{name:36s} {r['ndcg@10']:8.4f} {r['recall@10']:7.4f} {r['users_per_s']:9.1f} {r['nfe']:9.1f}")
    base = rows[f"tiger beam={beam}"]  # the faster of tiger's two passes (before and after the diffusion rows)
    base = max(base, rows[f"tiger beam={beam} (again)"], key=lambda row: row["users_per_s"])
    for name, fast in rows.items():
        if name.startswith("diffusion cpd"):
            print(f"{name[10:]} / tiger beam: throughput x{fast['users_per_s'] / base['users_per_s']:.2f} (target >= 2), "
                  f"NDCG@10 {fast['ndcg@10'] - base['ndcg@10']:+.4f}")  # fmt: skip
    print(f"diffusion exact bound on validation: {stats.get('val_nll_bound_nats')} nats/item, "
          f"perplexity {stats.get('val_perplexity_per_digit')} per digit")  # fmt: skip
    print(f"tweedie 16 steps, {beam} samples/user: NFE/user {cached['nfe']:.1f} with cache vs {plain['nfe']:.1f} without "
          f"(x{plain['nfe'] / max(cached['nfe'], 1e-9):.2f} fewer); NDCG@10 {cached['ndcg@10']:.4f} (256 users)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
