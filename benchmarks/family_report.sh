#!/bin/bash
# The joint report of issue 14 (benchmarks/family_report.md): one `gdr evaluate --report` per dataset and view
# under one data root J, reusing runs of benchmarks/graph_models.md (root GM) and benchmarks/seqaug.md (root SQ)
# whose input tables are byte-identical (benchmarks/join_runs.py checks the hashes), retraining the rest.
#   benchmarks/family_report.sh /tmp/joint /tmp/gm /tmp/seqaug_real ../shared/data
set -ex
J=$1 GM=$2 SQ=$3 DATA=$4
G="python -m gdr_cli"
export OMP_NUM_THREADS=1
D="--data-dir $J"
$G preprocess lastfm-2k --input $DATA/hetrec2011-lastfm-2k --name lastfm-2k $D
$G preprocess movielens-100k --input $DATA/ml-100k --name ml-100k $D

# Reused: every item-view table identical; social_splits.parquet differs (the social split was made leak-free
# after those runs), so no social-view run is reused.
ITEM=interactions,items,users,splits,social
python benchmarks/join_runs.py $GM fm $J lastfm-2k --tables $ITEM,kg runs/diffnet runs/diffnetpp runs/diffkg
python benchmarks/join_runs.py $SQ lastfm-2k $J lastfm-2k --tables $ITEM augmented/diffuasr runs/diffurec
python benchmarks/join_runs.py $GM ml $J ml-100k runs/diffkg runs/diffkg-x
python benchmarks/join_runs.py $SQ ml-100k $J ml-100k augmented/diffuasr runs/diffurec runs/sasrec \
  runs/sasrec-diffuasr runs/pdrec-reweight runs/pdrec-reweight-a1t1 runs/pdrec-softpos runs/sasrec-neg \
  runs/pdrec-tail runs/pdrec-all

# Last.fm 2K sequence side at seqaug.md's budget (the stored SQ runs were a later 5-epoch variant): SASRec 8 epochs.
P="--plugin pdrec --plugin-run diffurec"
train() { local run=$1; shift; $G train-rec lastfm-2k $D --model sasrec --epochs 8 --run $run "$@"; }
train sasrec
train sasrec-diffuasr --train-split augmented/diffuasr
train pdrec-reweight $P --no-soft-positives --no-tail-negatives
train pdrec-softpos $P --no-reweight --no-tail-negatives
train sasrec-neg --set sasrec.loss=negatives
train pdrec-tail $P --set sasrec.loss=negatives --no-reweight --no-soft-positives
train pdrec-all $P --set sasrec.loss=negatives

# Counting baselines and the social view (retrained on the current social split; default configs).
$G train-rec lastfm-2k --model pop $D
$G train-rec lastfm-2k --model friendpop $D
$G train-rec ml-100k --model pop $D
$G train-rec lastfm-2k --model pop --view social --run pop-social $D
$G train-rec lastfm-2k --model friendpop --view social --run friendpop-social $D
$G train-rec lastfm-2k --model diffnet --view social --run diffnet-social $D
$G train-rec lastfm-2k --model diffnet --interest-diffusion --view social --run diffnetpp-social $D
$G build-ids lastfm-2k --view social $D
$G train-rec lastfm-2k --model tiger --view social --ids rqkmeans-social --run tiger-social $D

# Test recommendations (history kept; MovieLens also with --exclude-history for pop, sasrec and diffkg-x).
for r in pop friendpop sasrec sasrec-diffuasr pdrec-reweight pdrec-softpos sasrec-neg pdrec-tail pdrec-all \
         diffnet diffnetpp diffkg pop-social friendpop-social diffnet-social diffnetpp-social tiger-social; do
  $G sample lastfm-2k --run $r --split test $D
done
for r in pop sasrec sasrec-diffuasr pdrec-reweight pdrec-reweight-a1t1 pdrec-softpos sasrec-neg pdrec-tail pdrec-all diffkg; do
  $G sample ml-100k --run $r --split test $D
done
for r in pop sasrec diffkg-x; do $G sample ml-100k --run $r --split test --exclude-history --name ${r%-x}-x $D; done

$G evaluate lastfm-2k --report $D
$G evaluate lastfm-2k --view social --report $D
$G evaluate ml-100k --report $D
