"""Measure acceptance of SpecDiff methods on a few held-out prompts and print the stats table.

    python examples/measure_acceptance.py --prompts 5 --max-new-tokens 128
"""

import argparse

from specdiff import SpecDiff, zoo
from specdiff.drafters import AutoregressiveDrafter, PromptLookupDrafter


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    target, tokenizer = zoo.load("stdlib-target")
    drafter_model, _ = zoo.load("stdlib-ar-drafter")
    methods = {
        "ar chain k=5": AutoregressiveDrafter(drafter_model, k=5, tokenizer=tokenizer),
        "ar tree k=4 top_k=2": AutoregressiveDrafter(drafter_model, k=4, top_k=2, tokenizer=tokenizer),
        "prompt lookup": PromptLookupDrafter(ngram=3, k=8),
    }
    prompts = zoo.heldout_prompts(args.prompts, seed=0)
    for name, drafter in methods.items():
        spec = SpecDiff(target, drafter, tokenizer=tokenizer)
        total = None
        for prompt in prompts:
            stats = spec.generate(prompt, max_new_tokens=args.max_new_tokens).stats
            total = stats if total is None else total.merge(stats)
        print(f"== {name} ({len(prompts)} prompts)\n{total.table()}\n")


if __name__ == "__main__":
    main()
