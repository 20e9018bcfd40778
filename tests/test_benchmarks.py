"""The benchmark scripts run and print figures that agree with each other (the figures are measured by
running them, not asserted here)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "paper_gpu.py"


def test_paper_gpu_smoke_runs_the_224px_path_and_its_figures_add_up(tmp_path):
    results = tmp_path / "r"
    out = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--results", str(results),
                          "--json", str(tmp_path / "t.json")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["config"]["image_size"] == 224
    assert t["cache_dtype"] == "torch.float16" and t["map_shape"] == [512, 7, 7]  # the GPU run's cache
    assert set(t["per_method"]) == {"l1", "l2", "reservoir", "magnitude", "none", "scratch"}
    from labkit.config import parse_widths

    # the times nest: each method's cycles (timed by the study itself, history's `seconds`) within its total,
    # training and evaluation within the study, the study within the whole
    c = t["config"]
    for method, m in t["per_method"].items():
        cycles = sum(r["seconds"] for r in t["rows"] if r["method"] == method)
        assert 0 < m["train_s"] + m["evaluate_s"] <= m["total_s"] and cycles <= m["total_s"], method
    assert t["train_s"] + t["evaluate_s"] <= t["study_s"] <= t["total_s"]
    # the FLOPs, counted by hand from the rows: per image and epoch, each layer's multiply-adds x 2 forward, x 2
    # for its weight gradients and x 2 for its input gradients (not the first layer's: its inputs are features);
    # 7 x 7 maps are not folded, so the first layer reads 25,088 inputs
    def per_image(widths):
        macs = [a * b for a, b in zip(widths[:-1], widths[1:])]
        return 6 * sum(macs) - 2 * macs[0]

    flops = 0
    for r in t["rows"]:
        if r["method"] == "scratch":  # exactly its epochs, no early stopping
            epochs = r["epochs_total"]
        elif r["cycle"] == 0:  # early stopping: the kept epochs and `patience` more, at most start_epochs
            epochs = min(r["epochs_total"] + c["patience"], c["start_epochs"])
        else:
            epochs = c["epochs"]
        flops += epochs * c["train_limit"] * per_image(parse_widths(r["widths"]))  # the JSON writes "25088-64-..."
    assert t["train_flops"] == flops
    assert "TFLOP/s" in out.stdout and "whole profile" in out.stdout
    assert "labkit 0.1.0 from" in out.stdout
    again = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--results", str(results)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "is not empty" in again.stderr  # never reports a study it did not run


def test_paper_gpu_script_refuses_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the refusal is for machines without one")
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "no CUDA GPU here" in out.stderr


def test_install_runs_the_bundle_it_was_given(tmp_path):
    wheels = tmp_path / "whl"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True)
    (wheels / "BUNDLE.json").write_text('{"commit": "abc1234", "dirty": false, "version": "0.1.0"}')
    out = subprocess.run([sys.executable, str(SCRIPT), "--install", str(wheels), "--device", "cpu"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    # it first says which labkit it runs: the one just installed into a fresh folder, not the working tree
    assert "commit abc1234" in out.stdout and "labkit-site-" in out.stdout, out.stdout + out.stderr


def test_cycle_cost_runs_at_ci_size_and_its_ratios_are_its_columns(tmp_path):
    import os
    import re

    script = ROOT / "benchmarks" / "cycle_cost.py"
    out = subprocess.run([sys.executable, str(script), "--profile", "ci", "--cycles", "2"],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "LABKIT_RESULTS": str(tmp_path / "r")})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if re.match(r"\s+(l2|none)\s+\d", line)]
    assert [r[0] for r in rows] == ["l2", "none", "l2", "none"]  # the arms take turns
    for r in rows:
        rate, prune, train, measure, total, ideal, ratio = map(float, r[3:])
        assert rate > 0 and total == pytest.approx(prune + train + measure, abs=0.02)
        assert ratio == pytest.approx(total / ideal, rel=0.03)  # FLOPs s is printed to 0.01 s
    assert re.search(r"l2: median cycle [\d.]+x its arithmetic", out.stdout)
    assert int(rows[2][2].split("-")[1]) < int(rows[0][2].split("-")[1])  # the l2 arm pruned neurons
