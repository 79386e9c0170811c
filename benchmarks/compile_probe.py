"""Probe: the engine's tree forwards of SmolLM2-135M-Instruct in fp32 on a CPU, packed eager (`CachedLM`) against
compiled (`CachedLM(compiled=True)`: the decoder through torch.compile, Inductor with freezing; `specdiff.compiled`),
in one process, alternating. Prints the compiling time (the first forwards), then for 4, 8 and 16 tree rows after
600 cached rows the median forward time of each and the largest logit difference between them.

    OMP_NUM_THREADS=2 python benchmarks/compile_probe.py
"""

from __future__ import annotations

import time

import torch

from specdiff import zoo
from specdiff.kv import CachedLM

CACHED, ROWS, REPS = 600, (4, 8, 16), 10

model, _ = zoo.load("smollm2-135m-instruct", dtype="float32")
generator = torch.Generator().manual_seed(0)
prefix = torch.randint(100, 20000, (CACHED,), generator=generator).tolist()


def tree(rows: int) -> torch.Tensor:
    """visible [rows, rows]: two branches under the first row."""
    visible = torch.ones(rows, rows, dtype=torch.bool).tril()
    visible[rows // 2:, 1:rows // 2] = False
    return visible


def timed(engine: CachedLM, ids: torch.Tensor):
    engine.sync(prefix)  # drops the last forward's pending rows
    started = time.perf_counter()
    out = engine.forward(ids, torch.arange(CACHED, CACHED + len(ids)), tree(len(ids)), hidden_layers=(-1,))
    return time.perf_counter() - started, out.logits


engines = {"eager": CachedLM(model, row_padding=None), "compiled": CachedLM(model, row_padding=None, compiled=True)}
for engine in engines.values():
    engine.forward(prefix)
started = time.perf_counter()
for rows in ROWS:
    for _ in range(3):  # a fresh tree forward, then one over a cropped cache
        timed(engines["compiled"], torch.randint(100, 20000, (rows,), generator=generator))
print(f"compiling (first compiled forwards): {time.perf_counter() - started:.0f} s")
for rows in ROWS:
    seconds, difference = {name: [] for name in engines}, 0.0
    for _ in range(REPS):
        ids = torch.randint(100, 20000, (rows,), generator=generator)
        logits = {}
        for name, engine in engines.items():
            elapsed, logits[name] = timed(engine, ids)
            seconds[name].append(elapsed)
        difference = max(difference, float((logits["eager"] - logits["compiled"]).abs().max()))
    medians = {name: sorted(times)[REPS // 2] * 1000 for name, times in seconds.items()}
    print(f"{rows} rows after {CACHED} cached: packed eager {medians['eager']:.1f} ms, compiled "
          f"{medians['compiled']:.1f} ms, max |logit difference| {difference:.1e}")
