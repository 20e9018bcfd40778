"""One quick-profile cycle against its arithmetic: seconds measured beside the seconds its FLOPs take at the
float32 matmul rate measured in the same run.

A cycle of a pruning run is: prune (score the neurons of the 25,088-wide first layer, rebuild the layers
smaller, drop the removed rows from Adam's moments), train c.epochs on the profile's training images (the
first layer folded to the 512 distinct features), then validate and test (the inference form, built once).
Its arithmetic is the training FLOPs (forward, weight and input gradients of the folded head), the evaluation
FLOPs (forward of the inference form on the validation and test images) and the scores (3 FLOPs a weight of the
pruned layer). The equal-budget control's cycle (nothing removed) is timed too. Target: within 1.5x.

The machine's speed drifts (a shared virtual machine: the same 4096 x 4096 product measured from 180 to 315
GFLOP/s within minutes), so the matmul rate is measured just before and just after each cycle and that cycle's
arithmetic is timed at their mean (a rate taken before alone charged a slowdown during the cycle to the
cycle); the target is judged on each arm's median cycle, and the slowest is printed too.

    python benchmarks/cycle_cost.py                 # quick profile, 3 cycles of each arm, about a minute
    python benchmarks/cycle_cost.py --profile ci
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from labkit import config, metrics, study, train
from labkit.device import derive_seed


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """float32 n x n matmul rate, the fastest of `repeats` timed products after a warm-up (GFLOP/s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def folded(widths) -> list[int]:
    """The widths the arithmetic runs on: at 1 x 1 maps the first layer reads the 512 distinct features."""
    return [512, *widths[1:]] if widths[0] == 25088 else list(widths)


def cycle_flops(c: config.StudyConfig, before: list[int], after: list[int], n_train: int, n_eval: int,
                pruned: bool) -> float:
    """FLOPs of one cycle: scores of the pruned layer, training c.epochs, evaluating the validation and test sets."""
    scores = 3 * before[0] * before[1] if pruned else 0
    training = metrics.training_flops(folded(after)) * n_train * c.epochs
    evaluation = 2 * sum(a * b for a, b in zip(folded(after)[:-1], folded(after)[1:])) * n_eval
    return scores + training + evaluation


def timed_cycle(c, head, state, data, cycle) -> dict:
    """One cycle of `c` on `head`: seconds of each phase."""
    before = head.widths()
    t0 = time.perf_counter()
    study.prune_step(c, head, state, cycle)
    t1 = time.perf_counter()
    train.fit(head, data.train, c.epochs, c.batch_size, study.cycle_rate(c), seed=derive_seed(c.seed, cycle),
              device=c.device, desc=f"cycle {cycle}", state=state)  # what Run.step trains in a cycle
    t2 = time.perf_counter()
    study.measure(c, head, data, cycle, 0.0, c.epochs * (cycle + 1))
    t3 = time.perf_counter()
    return {"before": before, "after": head.widths(), "prune": t1 - t0, "train": t2 - t1, "measure": t3 - t2,
            "total": t3 - t0}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=tuple(config.PROFILES))
    p.add_argument("--cycles", type=int, default=3, help="cycles timed per arm")
    args = p.parse_args()
    c = config.make_config(args.profile, method="l2", checkpoints="off")
    data = study.prepare_features(c, progress=False)
    n_train, n_eval = len(data.train), len(data.val) + len(data.test)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.profile} profile: {n_train:,} training "
          f"images x {c.epochs} epochs a cycle (batch {c.batch_size}), {n_eval:,} evaluated")
    print("float32 4096 x 4096 matmul rate: the mean of one measured just before and one just after each cycle "
          "(GFLOP/s column); FLOPs s is the cycle's arithmetic at that rate")
    print(f"{'arm':>7} {'cycle':>5} {'widths after':>22} {'GFLOP/s':>8} {'prune s':>8} {'train s':>8} {'measure s':>9} "
          f"{'total s':>8} {'FLOPs s':>8} {'ratio':>6}")
    ratios, arms = {}, {}
    for method in ("l2", "none"):
        arm = dataclasses.replace(c, method=method)
        head = study.new_head(arm, data.train)
        state = train.AdamState()
        train.fit(head, data.train, 1, c.batch_size, c.lr, seed=0, state=state)  # warm, with moments
        arms[method] = arm, head, state
    for cycle in range(1, args.cycles + 1):  # the arms take turns, so a slow minute of the machine hits both
        for method, (arm, head, state) in arms.items():
            before = matmul_gflops(repeats=3)
            t = timed_cycle(arm, head, state, data, cycle)
            rate = (before + matmul_gflops(repeats=3)) / 2
            flops = cycle_flops(arm, t["before"], t["after"], n_train, n_eval, method != "none")
            ideal = flops / (rate * 1e9)
            ratios.setdefault(method, []).append(t["total"] / ideal)
            print(f"{method:>7} {cycle:>5} {'-'.join(map(str, t['after'])):>22} {rate:>8.1f} {t['prune']:>8.2f} "
                  f"{t['train']:>8.2f} {t['measure']:>9.2f} {t['total']:>8.2f} {ideal:>8.2f} {t['total'] / ideal:>6.2f}")
    for method, r in ratios.items():
        median = statistics.median(r)
        print(f"{method:>7}: median cycle {median:.2f}x its arithmetic, slowest {max(r):.2f}x (target 1.5x) -> "
              f"{'met' if median <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    from labkit import progress

    with progress.reporting(bars=False):  # no bar drawn inside the timed code
        main()
