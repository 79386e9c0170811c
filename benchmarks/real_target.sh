#!/usr/bin/env bash
# Issue 13's benchmark on the real target (SmolLM2-135M-Instruct), one `specdiff bench` run per prompt
# set and dtype: HF greedy (the reference), HF prompt lookup, SpecDiff lookup as a chain and as a trie.
# Spec-Bench's 5 single-turn categories x 10, and 10 MT-Bench first turns (2 per category, in turn),
# through the chat template; 128 new tokens, greedy; fp32 (exact) and bf16 (exact-match rate + ties).
# Usage: OMP_NUM_THREADS=1 bash benchmarks/real_target.sh [out_root]   (~70 min on 1 CPU thread)
set -euo pipefail
out=${1:-benchmarks/results}
data=${SPECDIFF_DATA:-../shared/data}
methods=(-m hf-lookup -m lookup-chain -m lookup)
for dtype in float32 bfloat16; do
  specdiff bench --prompts "$data/spec_bench/question.jsonl" --category translation --category summarization \
    --category qa --category math_reasoning --category rag --per-category 10 --max-new-tokens 128 \
    "${methods[@]}" --repeats 1 --warmup 1 --dtype "$dtype" --out "$out/real-specbench-$dtype"
  specdiff bench --prompts "$data/mt_bench/question.jsonl" --per-category 2 --num-prompts 10 --max-turns 1 \
    --max-new-tokens 128 "${methods[@]}" --repeats 1 --warmup 1 --dtype "$dtype" --out "$out/real-mtbench-$dtype"
done
