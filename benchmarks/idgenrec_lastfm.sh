#!/bin/bash
# IDGenRec on HetRec Last.fm 2K with small CPU budgets (benchmarks/idgenrec_lastfm.md).
# usage: benchmarks/idgenrec_lastfm.sh RAW_LASTFM_DIR DATA_DIR   (run from the repository root)
set -ex
RAW=${1:?raw hetrec2011-lastfm-2k folder}; D="--data-dir ${2:?data root}"
G="python -m gdr_cli"
SMALL="--set train_gen.tokenizer.max_text_len=16 --set train_gen.generator.train.batch_size=128"
$G preprocess lastfm-2k --input "$RAW" $D
$G train-rec lastfm-2k --model pop --run pop $D && $G sample lastfm-2k --run pop $D
$G train-rec lastfm-2k --model pop --view social --run social-pop $D && $G sample lastfm-2k --run social-pop $D
$G train lastfm-2k --view social --rounds 2 --rec-epochs 2 --id-epochs 1 --max-minutes 4 $SMALL $D
$G build-ids lastfm-2k --method rqkmeans --ids rqkmeans $D
$G train-rec lastfm-2k --model tiger --ids rqkmeans --run tiger-rqkmeans --epochs 2 --max-minutes 6 $D
$G sample lastfm-2k --run tiger-rqkmeans $D
$G train lastfm-2k --view item --rounds 2 --rec-epochs 2 --id-epochs 1 --max-minutes 4 $SMALL $D
$G evaluate lastfm-2k $D
$G evaluate lastfm-2k --view social $D
