"""Reference timing: RecBole 1.2.1's SASRec seconds per epoch on MovieLens 100K (not part of gdr).

Runs RecBole's own quick start with benchmarks/recbole_sasrec.yaml (RecBole's SASRec defaults, CE
loss, 5-core users and items, leave-one-out by time, full ranking, 2 epochs: timing only; device cpu), then
parses RecBole's log lines "epoch N training [time: X s ...]" / "epoch N evaluating [time: Y s ...]"
and the dataset stats. RecBole's "training" time excludes the per-epoch validation; its
"evaluating" time is that validation. gdr's train.log per-epoch wall includes both.

RecBole lives in its own venv (never gdr's .venv):

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0 recbole==1.2.1 "numpy<2" "pandas<2.2" \
        "scipy<1.14" "setuptools<81" ray
    mkdir -p /tmp/recbole-data && cp -r /work/shared/data/ml-100k /tmp/recbole-data/
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 OMP_NUM_THREADS=2 \
        /tmp/recbole-venv/bin/python benchmarks/recbole_sasrec.py --data-path /tmp/recbole-data

gdr, right after, same conditions:

    rm -rf /tmp/gdr-sas && OMP_NUM_THREADS=2 .venv/bin/gdr preprocess recbole \
        --input /work/shared/data/ml-100k --name ml --data-dir /tmp/gdr-sas
    OMP_NUM_THREADS=2 .venv/bin/gdr train-rec ml --model sasrec --data-dir /tmp/gdr-sas --epochs 5
    # seconds per epoch: gaps between the per-epoch validation rows of /tmp/gdr-sas/ml/runs/sasrec/train.log

Measured 2026-11-30 on this 2-core CPU box (torch 2.13.0+cpu both sides, OMP_NUM_THREADS=2). RecBole
venv deviation: "setuptools<70" conflicts with torch 2.13.0, so setuptools<81 (80.10.2; ray 2.6.3
still needs pkg_resources). Dataset after RecBole's 5-core filter: 943 users, 1,349 items, 99,287
interactions (log says 944/1350: it counts [PAD]) = gdr's preprocess counts.
  RecBole run 1 (another benchmark, bench_quality.py, running alongside; load avg 2.7-3.3):
      epoch 0 training 767.07 s, evaluating 0.24 s (valid NDCG@10 0.0397); killed before epoch 1.
  RecBole run 2 (that benchmark had ended; load avg 2.39 at start, 3.0 at end incl. RecBole's own
      2 threads): epoch 0 training 406.79 s, evaluating 0.54 s (valid NDCG@10 0.0397, same seed);
      killed during epoch 1 (deadline).
  gdr right after (load avg 2.93 at start, 2.40 at end): 4,287 examples, 34 steps/epoch, epoch walls
      incl. validation 6, 6, 7, 6, 7 s (train.log timestamps) = ~6.4 s/epoch; val NDCG@10 by epoch
      0.0110, 0.0163, 0.0365, 0.0394, 0.0432.
  Per epoch: 406.8 / 6.4 = ~64x (vs the loaded run 1: ~120x). Epochs are not equal work: RecBole's
  epoch trains every prefix of every sequence as its own example (~96k, 189 batches of 512), gdr's
  one window per user. To the same validation NDCG@10 (~0.039): RecBole 1 epoch = 407 s,
  gdr 4 epochs = ~25 s, ~16x.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import statistics
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-path", default="/tmp/recbole-data", help="folder holding ml-100k/ml-100k.inter (RecBole atomic files)"
    )
    parser.add_argument("--config", default=str(HERE / "recbole_sasrec.yaml"))
    args = parser.parse_args()

    from recbole.quick_start import run_recbole  # imported late: only in the RecBole venv

    workdir = tempfile.mkdtemp(prefix="recbole-sasrec-")
    os.chdir(workdir)  # RecBole writes log/, saved/ and log_tensorboard/ under the cwd
    result = run_recbole(
        model="SASRec",
        dataset="ml-100k",
        config_file_list=[args.config],
        config_dict={"data_path": args.data_path, "checkpoint_dir": os.path.join(workdir, "saved")},
    )

    log_text = "".join(ANSI.sub("", Path(p).read_text()) for p in glob.glob(f"{workdir}/log/**/*.log", recursive=True))
    train = [float(x) for x in re.findall(r"epoch \d+ training \[time: ([\d.]+)s", log_text)]
    evals = [float(x) for x in re.findall(r"epoch \d+ evaluating \[time: ([\d.]+)s", log_text)]
    stats = {k: int(v) for k, v in re.findall(r"The number of (users|items|inters): (\d+)", log_text)}
    # RecBole counts its padding id 0 among users and items.
    print(
        f"dataset: {stats.get('users', 0) - 1} users, {stats.get('items', 0) - 1} items, "
        f"{stats.get('inters')} interactions (RecBole reports users/items incl. [PAD])"
    )
    print(f"training s/epoch: {train}  mean {statistics.mean(train):.2f}")
    print(f"evaluating s/epoch: {evals}  mean {statistics.mean(evals):.2f}")
    print(f"train+eval s/epoch: {statistics.mean(train) + statistics.mean(evals):.2f}")
    print(f"test result (2 epochs, not a quality number): {dict(result['test_result'])}")
    print(f"logs: {workdir}/log")


if __name__ == "__main__":
    main()
