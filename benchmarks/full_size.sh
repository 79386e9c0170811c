#!/usr/bin/env bash
# Issue 15's benchmark size on the real target: Spec-Bench's 5 single-turn categories x PER (default 10), or
# MT-Bench's first turns (PER per category, 10 in all), 128 new tokens, one `specdiff bench` run: HF greedy
# (the reference), HF prompt lookup, HF assisted generation (the small LM), and SpecDiff's methods.
# METHODS (space-separated) overrides the default list; TEMPERATURE samples (seed 0); EXTRA adds `specdiff bench`
# options (e.g. EXTRA=--compile: the target's verify forwards through torch.compile, compiled in the warm-up).
# Usage: OMP_NUM_THREADS=1 bash benchmarks/full_size.sh OUT_DIR DTYPE spec|mt [PER]
#   e.g. METHODS="lookup eagle dflash-hw" bash benchmarks/full_size.sh out float32 spec 10
#   (one thread per run: ~8 s per reply and method in fp32 on these CPUs; run the two sets side by side)
set -euo pipefail
out=$1 dtype=$2 set=$3
data=${SPECDIFF_DATA:-../shared/data}
methods=(${METHODS:-hf-lookup hf-assisted lookup eagle eagle-lookup eagle-tree-lookup dflash-hw dflash-lookup})
method_flags=()
for m in "${methods[@]}"; do method_flags+=(-m "$m"); done
sampling=()
if [[ -n "${TEMPERATURE:-}" ]]; then sampling=(--temperature "$TEMPERATURE" --seed 0); fi
case "$set" in
  spec) prompts=(--prompts "$data/spec_bench/question.jsonl" --category translation --category summarization
                 --category qa --category math_reasoning --category rag --per-category "${4:-10}") ;;
  mt) prompts=(--prompts "$data/mt_bench/question.jsonl" --per-category "${4:-2}" --num-prompts 10 --max-turns 1) ;;
  *) echo "SET must be spec or mt, got $set" >&2; exit 2 ;;
esac
specdiff bench "${prompts[@]}" --max-new-tokens 128 "${method_flags[@]}" --repeats 1 --warmup 1 --dtype "$dtype" \
  "${sampling[@]}" ${EXTRA:-} --out "$out"
