"""Peak memory of the paper profile at 224 x 224 on a CPU machine (the target: it fits in 24 GiB).

A CPU needs hours to run VGG16 over 70,000 images at 224 x 224, so this benchmark writes feature
caches of the paper profile's exact shape and dtype (50,000 training, 10,000 validation and 10,000 test
maps of 512 x 7 x 7, float16, random values) where labkit looks for them, in a temporary LABKIT_DATA,
from a child process (it stops if labkit would not find them: it never starts hours of extraction). This
process then does what a paper-profile run does after extraction: reads the caches, builds the
full head with training-set statistics, trains it (a slice of the training set, batch 256: memory
does not grow with steps) and evaluates it, and prints its peak resident memory with a breakdown.

    python benchmarks/memory_224.py                 # about a minute and 4 GB of temporary disk
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

GIB = 2**30


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def make_caches(root: str) -> None:
    """Child process: random float16 caches of the paper profile's shape at 224 px, where labkit reads them."""
    import torch

    from labkit import features
    from labkit.config import make_config

    config = make_config("paper", image_size=224, weights="random")
    subsets = config.subsets
    for split in ("train", "val", "test"):
        n = subsets.images(split)
        path = features.cache_path("random-seed0", 224, split, subsets, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        maps = torch.empty((n, 512, 7, 7), dtype=features.storage_dtype(224))
        g = torch.Generator().manual_seed(0)
        for i in range(0, n, 5000):
            maps[i:i + 5000] = torch.rand((min(5000, n - i), 512, 7, 7), generator=g).to(maps.dtype)
        labels = torch.arange(n) % 10
        torch.save({"maps": maps, "labels": labels,
                    "about": features.describe("random-seed0", 224, split, subsets)}, path)  # as labkit records
        del maps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2048, help="training images actually stepped through")
    p.add_argument("--make-caches", dest="make", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.make:
        make_caches(args.make)
        return 0
    with tempfile.TemporaryDirectory(prefix="labkit-mem224-") as root:
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make-caches", root], check=True)
        print(f"wrote paper-profile-shaped caches (float16) in {time.perf_counter() - t:.0f} s")
        os.environ["LABKIT_DATA"] = root
        os.environ["LABKIT_OFFLINE"] = "1"
        import torch

        from labkit import features, study, train
        from labkit.config import make_config

        config = make_config("paper", image_size=224, weights="random", device="cpu")
        missing = [s for s in ("train", "val", "test") if not features.cache_path(
            "random-seed0", 224, s, config.subsets, root).exists()]
        if missing:
            print(f"error: the synthetic caches for {missing} are not where labkit looks; not extracting for hours",
                  file=sys.stderr)
            return 2
        base = peak_gib()
        train_set, val_set, test_set = study.prepare_features(config, progress=False)
        after_load = peak_gib()
        cached = sum(fs.maps.numel() * fs.maps.element_size() for fs in (train_set, val_set, test_set)) / GIB
        head = study.new_head(config, train_set)
        params = sum(q.numel() for q in head.parameters()) * 4 / GIB
        part = features.FeatureSet(train_set.maps[:args.images], train_set.labels[:args.images], "synthetic", 224,
                                   "train")
        t = time.perf_counter()
        train.fit(head, part, epochs=1, batch_size=config.batch_size, lr=config.lr, device="cpu")
        fit_s = time.perf_counter() - t
        test_part = features.FeatureSet(test_set.maps[:args.images], test_set.labels[:args.images], "synthetic", 224,
                                        "test")
        train.evaluate(head, test_part, device="cpu")
        peak = peak_gib()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"cached maps, 70,000 images x 512 x 7 x 7 as {train_set.maps.dtype}: {cached:.2f} GiB "
              f"(float32 would be {2 * cached:.2f} GiB)")
        print(f"head: {params:.2f} GiB of float32 parameters; gradients the same, Adam's two moments twice that")
        print(f"peak resident memory: {base:.2f} GiB before loading, {after_load:.2f} GiB after reading the caches, "
              f"{peak:.2f} GiB after training ({args.images:,} images, batch {config.batch_size}, {fit_s:.0f} s) "
              "and evaluating")
        print(f"-> {peak:.1f} GiB of a 24 GiB machine ({peak / 24:.0%}); "
              f"{'fits' if peak < 24 else 'DOES NOT FIT'}")
    return 0


if __name__ == "__main__":
    from labkit import progress

    with progress.reporting(bars=False):  # no bar drawn inside the timed code
        raise SystemExit(main())
