"""What the student's functions cost the study: a prune step with notebook 03's solutions against labkit's own.

    python benchmarks/exercise_cost.py     (about a minute on a 2-core CPU)

The study's head (25,088 -> 4,096 -> 4,096 -> 256 -> 10, random weights) loses 100 first-layer neurons, by each
criterion, once with labkit's functions (float64 block scores, rows cut in place) and once with the functions
notebook 03's instructor copy defines (plain float64 scores of the whole matrix, new layers), the two taking
turns for `ROUNDS` rounds. Prints the seconds of each and their ratio, the float32 matmul rate around the run,
and what the step costs a quick profile's comparison (8 prune steps: 4 criteria x 2 cycles).
"""
import json
import statistics
import time
from pathlib import Path

import torch

from labkit import model, prune

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 3


def solutions() -> dict:
    cells = json.loads((ROOT / "notebooks" / "03_prune_compare.ipynb").read_text())["cells"]
    namespace = {"torch": torch}
    for c in cells:
        if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code":
            exec("".join(c["source"]), namespace)  # noqa: S102 (the repository's own notebook)
    return {k: namespace[k] for k in ("l1_scores", "l2_scores", "reservoir_sample", "remove_neurons")}


def matmul_rate() -> float:
    a = torch.randn(4096, 4096)
    a @ a
    began = time.perf_counter()
    for _ in range(3):
        a @ a
    return 3 * 2 * 4096 ** 3 / (time.perf_counter() - began) / 1e9


def step(method: str, functions: dict) -> float:
    head = model.build_head((4096, 4096, 256), map_size=1, seed=0)
    began = time.perf_counter()
    with prune.using(**functions):
        prune.prune_neurons(head, 0, 100, method, seed=1)
    return time.perf_counter() - began


def main() -> None:
    torch.manual_seed(0)
    before = matmul_rate()
    mine = solutions()
    times = {(m, who): [] for m in ("l1", "l2", "reservoir") for who in ("labkit", "solutions")}
    for _ in range(ROUNDS):
        for method in ("l1", "l2", "reservoir"):
            for who, functions in (("labkit", {}), ("solutions", mine)):
                times[method, who].append(step(method, functions))
    after = matmul_rate()
    print(f"float32 4096^2 matmul: {before:.0f} GFLOP/s before, {after:.0f} after; {torch.get_num_threads()} threads")
    extra = []
    for method in ("l1", "l2", "reservoir"):
        ours, theirs = (statistics.median(times[method, w]) for w in ("labkit", "solutions"))
        extra.append(theirs - ours)
        print(f"{method:>9}: labkit {ours:.2f} s, the solutions {theirs:.2f} s a prune step ({theirs / ours:.2f}x; "
              f"medians of {ROUNDS})")
    print(f"a quick comparison prunes 8 times: about {8 * statistics.mean(extra):+.1f} s with the solutions")


if __name__ == "__main__":
    main()
