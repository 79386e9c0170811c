#!/usr/bin/env bash
# Issue 14's benchmark on the real target (SmolLM2-135M-Instruct): HF greedy (the reference), HF prompt
# lookup, SpecDiff lookup and SpecDiff `ar` (the small LM cut from the target, smollm2-135m-instruct-small)
# in one `specdiff bench` run per dtype, with the efficiency column (DESIGN.md §5). Spec-Bench's 5
# single-turn categories x 10 through the chat template, 128 new tokens, greedy.
# Usage: OMP_NUM_THREADS=1 bash benchmarks/issue14.sh [out_root] [dtype ...]   (~75 min per dtype, 1 thread)
set -euo pipefail
out=${1:-benchmarks/results}
shift $(( $# > 1 ? 1 : $# ))
dtypes=("${@:-float32 bfloat16}")
data=${SPECDIFF_DATA:-../shared/data}
for dtype in ${dtypes[@]}; do
  specdiff bench --prompts "$data/spec_bench/question.jsonl" --category translation --category summarization \
    --category qa --category math_reasoning --category rag --per-category 10 --max-new-tokens 128 \
    -m hf-lookup -m lookup -m ar --repeats 1 --warmup 1 --dtype "$dtype" --out "$out/issue14-specbench-$dtype"
done
