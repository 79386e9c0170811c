#!/usr/bin/env bash
# Issue 14's device check, for a task that is lent a GPU (15 minutes in all, start-up included): it must
# finish in under 8 minutes. Three steps, each under its own timeout, then a summary in markdown to paste
# into BENCHMARKS.md (also written to $OUT/device_check.md when $OUT is set):
#   1. the lossless tests on the device (tiny models, fp32): tree path == additive path, greedy == generate;
#   2. verify cost on the real target (benchmarks/verify_cost.py), bf16 and fp32: ours vs HF's causal forward;
#   3. a short real-target bench: HF greedy, HF prompt lookup, SpecDiff lookup (trie and chain), Spec-Bench's
#      5 single-turn categories x 2, 128 new tokens, greedy, bf16 and fp32.
#      SpecDiff `ar` joins when SPECDIFF_AR_DRAFTER names a small causal LM sharing the target's tokenizer.
# Usage: bash benchmarks/device_check.sh          on the GPU machine, environment installed as README.md says
#        bash benchmarks/device_check.sh --cpu    the same steps cut small, on the CPU: checks the script itself
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda
tests=(tests/test_kv.py tests/test_lossless.py)
verify=(--dtypes bfloat16 float32)
bench=(--per-category 2 --max-new-tokens 128)
dtypes=(bfloat16 float32)
limits=(200 100 80)  # seconds: tests, verify cost, each bench run
if [[ "${1:-}" == "--cpu" ]]; then
  device=cpu
  tests=(tests/test_kv.py -k "llama")
  verify=(--dtypes float32 --prefixes 256 --rows 1 16 --repeats 1)
  bench=(--per-category 1 --category summarization --max-new-tokens 8)
  dtypes=(float32)
  limits=(300 300 300)
fi
data=${SPECDIFF_DATA:-../shared/data}
work=$(mktemp -d)
methods=(-m hf-lookup -m lookup -m lookup-chain)
if [[ -n "${SPECDIFF_AR_DRAFTER:-}" ]]; then methods+=(-m ar --drafter "$SPECDIFF_AR_DRAFTER"); fi
categories=(--category translation --category summarization --category qa --category math_reasoning --category rag)
[[ "$device" == cpu ]] && categories=()

summary="$work/summary.md"
{
  echo "## Device check ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  python - "$device" <<'EOF'
import sys, torch, transformers
device = sys.argv[1]
name = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "cpu"
print(f"\n{name}; torch {torch.__version__}, transformers {transformers.__version__}\n")
EOF
} > "$summary"

echo "== 1. lossless tests on $device" >&2
SPECDIFF_TEST_DEVICE=$device timeout "${limits[0]}" python -m pytest -q -x -p no:cacheprovider "${tests[@]}" \
  > "$work/tests.txt" 2>&1
status=$?
{ echo "### Lossless tests on $device (exit $status)"; echo; echo '```'; tail -n 3 "$work/tests.txt"; echo '```'; } \
  >> "$summary"

echo "== 2. verify cost" >&2
timeout "${limits[1]}" python benchmarks/verify_cost.py --device "$device" "${verify[@]}" > "$work/verify.txt" 2>&1
status=$?
{ echo; echo "### Verify cost: one forward after a cached prefix, ours vs HF's causal forward (exit $status)"; echo
  grep -E '^(\||torch)' "$work/verify.txt"; } >> "$summary"

for dtype in "${dtypes[@]}"; do
  echo "== 3. bench, $dtype" >&2
  timeout "${limits[2]}" specdiff bench --prompts "$data/spec_bench/question.jsonl" "${categories[@]}" "${bench[@]}" \
    "${methods[@]}" --repeats 1 --warmup 1 --device "$device" --dtype "$dtype" --out "$work/bench-$dtype" \
    > "$work/bench-$dtype.txt" 2>&1
  status=$?
  { echo; echo "### Real target bench, $dtype (exit $status)"; echo
    if [[ -f "$work/bench-$dtype/table.md" ]]; then cat "$work/bench-$dtype/table.md"; else tail -n 5 "$work/bench-$dtype.txt"; fi
  } >> "$summary"
done

cat "$summary"
if [[ -n "${OUT:-}" ]]; then cp "$summary" "$OUT/device_check.md"; cp "$work"/*.txt "$OUT/" 2>/dev/null; fi
