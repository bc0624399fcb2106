"""Reference timing: RecBole 1.2.1's SASRec seconds per epoch on MovieLens 100K (not part of gdr).

Runs RecBole's own quick start with benchmarks/recbole_sasrec.yaml (RecBole's SASRec defaults, CE
loss, 5-core users and items, leave-one-out by time, full ranking, 2 epochs: timing only), then
parses RecBole's log lines "epoch N training [time: X s ...]" / "epoch N evaluating [time: Y s ...]"
and the dataset stats. RecBole's "training" time excludes the per-epoch validation; its
"evaluating" time is that validation. gdr's train.log per-epoch wall includes both.

RecBole lives in its own venv (never gdr's .venv):

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0 recbole==1.2.1 "numpy<2" "pandas<2.2" \
        "scipy<1.14" "setuptools<70" ray
    mkdir -p /tmp/recbole-data && cp -r /work/shared/data/ml-100k /tmp/recbole-data/
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 OMP_NUM_THREADS=2 \
        /tmp/recbole-venv/bin/python benchmarks/recbole_sasrec.py --data-path /tmp/recbole-data

gdr, right after, same conditions:

    rm -rf /tmp/gdr-sas && OMP_NUM_THREADS=2 .venv/bin/gdr preprocess recbole \
        --input /work/shared/data/ml-100k --name ml --data-dir /tmp/gdr-sas
    OMP_NUM_THREADS=2 .venv/bin/gdr train-rec ml --model sasrec --data-dir /tmp/gdr-sas --epochs 5
    # seconds per epoch: gaps between the per-epoch validation rows of /tmp/gdr-sas/ml/runs/sasrec/train.log

Measured (see the bottom of this docstring; filled in after the run):
RESULTS-PLACEHOLDER
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
    parser.add_argument("--data-path", default="/tmp/recbole-data",
                        help="folder holding ml-100k/ml-100k.inter (RecBole atomic files)")
    parser.add_argument("--config", default=str(HERE / "recbole_sasrec.yaml"))
    args = parser.parse_args()

    from recbole.quick_start import run_recbole  # imported late: only in the RecBole venv

    workdir = tempfile.mkdtemp(prefix="recbole-sasrec-")
    os.chdir(workdir)  # RecBole writes log/, saved/ and log_tensorboard/ under the cwd
    result = run_recbole(model="SASRec", dataset="ml-100k", config_file_list=[args.config],
                         config_dict={"data_path": args.data_path,
                                      "checkpoint_dir": os.path.join(workdir, "saved")})

    log_text = "".join(ANSI.sub("", Path(p).read_text()) for p in glob.glob(f"{workdir}/log/**/*.log",
                                                                            recursive=True))
    train = [float(x) for x in re.findall(r"epoch \d+ training \[time: ([\d.]+)s", log_text)]
    evals = [float(x) for x in re.findall(r"epoch \d+ evaluating \[time: ([\d.]+)s", log_text)]
    stats = {k: int(v) for k, v in re.findall(r"The number of (users|items|inters): (\d+)", log_text)}
    # RecBole counts its padding id 0 among users and items.
    print(f"dataset: {stats.get('users', 0) - 1} users, {stats.get('items', 0) - 1} items, "
          f"{stats.get('inters')} interactions (RecBole reports users/items incl. [PAD])")
    print(f"training s/epoch: {train}  mean {statistics.mean(train):.2f}")
    print(f"evaluating s/epoch: {evals}  mean {statistics.mean(evals):.2f}")
    print(f"train+eval s/epoch: {statistics.mean(train) + statistics.mean(evals):.2f}")
    print(f"test result (2 epochs, not a quality number): {dict(result['test_result'])}")
    print(f"logs: {workdir}/log")


if __name__ == "__main__":
    main()
