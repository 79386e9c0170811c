#!/usr/bin/env bash
# Issue 14's device check, for a task that is lent a GPU (15 minutes in all, start-up included): it must
# finish in under 8 minutes. Steps, each under its own timeout, then a summary in markdown to paste into
# BENCHMARKS.md (also written to $OUT/device_check.md, with every step's log, when $OUT is set):
#   tests   the lossless tests on the device (tiny models, fp32): tree path == additive path, greedy == generate;
#   verify  verify cost on the real target (benchmarks/verify_cost.py), bf16 and fp32: ours vs HF's causal forward;
#   bench   the real-target bench: HF greedy, HF prompt lookup, HF assisted (the zoo's small LM), SpecDiff lookup
#           and every shipped SmolLM2 drafter's methods; Spec-Bench's 5 single-turn categories, 128 new tokens,
#           greedy; bf16 (2 per category) then fp32 (1 per category, fewer methods).
# Getting there: a call of the device tool carries 64 MiB and the target's wheel is 93 MB, so
# benchmarks/device_payload.sh cuts what travels into three calls (benchmarks/device_go.sh runs this there).
# A bench step is stopped with SIGINT at its limit: `specdiff bench` then keeps the prompts every method
# answered and writes its table, and a method that fails on the device is left out with its error.
# Usage: bash benchmarks/device_check.sh [--cpu] [tests] [verify] [bench]    (no step named: all three)
#   on the GPU machine, environment installed as README.md says; --cpu: the same steps cut small, on the
#   CPU, to check the script itself. To fit what device time is left:
#   SPECDIFF_DEVICE_BENCHES="name dtype per-category limit method ...; ..." replaces the bench list,
#   SPECDIFF_DEVICE_LIMITS="tests verify" the other two limits (seconds).
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda
if [[ "${1:-}" == "--cpu" ]]; then device=cpu; shift; fi
steps=("${@:-tests verify bench}")
steps=" ${steps[*]} "
data=${SPECDIFF_DATA:-../shared/data}
categories=(--category translation --category summarization --category qa --category math_reasoning --category rag)
tests=(tests/test_kv.py tests/test_lossless.py)
verify=(--dtypes bfloat16 float32)
# name, dtype, prompts per category, limit in seconds, methods (hf-generate always runs)
benches=("bf16 bfloat16 2 150 hf-lookup hf-assisted lookup lookup-chain ar ar-opt-tree eagle eagle-tree heads-tree dflash"
         "fp32 float32 1 100 hf-lookup hf-assisted lookup ar eagle-tree dflash")
limits=(120 60)  # seconds: tests, verify cost (with the benches: 430 s, under the 8 minutes)
if [[ -n "${SPECDIFF_DEVICE_BENCHES:-}" ]]; then IFS=';' read -r -a benches <<< "$SPECDIFF_DEVICE_BENCHES"; fi
if [[ -n "${SPECDIFF_DEVICE_LIMITS:-}" ]]; then read -r -a limits <<< "$SPECDIFF_DEVICE_LIMITS"; fi
tokens=128
if [[ "$device" == cpu ]]; then
  tests=(tests/test_kv.py -k "llama")
  verify=(--dtypes float32 --prefixes 256 --rows 1 16 --repeats 1)
  benches=("fp32 float32 1 300 hf-lookup lookup eagle-tree")
  categories=(--category summarization)
  limits=(300 300)
  tokens=8
fi
work=$(mktemp -d)
summary="$work/summary.md"
{
  echo "## Device check ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  python - "$device" <<'PY'
import sys, torch, transformers
device = sys.argv[1]
name = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "cpu"
print(f"\n{name}; torch {torch.__version__}, transformers {transformers.__version__}\n")
PY
} > "$summary"

if [[ "$steps" == *" tests "* ]]; then
  echo "== tests on $device" >&2
  SPECDIFF_TEST_DEVICE=$device timeout -k 10 "${limits[0]}" python -m pytest -q -p no:cacheprovider "${tests[@]}" \
    > "$work/tests.txt" 2>&1
  status=$?
  { echo "### Lossless tests on $device (exit $status)"; echo; echo '```'
    grep -E "^(FAILED|ERROR)" "$work/tests.txt" | head -n 20; tail -n 1 "$work/tests.txt"; echo '```'; } >> "$summary"
fi

if [[ "$steps" == *" verify "* ]]; then
  echo "== verify cost" >&2
  timeout -k 10 "${limits[1]}" python benchmarks/verify_cost.py --device "$device" "${verify[@]}" \
    > "$work/verify.txt" 2>&1
  status=$?
  { echo; echo "### Verify cost: one forward after a cached prefix, ours vs HF's causal forward (exit $status)"; echo
    grep -E '^(\||torch)' "$work/verify.txt"; } >> "$summary"
fi

if [[ "$steps" == *" bench "* ]]; then
  for spec in "${benches[@]}"; do
    read -r name dtype per limit names <<< "$spec"
    methods=()
    for method in $names; do methods+=(-m "$method"); done
    echo "== bench $name: $names" >&2
    timeout -s INT -k 30 "$limit" specdiff bench --prompts "$data/spec_bench/question.jsonl" "${categories[@]}" \
      --per-category "$per" --max-new-tokens "$tokens" "${methods[@]}" --repeats 1 --warmup 1 --device "$device" \
      --dtype "$dtype" --out "$work/bench-$name" > "$work/bench-$name.txt" 2>&1
    status=$?
    { echo; echo "### Real target bench, $dtype, $per per category (exit $status)"; echo
      if [[ -f "$work/bench-$name/table.md" ]]; then cat "$work/bench-$name/table.md"; else tail -n 8 "$work/bench-$name.txt"; fi
    } >> "$summary"
    if [[ -n "${OUT:-}" && -f "$work/bench-$name/results.json" ]]; then cp "$work/bench-$name/results.json" "$OUT/results-$name.json"; fi
  done
fi

cat "$summary"
if [[ -n "${OUT:-}" ]]; then cp "$summary" "$OUT/device_check.md"; cp "$work"/*.txt "$OUT/" 2>/dev/null; fi
exit 0
