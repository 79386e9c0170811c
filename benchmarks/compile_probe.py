"""Probe (twelfth session): torch.compile (Inductor, freezing, dynamic shapes) of SmolLM2-135M-Instruct on a CPU in
fp32, against eager, for a forward of 1 and 8 rows after 300 cached rows (transformers' own cache and causal mask, not
SpecDiff's engine: no tree mask, no packing). Prints the compile time of each new shape and the median forward time.

    OMP_NUM_THREADS=2 python benchmarks/compile_probe.py
"""
import time, torch
from specdiff import zoo
from transformers import DynamicCache
model, tok = zoo.load("smollm2-135m-instruct", dtype="float32")
model.eval()
ids = torch.randint(100, 20000, (1, 300))
def run(m, rows, reps=8):
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        m(ids, cache=cache, use_cache=True)
        ts = []
        for r in range(reps):
            x = torch.randint(100, 20000, (1, rows))
            t = time.perf_counter()
            out = m(x, cache=cache, use_cache=True)
            ts.append(time.perf_counter() - t)
            cache.crop(-rows)
        return sorted(ts)[len(ts)//2] * 1000, out.logits
for rows in (1, 8):
    print("eager", rows, f"{run(model, rows)[0]:.1f} ms")
import torch._inductor.config as ic
ic.freezing = True
t = time.perf_counter()
compiled = torch.compile(model, dynamic=True)
for rows in (1, 8, 8):
    t0 = time.perf_counter()
    ms, logits = run(compiled, rows, reps=3)
    print("compiled", rows, f"first call incl. compile {time.perf_counter()-t0:.1f} s; median {ms:.1f} ms")
for rows in (1, 8):
    ms, lc = run(compiled, rows)
    _, le = run(model, rows)
    print("compiled", rows, f"{ms:.1f} ms")
