"""Probe (twelfth session): torch.compile (Inductor, freezing, dynamic shapes) of SmolLM2-135M-Instruct on a CPU in
fp32, against eager, for a forward of 1 and 8 rows after 300 cached rows (transformers' own cache and causal mask, not
SpecDiff's engine: no tree mask, no packing). Prints the time of each shape's first compiled calls (compiling and
recompiling as the cache grows), then the median forward time and the largest logit difference from eager.

    OMP_NUM_THREADS=2 python benchmarks/compile_probe.py
"""

from __future__ import annotations

import time

import torch
import torch._inductor.config as inductor_config
from transformers import DynamicCache

from specdiff import zoo

PREFIX, ROWS = 300, (1, 8)

model, _ = zoo.load("smollm2-135m-instruct", dtype="float32")
prefix = torch.randint(100, 20000, (1, PREFIX), generator=torch.Generator().manual_seed(0))


def forwards(m, rows: int, reps: int = 8) -> tuple[float, torch.Tensor]:
    """Median ms of `reps` forwards of `rows` rows after the cached prefix, and the last one's logits."""
    generator = torch.Generator().manual_seed(rows)
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        m(prefix, cache=cache, use_cache=True)
        seconds = []
        for _ in range(reps):
            x = torch.randint(100, 20000, (1, rows), generator=generator)
            started = time.perf_counter()
            logits = m(x, cache=cache, use_cache=True).logits
            seconds.append(time.perf_counter() - started)
            cache.crop(-rows)
    return sorted(seconds)[len(seconds) // 2] * 1000, logits


eager = {rows: forwards(model, rows) for rows in ROWS}
inductor_config.freezing = True
compiled = torch.compile(model, dynamic=True)
for rows in ROWS:
    started = time.perf_counter()
    forwards(compiled, rows, reps=3)
    print(f"{rows} row(s): first compiled calls {time.perf_counter() - started:.0f} s")
for rows in ROWS:
    ms, logits = forwards(compiled, rows)
    print(f"{rows} row(s): eager {eager[rows][0]:.1f} ms, compiled {ms:.1f} ms, "
          f"max |logit difference| {(logits - eager[rows][1]).abs().max():.2e}")
