"""How long `specdiff generate` / `specdiff --help` take before their first output (issue 13's goal:
<= 2 s before the first token beyond importing torch and transformers; --help < 1.5 s).

    OMP_NUM_THREADS=1 python benchmarks/startup.py [--repeats 3]

Each measurement is a fresh process: --help as a subprocess; generate in a process that first
imports torch + transformers + the Llama modeling code (timed), then runs the CLI in-process and
notes when the first text reaches stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CHILD = r"""
import sys, time, json
start = time.perf_counter()
import torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
import transformers.models.llama.modeling_llama
imported = time.perf_counter()
first = []
class Watch:
    def __init__(self, stream): self.stream = stream
    def write(self, text):
        if text.strip() and not first: first.append(time.perf_counter())
        return self.stream.write(text)
    def flush(self): self.stream.flush()
    def __getattr__(self, name): return getattr(self.stream, name)
sys.stdout = Watch(sys.stdout)
from specdiff.cli.main import cli
try:
    cli.main(["generate", "--max-new-tokens", "8", "What is the capital of France?"], standalone_mode=False)
finally:
    sys.stdout = sys.stdout.stream
print(json.dumps(dict(imports=imported - start, to_first_token=first[0] - imported)))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    helps, imports, firsts = [], [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        subprocess.run(["specdiff", "--help"], check=True, capture_output=True)
        helps.append(time.perf_counter() - started)
        out = subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True, text=True).stdout
        timing = json.loads(out.strip().splitlines()[-1])
        imports.append(timing["imports"])
        firsts.append(timing["to_first_token"])
    print(f"specdiff --help: median {statistics.median(helps):.2f} s; import torch+transformers: median "
          f"{statistics.median(imports):.2f} s; then to the first generated token: median "
          f"{statistics.median(firsts):.2f} s (runs: {', '.join(f'{t:.2f}' for t in firsts)})")


if __name__ == "__main__":
    main()
