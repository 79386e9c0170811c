#!/usr/bin/env bash
# Issues 14-16's benchmark on the real target (SmolLM2-135M-Instruct) with the drafters trained for it:
# every baseline and SpecDiff method in one `specdiff bench` run per dtype, Spec-Bench's 5 single-turn
# categories through the chat template, 128 new tokens, greedy.
# Usage: OMP_NUM_THREADS=1 bash benchmarks/real_drafters.sh [out_root] [prompts per category] [dtype ...]
# The full setting the issues ask for is 10 prompts per category (~2.5 h per dtype on one CPU thread);
# the session that wrote this could afford 2 (the default), fp32 and bf16 side by side on the 2 cores.
set -euo pipefail
out=${1:-benchmarks/results}
per=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
dtypes=("${@:-float32}")
data=${SPECDIFF_DATA:-../shared/data}
methods=(-m hf-lookup -m hf-assisted -m lookup -m ar -m ar-opt-tree)
for extra in ${SPECDIFF_EXTRA_METHODS:-}; do methods+=(-m "$extra"); done
for dtype in "${dtypes[@]}"; do
  specdiff bench --prompts "$data/spec_bench/question.jsonl" --category translation --category summarization \
    --category qa --category math_reasoning --category rag --per-category "$per" --max-new-tokens 128 \
    "${methods[@]}" --repeats 1 --warmup 1 --dtype "$dtype" --out "$out/real-drafters-specbench-$dtype"
done
