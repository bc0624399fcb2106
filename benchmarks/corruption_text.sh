#!/bin/bash
# Corruption training of the textual-ID recommender on HetRec Last.fm 2K, `gdr train --view both`
# (benchmarks/corruption.md, "Textual IDs"). Seeds 42 and 7; 6-17 minutes per variant on a shared 2-core CPU.
# usage: benchmarks/corruption_text.sh RAW_LASTFM_DIR DATA_DIR   (run from the repository root)
set -ex
RAW=${1:?raw hetrec2011-lastfm-2k folder}; D="--data-dir ${2:?data root}"
G="python -m gdr_cli"
$G preprocess lastfm-2k --input "$RAW" --name fm $D
SMALL="--view both --rounds 2 --rec-epochs 1 --id-epochs 1 --set train_gen.keyword_epochs=10 --set train_gen.id_max_steps=20 --set train_gen.tokenizer.max_text_len=16"
$G train fm $SMALL --name-prefix base- $D                                                          # no corruption
$G train fm $SMALL --use-diffusion 1 --diffusion-cross-prob 0 --lambda-kl 0 --name-prefix rand- $D  # random tokens
$G train fm $SMALL --use-diffusion 1 --lambda-kl 0 --name-prefix cross- $D                          # + cross-view words
$G train fm $SMALL --use-diffusion 1 --name-prefix xkl- $D                                          # + KL (lambda_kl 0.1)
# second seed: the same four with --seed 7 and prefixes s7base- s7rand- s7cross- s7xkl-
$G train fm $SMALL --seed 7 --name-prefix s7base- $D
$G train fm $SMALL --seed 7 --use-diffusion 1 --diffusion-cross-prob 0 --lambda-kl 0 --name-prefix s7rand- $D
$G train fm $SMALL --seed 7 --use-diffusion 1 --lambda-kl 0 --name-prefix s7cross- $D
$G train fm $SMALL --seed 7 --use-diffusion 1 --name-prefix s7xkl- $D
for V in item social; do
  R=""; for P in base rand cross xkl; do R="$R --run $P-rec-$V-round1 --run $P-rec-$V-round2"; done
  $G evaluate fm --view $V --report $R $D                                                     # seed 42, both rounds
  R=""; for P in base rand cross xkl s7base s7rand s7cross s7xkl; do R="$R --run $P-rec-$V-round2"; done
  $G evaluate fm --view $V --report $R $D                                                     # round 2, both seeds
done
