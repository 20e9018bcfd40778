"""The benchmark scripts run (their figures are measured by running them, not asserted here)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_paper_gpu_script_smoke(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paper_gpu.py"), "--smoke", "--device", "cpu",
                          "--results", str(tmp_path / "r"), "--json", str(tmp_path / "t.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    timings = json.loads((tmp_path / "t.json").read_text())
    assert set(timings["per_method_s"]) == {"l1", "l2", "reservoir", "magnitude"}
    assert timings["total_s"] > 0 and timings["head_train_tflops"] > 0
    assert "whole profile" in out.stdout


def test_paper_gpu_script_refuses_without_gpu():
    import torch

    if torch.cuda.is_available():
        return
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paper_gpu.py"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no CUDA GPU here" in out.stderr
