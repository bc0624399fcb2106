"""Benchmark: every stage at catalogue scale — time and peak memory from 10k to 1M items.

For each size (default 10,000 items / 1,000 users, then 1,000,000 items / 100,000 users) a synthetic
dataset is generated (`gdr preprocess synthetic`: uniform popularity and 40 interactions per user so
that nearly every item occurs, no item k-core), then `gdr build-ids` (rqkmeans), one capped epoch of
`gdr train-rec --model tiger` and of `gdr diffuse` (`train.max_steps`, validated once at the end) and
sampling with tiger's beam and the diffusion model's cpd, tweedie and ordered samplers on a fixed
number of test users (the same `model.recommend` call as `gdr sample`, with its default options).
Every stage runs in its own process; its wall time and peak RSS (`wait4`) are printed. Targets
(issue 13): every stage under 8 GB peak RSS; sampling throughput at the large size within 3x of the
small size's (printed as small/large users/s ratios).

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py                      # 10k vs 1M items (heavy: ~20 min, 14 of them build-ids)
    python benchmarks/bench_scale.py --quick                                 # 2k vs 20k items (minutes; what `make bench` runs)
    python benchmarks/bench_scale.py --sizes 10000:1000 100000:10000 --sample-users 256
    python benchmarks/bench_scale.py --sampling-only --sizes 10000:1 1000000:1   # samplers alone (minutes)
    python benchmarks/bench_scale.py --sampling-only --sizes 10000:1 1000000:1 --samplers cpd   # one sampler

`--sampling-only` skips the pipeline: randomly initialised tiger and diffusion models (default
config sizes) over random codes (3 levels of ~N^(1/3) digits plus a collision digit, as rqkmeans
with codebook auto makes them) decode random histories, each sampler in its own process, with the
user's 20 history items excluded (`--exclude-history`, the heavier path).

Measured 2026-11-30 on the shared 2-core CPU (loaded; OMP_NUM_THREADS=1, 256 users, beam 20, k 20):

    --sampling-only --sizes 10000:1 1000000:1     users/s 10k -> 1M   ratio   peak RSS at 1M
        beam (tiger)                                  648 -> 860       x0.75   0.70 GB
        cpd (1 digit/step)                            162 -> 142       x1.14   1.20 GB   (before: x6.5-x15, 3.74 GB)
        tweedie                                        91 -> 100       x0.91   1.01 GB   (before: x2.6, 3.31 GB)
        ordered                                       312 -> 199       x1.56   1.03 GB   (before: x4.7, 3.30 GB)

2026-12-01, raw digit scores (the new default; a code one item completes still needs its log-probs), same command
with `--samplers cpd`: 702 -> 360 users/s (x1.95), 61.0 calls/user at 1M items, peak RSS 1.12 GB.

2026-12-01, cpd with the whole code in one step (`cpd-whole`: what a run trained with the item-level loss often
chooses on validation), `--samplers beam cpd-whole --sample-users 256`:

        beam (tiger)                                 1618 -> 1452      x1.11   0.74 GB
        cpd-whole (1 call/user)                      2806 ->   37      x75     1.47 GB
        cpd-whole, per-position gathers + memo       3146 ->   81      x39     1.38 GB   (beam 1700 -> 1409 alongside)

2026-12-01, cpd at 2 digits per step (`cpd-2`: what a run chooses when the whole code is not within noise of the
best, or costs more), `--samplers beam cpd-2 --sample-users 256`, during a test-suite run (loaded):

        beam (tiger)                                  690 -> 1232      x0.56   0.72 GB
        cpd-2 (21 calls/user)                         235 ->  133      x1.76   1.50 GB

2026-12-01 (later), `--samplers beam cpd cpd-2 cpd-beam --sample-users 512`, beside a 1M-item pipeline run (loaded):

        beam (tiger)                                 1903 -> 1438      x1.32   0.72 GB
        cpd (1 digit/step)                            662 ->  362      x1.83   1.15 GB
        cpd-2 (21 calls/user)                         704 ->  323      x2.18   1.33 GB   (before: 235 -> 133)
        cpd-beam (1 call/user, trie beam)            4974 -> 3522      x1.41   1.03 GB   2.45x tiger's beam at 1M

cpd-2 at 1M: its second step enumerated every (beam, item) pair against all 6 position pairs and looked the
exclusions up for each; it now keeps the (pair, set) entries inside the beam's masked positions only (1 of 6 at the
last step), looks up only entries whose item is not its group's first, and takes each user's top by one topk over
its run instead of two sorts of all candidates: the same lists (bit-identical on random 3k-item and trained
MovieLens / Last.fm runs, with and without exclusion), about 2x faster. cpd-beam (`--whole-code beam`) finds the
whole code's top by a trie beam over the one pass's digit scores instead of scoring every item
(`stages/samplers/marginal_beam.py`): its cost does not follow the catalogue, and the step choice ranks it cheapest
above ~digits x beam x codebook items.

The full pipeline, 2026-12-01 (`OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --data-dir D`: 10k items / 1k
users, then 1M items / 100k users, 100 training steps, validation on 1,000 users, 512 sampled users; two such runs
sharing the 2-core CPU). Before (the 1M-item codes: 256 x 256 x 256 and a 1,553-wide collision digit, 77% of the
items sharing their semantic code with near-identical collaborative vectors) and after residual k-means spread groups
beyond the last codebook over the free codes of their prefix (collision digit 256 wide):

        stage / sampler         10k items        1M items, before          1M items, after          ratio after
        preprocess                 1.0 s         15.5 s   1.76 GB          24.7 s   1.60 GB
        build-ids                  5.0 s        867 s     5.71 GB         808 s     5.71 GB
        train tiger (100 steps)   15.6 s         18.6 s   1.92 GB          15.9 s   1.62 GB
        train diffusion           31.1 s        111 s     2.83 GB          67 s     2.48 GB
        sample beam (tiger)     1078 users/s     429 users/s  x3.97        992 users/s   0.77 GB    x1.09
        sample cpd (run's own)  3407             1520 (trie beam) x3.73    3356 (trie beam) 1.02 GB  x1.02   3.4x tiger
        sample cpd-2             630              153          x6.05        258             1.24 GB  x2.44
        sample cpd-whole        3419               85          x45.9         84             1.25 GB  x40.6
        sample cpd-beam         4932             1498          x3.20       3575             1.02 GB  x1.38
        sample tweedie           141               12          x18.5         59             1.02 GB  x2.39
        sample ordered           293               43          x9.75        156             1.02 GB  x1.87

Every stage stays under 5.8 GB peak RSS; every sampler's throughput at 1M items is within 3x of its 10k-item
throughput except the exhaustive whole code (`--whole-code exact`), which scores every item by design; the diffusion
run's own choice on validation (`gdr sample`'s default) is the trie-beam whole code, 3.4x tiger's users/s.

The whole code, one model call per user, scores every item of the catalogue: at 1M items cProfile put ~45% of the time in
the [users, n x items] digit gather (now one position at a time into the [users, items] scores), ~20% in the rest
of `_extend_shared` (sums, exclusion), ~10% in sorting the candidate keys for the excluded items (now kept in the
code table's memo) and ~7% in the top-k. Throughput still follows the catalogue, as SASRec's full softmax does.
The step choice orders its candidates by an estimated cost (`diffuse.validation.items_per_call`: one model call per
2,000 candidates the first step scores, from the numbers above), so on a large catalogue it takes the exhaustive whole
code only when it is the only choice within noise of the best; the trie-beam whole code (`--whole-code beam`, cost
independent of the catalogue) ranks first there.

Tried and dropped (2026-12-01): an exact top-k over the code trie, pruning every prefix whose score plus the
per-position maxima of its open digits falls below the k-th best of a width-(k + excluded) beam. Lists and scores
were identical to scoring every item, but the bounds hardly prune: the random-init model's near-flat digits kept
almost every prefix (cpd-whole 273 users/s at 10k items against 3146, 1.3 at 1M against 81), and a trained
Last.fm 2K model still expanded ~2,500 depth-1 nodes per user of its 4,182 items (1.3 s against 0.2 s for its
test users).

What removed the per-item costs: the users' excluded items are `ItemSets` (sorted user·N+item keys,
`stages/samplers/exclusion.py`) instead of dense [users, items] masks, and the first step's candidates
(one per distinct partial code, found from the whole catalogue) are enumerated once per code table
(`CodeTable.memo`), not per batch. What is left of the catalogue is the one-time setup (sorted keys and item
groups per position set, 2-3 s at 1M items) and more model calls per user (cpd 45 -> 57: with more items
fewer beams are settled by a single item). Earlier pipeline run (--sizes 10000:1000 100000:10000 --steps 20
--sample-users 256): every stage under 1.2 GB (build-ids 31 s -> 169 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = [
    ("tiger", "beam"),
    ("diffusion", "cpd"),
    ("diffusion", "cpd-2"),
    ("diffusion", "cpd-whole"),
    ("diffusion", "cpd-beam"),
    ("diffusion", "tweedie"),
    ("diffusion", "ordered"),
]
"""(run, sampler); cpd-2 is cpd with 2 digits per step, cpd-whole with every digit in one step (one model call per
user, every item scored), cpd-beam the same step searched by a trie beam (`--whole-code beam`): the decodings a
trained run chooses among."""


def cpd_step(sampler: str, n_digits: int) -> int | None:
    """Digits per step of a fixed-step cpd row ("cpd-2" -> 2, "cpd-whole" and "cpd-beam" -> n_digits), None for
    other rows."""
    if not sampler.startswith("cpd-"):
        return None
    return n_digits if sampler in ("cpd-whole", "cpd-beam") else int(sampler.removeprefix("cpd-"))


def stage(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run one command to the end -> (wall seconds, peak RSS in GB of that process)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        sys.stdout.write(out.decode(errors="replace")[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return seconds, usage.ru_maxrss / 2**20  # Linux reports KB


def setting(pairs: list[str]) -> list[str]:
    """["a=1", "b=2"] -> ["--set", "a=1", "--set", "b=2"]."""
    return [arg for pair in pairs for arg in ("--set", pair)]


def sample_child(args: argparse.Namespace) -> None:
    """In a fresh process: recommend for the first `--sample-users` test users with `gdr sample`'s
    default options (beam 20, k 20) and print one JSON line of users/s and model calls per user."""
    import torch

    from gdr_cli.paths import DataPaths
    from stages.config.sample import SampleConfig
    from stages.data.sequences import eval_histories
    from stages.inputs import open_processed
    from stages.models.registry import load_model
    from stages.sample import digits_per_step, whole_code
    from stages.samplers.base import SamplerOptions

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    paths = DataPaths(Path(args.data_dir), args.dataset)
    model, meta = load_model(paths.run(args.run), device="cpu")
    cfg = SampleConfig()
    processed = open_processed(paths)
    data = eval_histories(processed.table("splits"), "test", int(meta.get("max_len", 20)), with_target=False)
    users, history = data["user"][: args.sample_users], data["history"][: args.sample_users]
    options = SamplerOptions.of(cfg)
    if args.sampler == "cpd":  # as `gdr sample`: the run's step size (and whole-code search), 1 for a run without one
        options.digits_per_step = digits_per_step(cfg, meta)
        options.whole_code = whole_code(cfg, meta, options.digits_per_step)
    sampler = "cpd" if args.sampler.startswith("cpd") else args.sampler
    if (fixed := cpd_step(args.sampler, int(model.codes.shape[1]))) is not None:
        options.digits_per_step = fixed
        options.whole_code = "beam" if args.sampler == "cpd-beam" else "exact"
    warm = time.perf_counter()  # one-time setup (code table, trie, item groups) on a few users, not timed below
    model.recommend(
        history[:4],
        k=cfg.k,
        sampler=sampler,
        options=SamplerOptions(**{**options.__dict__, "users": users[:4].long()}),
    )
    warm = time.perf_counter() - warm
    start, calls = time.perf_counter(), 0.0
    for lo in range(0, len(users), cfg.batch_size):
        hi = min(lo + cfg.batch_size, len(users))
        opts = SamplerOptions(**{**options.__dict__, "users": users[lo:hi].long()})
        model.recommend(history[lo:hi], k=cfg.k, sampler=sampler, options=opts)
        calls += float(model.sample_stats.get("nfe", 0.0)) * (hi - lo)
    seconds = time.perf_counter() - start
    print(json.dumps({"users_per_s": len(users) / seconds, "calls_per_user": calls / len(users), "setup_s": warm}))


def random_child(args: argparse.Namespace) -> None:
    """In a fresh process: a random-init model over `--items` random codes decodes `--sample-users`
    random histories (history excluded) -> one JSON line of users/s, calls per user and setup s."""
    import torch

    from stages.config.diffuse import DiffuseConfig
    from stages.config.sample import SampleConfig
    from stages.config.train_rec import TigerConfig
    from stages.models.diffusion import MODEL_KEYS, DiffusionRecommender
    from stages.models.tiger import Tiger
    from stages.models.tiger_corruption import CORRUPTION_KEYS
    from stages.sample import digits_per_step
    from stages.samplers.base import SamplerOptions

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    gen = torch.Generator().manual_seed(0)
    n, level = args.items, max(2, round(args.items ** (1 / 3)))
    head = torch.randint(0, level, (n, 3), generator=gen)
    key = (head[:, 0] * level + head[:, 1]) * level + head[:, 2]
    order = key.argsort(stable=True)
    last = torch.empty_like(key)
    last[order] = torch.arange(n) - torch.searchsorted(key[order], key[order])  # collision digit
    codes, vocab = torch.cat([head, last[:, None]], 1), [level, level, level, int(last.max()) + 1]
    if args.sampler == "beam":
        sizes = TigerConfig().model_dump(exclude={"init", "beam", "train", *CORRUPTION_KEYS})
        model = Tiger.from_codes(codes, vocab, seed=0, **sizes).eval()
    else:
        sizes = DiffuseConfig().model_dump(include=MODEL_KEYS)
        model = DiffusionRecommender.from_codes(codes, vocab, max_len=20, seed=0, **sizes).eval()
    cfg = SampleConfig()
    history = torch.randint(0, n, (args.sample_users, 20), generator=gen)
    users = torch.arange(args.sample_users)
    options = SamplerOptions.of(cfg)
    if args.sampler == "cpd":  # as `gdr sample` for a run without a step choice: 1 digit per step
        options.digits_per_step = digits_per_step(cfg, {})
    sampler = "cpd" if args.sampler.startswith("cpd") else args.sampler
    if (fixed := cpd_step(args.sampler, int(codes.shape[1]))) is not None:  # a fixed step size
        options.digits_per_step = fixed
        options.whole_code = "beam" if args.sampler == "cpd-beam" else "exact"
    warm = time.perf_counter()
    model.recommend(history[:4], k=cfg.k, sampler=sampler, options=options, exclude=history[:4])
    warm = time.perf_counter() - warm
    start, calls = time.perf_counter(), 0.0
    for lo in range(0, len(users), cfg.batch_size):
        hi = min(lo + cfg.batch_size, len(users))
        opts = SamplerOptions(**{**options.__dict__, "users": users[lo:hi]})
        items, _ = model.recommend(history[lo:hi], k=cfg.k, sampler=sampler, options=opts, exclude=history[lo:hi])
        assert bool((items >= 0).all()) and not bool((items[:, :, None] == history[lo:hi, None]).any())
        calls += float(model.sample_stats.get("nfe", 0.0)) * (hi - lo)
    seconds = time.perf_counter() - start
    print(json.dumps({"users_per_s": len(users) / seconds, "calls_per_user": calls / len(users), "setup_s": warm}))


def sample_stage(items: int, sampler: str, extra: list[str], args: argparse.Namespace, env: dict[str, str]) -> dict:
    """One sampler in its own process (this script with --child) -> its JSON row plus s and peak GB."""
    cmd = [sys.executable, __file__, "--child", "--sampler", sampler, "--sample-users", str(args.sample_users), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = (proc.stdout.read() if proc.stdout else b"").decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        sys.stdout.write(text[-3000:])
        raise SystemExit(f"failed: sample {sampler} at {items:,} items")
    row = json.loads(text.strip().splitlines()[-1])
    row.update(s=time.perf_counter() - start, gb=usage.ru_maxrss / 2**20)
    print(
        f"  {items:>9,} items  sample {sampler:<11} {row['s']:8.1f} s  peak {row['gb']:5.2f} GB  "
        f"{row['users_per_s']:8.1f} users/s  {row['calls_per_user']:6.1f} calls/user  setup {row['setup_s']:.1f} s",
        flush=True,
    )
    return row


def run_size(items: int, users: int, args: argparse.Namespace, env: dict[str, str], root: Path) -> dict[str, dict]:
    """Every stage at one size -> {stage: {"s", "gb", ...}}."""
    cli = [sys.executable, "-m", "gdr_cli"]
    name = f"syn{items}"
    data = ["--data-dir", str(root), "--config", "default"]
    syn = [f"synthetic.users={users}", f"synthetic.items={items}", "synthetic.popularity=0", "synthetic.mean_len=40",
           f"synthetic.clusters={max(10, items // 1000)}", "synthetic.friends=0", "min_item_interactions=0"]  # fmt: skip
    # validated once at the end, on a seeded subset of users (as a large user base would: `train.val_users`)
    steps = [f"train.max_steps={args.steps}", "train.warmup_steps=0", f"train.val_users={args.val_users}"]
    jobs = {
        "preprocess": [*cli, "preprocess", "synthetic", "--name", name, *data, *setting(syn)],
        "build-ids": [*cli, "build-ids", name, "--method", "rqkmeans", "--ids", "rqkmeans", *data],
        "train tiger": [
            *cli,
            "train-rec",
            name,
            "--model",
            "tiger",
            "--ids",
            "rqkmeans",
            "--run",
            "tiger",
            *data,
            *setting(steps),
        ],
        "train diffusion": [
            *cli,
            "diffuse",
            name,
            "--ids",
            "rqkmeans",
            "--run",
            "diffusion",
            *data,
            *setting(steps),
        ],
    }
    out: dict[str, dict] = {}
    for what, cmd in jobs.items():
        seconds, gb = stage(cmd, env)
        out[what] = {"s": seconds, "gb": gb}
        print(f"  {items:>9,} items  {what:<18} {seconds:8.1f} s  peak {gb:5.2f} GB", flush=True)
    for run, sampler in SAMPLERS:
        extra = ["--data-dir", str(root), "--dataset", name, "--run", run]
        out[f"sample {sampler}"] = sample_stage(items, sampler, extra, args, env)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["10000:1000", "1000000:100000"],
        help="items:users per size; the first is the reference",
    )
    parser.add_argument("--quick", action="store_true", help="2k and 20k items (a smoke test of minutes)")
    parser.add_argument("--steps", type=int, default=100, help="training steps of the capped epoch")
    parser.add_argument("--sample-users", type=int, default=512, help="test users sampled per sampler")
    parser.add_argument("--val-users", type=int, default=1000, help="validation users of the training stages")
    parser.add_argument("--data-dir", default=None, help="keep the data here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--sampling-only", action="store_true", help="random-init models over random codes: sampling alone"
    )
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=None,
        help="only these samplers (beam, cpd, cpd-2, cpd-whole, cpd-beam, tweedie, ordered)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--sampler", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        random_child(args) if args.items else sample_child(args)
        return 0
    if args.quick:
        args.sizes, args.steps, args.sample_users = (
            ["2000:400", "20000:4000"],
            min(args.steps, 20),
            min(args.sample_users, 128),
        )
    if args.samplers:
        SAMPLERS[:] = [pair for pair in SAMPLERS if pair[1] in args.samplers]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "GDR_QUIET": "1", "PYTHONPATH": str(ROOT)}
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes]
    if args.sampling_only:
        results = {items: {f"sample {s}": sample_stage(items, s, ["--items", str(items)], args, env) for _, s in SAMPLERS}
                   for items, _ in sizes}  # fmt: skip
    else:
        with tempfile.TemporaryDirectory(prefix="gdr-scale-") as tmp:
            root = Path(args.data_dir or tmp)
            results = {items: run_size(items, users, args, env, root) for items, users in sizes}
    (small, ref), *rest = results.items()
    worst = max((row["gb"] for res in results.values() for row in res.values()), default=0.0)
    print(f"\npeak RSS over every stage and size: {worst:.2f} GB (target < 8 GB)")
    for items, res in rest:
        for _, sampler in SAMPLERS:
            a, b = ref[f"sample {sampler}"]["users_per_s"], res[f"sample {sampler}"]["users_per_s"]
            print(
                f"{sampler:<8} users/s at {small:,} items {a:8.1f}, at {items:,} items {b:8.1f}: x{a / b:.2f} slower (target <= 3)"
            )
        if "sample beam" not in res:
            continue
        beam = res["sample beam"]["users_per_s"]
        for _, sampler in SAMPLERS[1:]:
            print(
                f"{sampler:<8} / tiger beam users/s at {items:,} items: x{res[f'sample {sampler}']['users_per_s'] / beam:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
