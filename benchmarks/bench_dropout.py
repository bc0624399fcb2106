"""Benchmark: the cheaper-mask dropout (stages/models/fast_dropout.py) against PyTorch's, on CPU.

Two measurements in one process, paired rounds (order alternating), median ratio reference / fast:

- op: `F.dropout` against `fast_dropout.dropout` on the shapes of a MovieLens 100K training step
  (SASRec's feed-forward [128, 50, 256], tiger's [128, 20, 256]), and `scaled_dot_product_attention`
  with `dropout_p` against `fast_dropout.attention` ([128, 2, 50, 50] weights);
- step: one optimiser step (forward, backward, AdamW) of each default model (SASRec, tiger, the diffusion
  model, at `configs/default.yaml`'s sizes on a random batch of 128) with its `nn.Dropout` modules as
  built against the same model after `use_fast_dropout` (what `fit` trains). The models' attention
  weights go through `fast_dropout.attention` in both, so the step ratio understates the gain.

    OMP_NUM_THREADS=2 python benchmarks/bench_dropout.py           # 20 steps per model, 3 rounds
    python benchmarks/bench_dropout.py --quick                      # 5 steps, 2 rounds

Measured 2026-12-02 on the idle 2-core CPU (2 threads, median of 3 rounds), reference / fast:

    op   ffn sasrec   F.dropout   23.36 ms   fast    6.72 ms   ratio  3.39x
    op   ffn tiger    F.dropout    7.85 ms   fast    1.39 ms   ratio  5.43x
    op   attention    sdpa        10.91 ms   fast    3.72 ms   ratio  2.92x
    step sasrec       nn.Dropout  156.0 ms   fast    98.2 ms   ratio  1.65x   (5 modules swapped)
    step tiger        nn.Dropout   69.0 ms   fast    58.0 ms   ratio  1.21x   (16 modules swapped)
    step diffusion    nn.Dropout  105.3 ms   fast    94.9 ms   ratio  1.11x   (8 modules swapped)

`make all` on MovieLens 100K went from 16 min 41 s to 12 min 6 s (fresh clone, install included).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stages.models.diffusion import DiffusionRecommender  # noqa: E402
from stages.models.fast_dropout import attention, dropout, use_fast_dropout  # noqa: E402
from stages.models.sasrec import Sasrec  # noqa: E402
from stages.models.tiger import Tiger  # noqa: E402

N_ITEMS, CODES = 1349, [37, 37, 37, 10]  # MovieLens 100K (make all): items, its auto codebook + collision digit


def timed(fn: Callable[[], object], reps: int) -> float:
    """Seconds per call of fn over reps calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def paired(
    reference: Callable[[], object], fast: Callable[[], object], reps: int, rounds: int
) -> tuple[float, float, float]:
    """(reference s, fast s, median ratio reference / fast) over alternating paired rounds."""
    ratios, refs, fasts = [], [], []
    for r in range(rounds):
        order = [(reference, refs), (fast, fasts)] if r % 2 == 0 else [(fast, fasts), (reference, refs)]
        for fn, out in order:
            out.append(timed(fn, reps))
        ratios.append(refs[-1] / fasts[-1])
    return statistics.median(refs), statistics.median(fasts), statistics.median(ratios)


def step_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def models() -> dict[str, tuple[torch.nn.Module, dict[str, torch.Tensor]]]:
    """Each default model (train mode) and a random batch of 128 examples shaped like MovieLens 100K's."""
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, N_ITEMS, (128, 51), generator=g)
    history = torch.randint(0, N_ITEMS, (128, 20), generator=g)
    target = torch.randint(0, N_ITEMS, (128,), generator=g)
    flat = torch.randperm(37 * 37 * 37 * 10, generator=g)[:N_ITEMS]  # distinct codes, digit by digit:
    codes = torch.stack([flat // 13690, flat // 370 % 37, flat // 10 % 37, flat % 10], 1)  # [N, 4]
    sizes = dict(d_model=64, n_heads=4, dropout=0.1, repeat_head=True, repeat_explore="new")
    tiger = Tiger(n_items=N_ITEMS, vocab_sizes=CODES, d_kv=16, d_ff=256, n_layers=2, n_decoder_layers=2,
                  encoder_input="items", **sizes)  # fmt: skip
    tiger.set_codes(codes)
    diffusion = DiffusionRecommender.from_codes(codes, CODES, max_len=20, d_ff=256, **sizes)
    return {
        "sasrec": (Sasrec(n_items=N_ITEMS), {"seq": seq, "context": torch.full((128,), 25)}),
        "tiger": (tiger, {"history": history, "target": target}),
        "diffusion": (diffusion, {"history": history, "target": target}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 steps per model, 2 rounds")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps, rounds = (5, 2) if args.quick else (20, 3)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {rounds} paired rounds")
    torch.manual_seed(0)
    for name, shape in {"ffn sasrec": (128, 50, 256), "ffn tiger": (128, 20, 256)}.items():
        x = torch.randn(shape)
        ref, fast, ratio = paired(lambda x=x: F.dropout(x, 0.5), lambda x=x: dropout(x, 0.5), reps * 5, rounds)
        print(f"op   {name:<12} F.dropout {ref * 1e3:7.2f} ms   fast {fast * 1e3:7.2f} ms   ratio {ratio:5.2f}x")
    q, k, v = (torch.randn(128, 2, 50, 32) for _ in range(3))
    causal = torch.ones(50, 50, dtype=torch.bool).tril()
    ref, fast, ratio = paired(
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=causal, dropout_p=0.5),
        lambda: attention(q, k, v, causal, 0.5),
        reps * 5,
        rounds,
    )
    print(f"op   {'attention':<12} sdpa      {ref * 1e3:7.2f} ms   fast {fast * 1e3:7.2f} ms   ratio {ratio:5.2f}x")
    for name, (model, batch) in models().items():
        fast_model = copy.deepcopy(model)
        swapped = use_fast_dropout(fast_model)
        model.train(), fast_model.train()
        ref, fast, ratio = paired(step_fn(model, batch), step_fn(fast_model, batch), reps, rounds)
        print(f"step {name:<12} nn.Dropout {ref * 1e3:6.1f} ms   fast {fast * 1e3:7.1f} ms   ratio {ratio:5.2f}x"
              f"   ({swapped} modules swapped)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
