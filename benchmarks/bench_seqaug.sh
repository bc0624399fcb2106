#!/bin/bash
# SASRec with and without DiffuASR augmentation and with each PDRec switch, one `gdr evaluate --report` table per
# dataset (benchmarks/seqaug.md has the numbers). Short runs for a shared 2-core CPU: SASRec's epochs are capped
# (EPOCHS, default 8; its own default is 200 with early stopping), DiffuRec trains one epoch, DiffuASR two or five.
#   benchmarks/bench_seqaug.sh DATA_ROOT movielens-100k /path/to/ml-100k ml-100k 8 5
#   benchmarks/bench_seqaug.sh DATA_ROOT lastfm-2k /path/to/hetrec2011-lastfm-2k lastfm-2k 8 2
set -e
R=$1 SOURCE=$2 INPUT=$3 D=$4 EPOCHS=${5:-8} AUG_EPOCHS=${6:-5}
G="python -m gdr_cli"
export OMP_NUM_THREADS=1
$G preprocess $SOURCE --data-dir $R -i $INPUT --name $D
$G augment $D --data-dir $R --name diffuasr --epochs $AUG_EPOCHS
$G train-rec $D --data-dir $R --model diffurec --run diffurec --epochs 1
P="--plugin pdrec --plugin-run diffurec"
train() { local run=$1; shift; $G train-rec $D --data-dir $R --model sasrec --epochs $EPOCHS --run $run "$@"; $G sample $D --data-dir $R --run $run; }
train sasrec
train sasrec-diffuasr --train-split augmented/diffuasr
train pdrec-reweight $P --no-soft-positives --no-tail-negatives
train pdrec-softpos $P --no-reweight --no-tail-negatives
train sasrec-neg --set sasrec.loss=negatives
train pdrec-tail $P --set sasrec.loss=negatives --no-reweight --no-soft-positives
train pdrec-all $P --set sasrec.loss=negatives
$G evaluate $D --data-dir $R --report
