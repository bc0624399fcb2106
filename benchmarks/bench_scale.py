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

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py                      # 10k vs 1M items (heavy: ~1 h on 2 cores)
    python benchmarks/bench_scale.py --quick                                 # 2k vs 20k items (a few minutes)
    python benchmarks/bench_scale.py --sizes 10000:1000 100000:10000 --sample-users 256
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
SAMPLERS = [("tiger", "beam"), ("diffusion", "cpd"), ("diffusion", "tweedie"), ("diffusion", "ordered")]


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
    from stages.samplers.base import SamplerOptions

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    paths = DataPaths(Path(args.data_dir), args.dataset)
    model, meta = load_model(paths.run(args.run), device="cpu")
    cfg = SampleConfig()
    processed = open_processed(paths)
    data = eval_histories(processed.table("splits"), "test", int(meta.get("max_len", 20)), with_target=False)
    users, history = data["user"][: args.sample_users], data["history"][: args.sample_users]
    options = SamplerOptions.of(cfg)
    warm = time.perf_counter()  # one-time setup (code table, trie, item groups) on a few users, not timed below
    model.recommend(
        history[:4],
        k=cfg.k,
        sampler=args.sampler,
        options=SamplerOptions(**{**options.__dict__, "users": users[:4].long()}),
    )
    warm = time.perf_counter() - warm
    start, calls = time.perf_counter(), 0.0
    for lo in range(0, len(users), cfg.batch_size):
        hi = min(lo + cfg.batch_size, len(users))
        opts = SamplerOptions(**{**options.__dict__, "users": users[lo:hi].long()})
        model.recommend(history[lo:hi], k=cfg.k, sampler=args.sampler, options=opts)
        calls += float(model.sample_stats.get("nfe", 0.0)) * (hi - lo)
    seconds = time.perf_counter() - start
    print(json.dumps({"users_per_s": len(users) / seconds, "calls_per_user": calls / len(users), "setup_s": warm}))


def run_size(items: int, users: int, args: argparse.Namespace, env: dict[str, str], root: Path) -> dict[str, dict]:
    """Every stage at one size -> {stage: {"s", "gb", ...}}."""
    cli = [sys.executable, "-m", "gdr_cli"]
    name = f"syn{items}"
    data = ["--data-dir", str(root), "--config", "default"]
    syn = [f"synthetic.users={users}", f"synthetic.items={items}", "synthetic.popularity=0", "synthetic.mean_len=40",
           f"synthetic.clusters={max(10, items // 1000)}", "synthetic.friends=0", "min_item_interactions=0"]  # fmt: skip
    steps = [f"train.max_steps={args.steps}", "train.warmup_steps=0"]
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
        cmd = [sys.executable, __file__, "--child", "--data-dir", str(root), "--dataset", name, "--run", run,
               "--sampler", sampler, "--sample-users", str(args.sample_users)]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text = (proc.stdout.read() if proc.stdout else b"").decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        if status:
            sys.stdout.write(text[-3000:])
            raise SystemExit(f"failed: sample {run} {sampler}")
        row = json.loads(text.strip().splitlines()[-1])
        row.update(s=time.perf_counter() - start, gb=usage.ru_maxrss / 2**20)
        out[f"sample {sampler}"] = row
        print(f"  {items:>9,} items  sample {sampler:<11} {row['s']:8.1f} s  peak {row['gb']:5.2f} GB  "
              f"{row['users_per_s']:8.1f} users/s  {row['calls_per_user']:6.1f} calls/user  setup {row['setup_s']:.1f} s", flush=True)  # fmt: skip
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
    parser.add_argument("--data-dir", default=None, help="keep the data here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--sampler", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sample_child(args)
        return 0
    if args.quick:
        args.sizes, args.steps, args.sample_users = (
            ["2000:400", "20000:4000"],
            min(args.steps, 20),
            min(args.sample_users, 128),
        )
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "GDR_QUIET": "1", "PYTHONPATH": str(ROOT)}
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes]
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
        beam = res["sample beam"]["users_per_s"]
        for _, sampler in SAMPLERS[1:]:
            print(
                f"{sampler:<8} / tiger beam users/s at {items:,} items: x{res[f'sample {sampler}']['users_per_s'] / beam:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
