#!/usr/bin/env bash
# The drafters that read the target's features (issues 15 and 16) on the real target, beside the baselines,
# one `specdiff bench` run per dtype: HF greedy (the reference), HF prompt lookup, HF assisted generation
# (the small LM), SpecDiff lookup, eagle, eagle-tree, dflash, dflash-cut, dflash-opt-tree. Spec-Bench's 5 single-turn
# categories x PER (default 2) through the chat template, 128 new tokens, greedy unless TEMPERATURE is set.
# Usage: OMP_NUM_THREADS=1 bash benchmarks/feature_drafters.sh OUT_DIR DTYPE [PER] [TEMPERATURE]
#   (~20 min per dtype at PER=2 on one thread; run the two dtypes side by side, one per core)
set -euo pipefail
out=$1 dtype=$2 per=${3:-2} temperature=${4:-}
data=${SPECDIFF_DATA:-../shared/data}
sampling=()
if [[ -n "$temperature" ]]; then sampling=(--temperature "$temperature" --seed 0); fi
specdiff bench --prompts "$data/spec_bench/question.jsonl" --category translation --category summarization \
  --category qa --category math_reasoning --category rag --per-category "$per" --max-new-tokens 128 \
  -m hf-lookup -m hf-assisted -m lookup -m eagle -m eagle-tree -m dflash -m dflash-cut -m dflash-opt-tree \
  --repeats 1 --warmup 1 --dtype "$dtype" "${sampling[@]}" --out "$out"
