#!/usr/bin/env bash
# Every benchmark BENCHMARKS.md reports, in one go, on the shipped zoo models (about 45 min on 2 CPU cores).
#   bash benchmarks/run_all.sh [OUT_DIR]
set -euo pipefail
out=${1:-bench-results}
n=${NUM_PROMPTS:-20}
common=(--num-prompts "$n" --max-new-tokens 128 --repeats 2 --warmup 1)
# 1. greedy, every method, the HF baselines in the same run (Stage II diffusion drafter)
specdiff bench "${common[@]}" --out "$out/greedy" \
  -m hf-generate -m hf-assisted -m hf-lookup -m ar -m ar-tree -m ar-opt-tree -m lookup \
  -m dlm -m dlm-cps -m dlm-adl -m dlm-cps-adl -m dlm-opt-tree
# 2. greedy, the Stage I (not yet aligned) diffusion drafter: not in the wheel since 2026-12-07; train it first
[[ -f "$(python -c 'from specdiff import zoo; print(zoo.SHIPPED_DIR)')/stdlib-dlm-drafter-s1/config.json" ]] ||
  specdiff train diffusion-drafter --stage 1
specdiff bench "${common[@]}" --out "$out/greedy-stage1" --drafter stdlib-dlm-drafter-s1 \
  -m hf-generate -m dlm -m dlm-cps -m dlm-cps-adl -m dlm-opt-tree
# 3. sampled at temperature 0.7 and 1.0 (top_k 0: pure temperature), lossless: distributions, not outputs, match
for t in 0.7 1.0; do
  specdiff bench "${common[@]}" --out "$out/sampled-t$t" --temperature "$t" --top-k 0 --seed 0 \
    -m hf-generate -m ar -m ar-tree -m lookup -m dlm -m dlm-cps
done
# 4. tree size: chain vs OPT-Tree over the AR drafter's beam, node budgets 4..64
python benchmarks/tree_budget.py --prompts 10 --budgets 4,8,16,32,64 --out "$out/tree-budget"
# 5. tree size over the diffusion lattice: CPS's single chain vs lattice OPT-Tree, node budgets 4..64
python benchmarks/tree_budget.py --lattice --drafter stdlib-dlm-drafter --prompts 10 --budgets 4,8,16,32,64 \
  --max-depth 8 --out "$out/tree-budget-lattice"
# 6. heads and TiDAR next to the other drafters (greedy); TiDAR is also compared with its own model's generate
specdiff bench "${common[@]}" --out "$out/greedy-all" \
  -m hf-generate -m hf-assisted -m ar -m ar-opt-tree -m lookup -m dlm-opt-tree -m heads -m heads-tree -m tidar \
  -m tidar-opt-tree -m tidar-lean
# 7. the same, sampled at temperature 0.7
specdiff bench "${common[@]}" --out "$out/sampled-heads-tidar-t0.7" --temperature 0.7 --top-k 0 --seed 0 \
  -m hf-generate -m ar -m heads -m heads-tree -m tidar
# 8. TiDAR block size: 4 and 16 (the model was trained on blocks of 4 and 8; 16 is zero-shot)
specdiff bench "${common[@]}" --out "$out/tidar-block4" --draft-length 3 -m hf-generate -m tidar -m tidar-opt-tree
specdiff bench "${common[@]}" --out "$out/tidar-block16" --draft-length 15 -m hf-generate -m tidar
