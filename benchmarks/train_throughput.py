"""Training throughput: the 2019 report's loop against labkit's, measured side by side in one process.

(a) the report's way: batch size 10, every image through the frozen VGG16 backbone at every step;
(b) labkit's way: backbone features cached once, standardized, large batches; at 32 x 32 (1 x 1 maps)
    the first layer is trained folded (model.FoldedFirstLayer: the same updates at a 49th of its cost),
    and also measured unfolded (fold=False) to show what the folding gains.
Same head (25088 -> 4096 -> 4096 -> 256 -> 10), same optimizer (Adam), same images.
Also: the head's achieved GFLOP/s next to a float32 4096 x 4096 matmul measured in the same run,
forward throughput of heads with 50 / 90 / 97 % of the first layer removed physically (and, for
contrast, masked with torch.nn.utils.prune) as trained and in inference form, and the peak resident memory.

    python benchmarks/train_throughput.py            # 32 x 32 and 224 x 224, a few minutes on 2 cores
    python benchmarks/train_throughput.py --sizes 32 --images 512
"""
from __future__ import annotations

import argparse
import copy
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F
import torch.nn.utils.prune

from labkit import backbone, data, features, metrics, model, prune, train


def head_forward_flops(widths) -> int:
    return 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def report_way(backbone, head, images, labels, size, batch=10) -> float:
    """Images/s of the 2019 loop: backbone + head at every step, batch 10."""
    head.train()
    opt = torch.optim.Adam(head.parameters(), lr=1e-4, fused=True)
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        with torch.no_grad():
            maps = backbone(data.to_inputs(images[i:i + batch], size))
        loss = F.cross_entropy(head(maps), labels[i:i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(images) / (time.perf_counter() - start)


def labkit_way(head, maps, labels, batch=256, epochs=2, fold=True) -> float:
    """Images/s of train.fit on cached features (the first epoch warms up; the last is reported)."""
    fs = features.FeatureSet(maps, labels, "bench", 0, "train")
    hist = train.fit(head, fs, epochs=epochs, batch_size=batch, lr=1e-4, device="cpu", fold=fold)
    return hist[-1]["images_per_s"]


@torch.no_grad()
def forward_rate(head, maps, repeats=7) -> float:
    """Images/s of the fastest of `repeats` timed forward passes after one warm-up (a shared machine's
    stalls only ever slow a pass down, so the fastest is the steadiest figure for both sides of a ratio)."""
    head.eval()
    head(maps)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        head(maps)
        best = min(best, time.perf_counter() - start)
    return len(maps) / best


def linear_flops(module) -> int:
    """Forward FLOPs per image of the Linear layers of `module` (2 per multiply-add)."""
    return 2 * sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def pruned_inference(batch: int = 512) -> None:
    """Forward throughput after removing 50 / 90 / 97 % of layer 0's neurons, against the unpruned head.

    Two forms of each head: the module as trained (standardize, replicate or pass the maps, Linear
    layers) and its `inference_form()` (standardization folded into the first Linear, and at 1 x 1
    maps the 49-fold replication too), whose FLOPs are all Linear FLOPs. The FLOP ratio is that of
    the form measured. Masks (torch.nn.utils.prune) keep the full shapes, for contrast.
    """
    print(f"\npruned heads, forward at batch {batch} (train.evaluate's batch); speedups against the same form unpruned")
    worst = {"as trained": float("inf"), "inference form": float("inf")}
    for side, label in ((1, "32 px inputs: 512 x 1 x 1 maps"), (7, "224 px inputs: 512 x 7 x 7 maps")):
        torch.manual_seed(0)
        maps = torch.randn(batch, 512, side, side)
        full = model.build_head(map_size=side, seed=0).eval()
        full.norm.set_stats(maps.mean(0), maps.std(0))
        full_inf = full.inference_form()
        base, base_inf = forward_rate(full, maps), forward_rate(full_inf, maps)
        print(f"  {label}: unpruned {base:,.0f} images/s as trained, {base_inf:,.0f} images/s in inference form")
        print(f"    {'removed':>7}  {'as trained':>10} {'FLOP ratio':>10} {'ratio':>6}   {'inference form':>14} "
              f"{'FLOP ratio':>10} {'ratio':>6}   {'masked':>6}")
        for frac in (0.5, 0.9, 0.97):
            small = copy.deepcopy(full)
            prune.prune_neurons(small, 0, round(4096 * frac), "l2")
            speed = forward_rate(small, maps) / base
            flops = head_forward_flops(full.widths()) / head_forward_flops(small.widths())
            small_inf = small.inference_form()
            speed_inf = forward_rate(small_inf, maps) / base_inf
            flops_inf = linear_flops(full_inf) / linear_flops(small_inf)
            worst["as trained"] = min(worst["as trained"], speed / flops)
            worst["inference form"] = min(worst["inference form"], speed_inf / flops_inf)
            masked = copy.deepcopy(full)
            torch.nn.utils.prune.ln_structured(masked.linears()[0], "weight", amount=frac, n=1, dim=0)
            print(f"    {frac:>7.0%}  {speed:>9.2f}x {flops:>9.2f}x {speed / flops:>6.2f}   {speed_inf:>13.2f}x "
                  f"{flops_inf:>9.2f}x {speed_inf / flops_inf:>6.2f}   {forward_rate(masked, maps) / base:>5.2f}x")
    for form, ratio in worst.items():
        print(f"  target speedup >= 0.7 x FLOP ratio at every level, {form}: lowest {ratio:.3f} -> "
              f"{'met' if ratio >= 0.7 else 'NOT met'}")


# glibc hands large freed blocks (a batch's 8 MB activations) back to the OS and faults them in again on
# the next pass; for the small pruned heads that costs up to 40% of a pass, and it comes and goes between
# runs. Raising the thresholds keeps freed activations for reuse (what jemalloc or tcmalloc would do).
STEADY_MALLOC = "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=268435456"


def steady_allocator(system_malloc: bool) -> str:
    """Re-run this script with STEADY_MALLOC unless asked not to; returns what this process runs with."""
    if system_malloc or not sys.platform.startswith("linux"):
        return "the system's malloc settings"
    if os.environ.get("GLIBC_TUNABLES") != STEADY_MALLOC:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": STEADY_MALLOC})
    return "glibc with 256 MB mmap/trim thresholds (freed activations are reused; --system-malloc: without)"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    p.add_argument("--images", type=int, default=1024, help="images at 32 x 32 (224 x 224 uses a tenth)")
    p.add_argument("--batch", type=int, default=256, help="labkit's batch size")
    p.add_argument("--only-pruned", action="store_true", help="only the pruned-head inference part")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc's default thresholds (pruned-head timings then vary between runs)")
    args = p.parse_args()
    print(f"allocator: {steady_allocator(args.system_malloc)}")
    if args.only_pruned:
        pruned_inference()
        return
    torch.manual_seed(0)
    convs, tag = backbone.build_backbone("auto")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backbone weights {tag}")
    peak = matmul_gflops()
    print(f"float32 4096 x 4096 matmul: {peak:.1f} GFLOP/s (the practical limit of this machine)")
    for size in args.sizes:
        n = args.images if size <= 64 else max(40, args.images // 10)
        images, labels = data.load_mnist("train", limit=n)
        head = model.build_head(map_size=model.map_size_for(size), seed=0)
        a = report_way(convs, copy.deepcopy(head), images, labels, size)
        maps = features.extract(convs, images, size)
        reps = -(-args.images // n)  # few images at 224: repeat their cached maps so batches are full
        maps_b, labels_b = maps.repeat(reps, 1, 1, 1), labels.repeat(reps)
        start = time.perf_counter()
        features.extract(convs, images[: min(n, 64)], size)
        extract_rate = min(n, 64) / (time.perf_counter() - start)
        folded = head.map_size == 1
        b = labkit_way(copy.deepcopy(head), maps_b, labels_b, batch=args.batch)
        computed = head.widths() if not folded else [512, *head.widths()[1:]]  # what folded training multiplies
        gflops = b * metrics.training_flops(computed) / 1e9
        print(f"\n{size} x {size}, {n} images" + (f" (their cached maps repeated {reps}x for (b))" if reps > 1 else "") + ":")
        print(f"  (a) report's way (batch 10, backbone every step): {a:8.1f} images/s")
        print(f"  (b) labkit (cached features, batch {args.batch}{', first layer folded' if folded else ''}): "
              f"{b:8.1f} images/s")
        print(f"  ratio (b)/(a): {b / a:.1f}x   (features are extracted once at {extract_rate:.0f} images/s)")
        print(f"  head training: {gflops:.1f} GFLOP/s computed = {gflops / peak:.0%} of the matmul rate")
        if folded:
            full = labkit_way(copy.deepcopy(head), maps_b, labels_b, batch=args.batch, fold=False)
            full_gflops = full * metrics.training_flops(head.widths()) / 1e9
            print(f"  (b') labkit with the full 25,088-wide first layer (fold=False): {full:8.1f} images/s, "
                  f"{full_gflops:.1f} GFLOP/s = {full_gflops / peak:.0%} of the matmul rate; folding gains "
                  f"{b / full:.1f}x")
    pruned_inference()
    print(f"\npeak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    from labkit import progress

    with progress.reporting(bars=False):  # no bar drawn inside the timed code
        main()
