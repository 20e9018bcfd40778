"""torchrun: 2 CPU processes (gloo, DistributedDataParallel) against one process; decisions from rank 0."""
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from labkit import device, distributed, runs

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this torch build has no gloo backend")

COMMON = ["study", "--profile", "ci", "--hidden", "64", "48", "16", "--dropout", "0", "--cycles", "3", "--epochs", "2",
          "--k", "8", "--batch-size", "50", "--train-limit", "230", "--val-limit", "100", "--test-limit", "200",
          "--device", "cpu", "--no-progress", "--checkpoints", "off"]


def _run(cmd, cwd):
    # torchrun keeps its own temporary folder: under TMPDIR, here the test's own folder
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TMPDIR": str(cwd)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_two_ranks_match_one_process(tmp_path):
    # 230 images in batches of 50: the last batch (30) is split 15 / 15, and each epoch has 5 steps
    _run([sys.executable, "-m", "labkit", *COMMON, "--results", str(tmp_path), "--name", "one"], tmp_path)
    text = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                 "-m", "labkit", *COMMON, "--results", str(tmp_path), "--name", "two"], tmp_path)
    assert "2 processes (torchrun)" in text
    assert text.count("labkit study: run") == 1  # only rank 0 speaks
    one = runs.read_history(tmp_path / "one" / "history.csv")
    two = runs.read_history(tmp_path / "two" / "history.csv")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert a["widths"] == b["widths"]
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4 * abs(a["train_loss"]), (a, b)
        assert abs(a["test_correct"] - b["test_correct"]) <= 1
    assert one[0]["train_loss"] != one[-1]["train_loss"]  # it did train
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [".lock", "checkpoints", "config.json",
                                                                   "history.csv"]


def test_each_rank_takes_its_own_gpu(monkeypatch):
    assert distributed.device_for_rank("cuda:0", 1) == "cuda:1"
    assert distributed.device_for_rank("cuda", 3) == "cuda:3"
    assert distributed.device_for_rank("cpu", 1) == "cpu"
    assert distributed.device_for_rank("cuda:0", None) == "cuda:0"  # outside torchrun: as asked
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device.pick_device("cuda:0") == torch.device("cuda:1")
    assert device.pick_device("auto") == torch.device("cuda:1")


def _rank_main(folder, results, start):
    """One rank (torchrun) of a 2-process knee search in which rank 1 would decide differently if it decided alone."""
    import datetime

    os.environ["LABKIT_OFFLINE"] = "1"
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # ranks that disagree fail, not hang
    rank = dist.get_rank()
    from labkit import backbone, features, knee, study

    if rank == 1:  # left alone, rank 1 would find every probe out of tolerance and take ImageNet weights
        knee.within_tolerance = lambda baseline, accuracy, tolerance: False  # read by knee.step_within; Search.decide takes rank 0's
        real = backbone.resolve_weights
        backbone.resolve_weights = features.resolve_weights = (
            lambda weights="auto", seed=0: "imagenet" if weights == "auto" else real(weights, seed))
    import notebook_cells  # this script's folder, tests/, is on sys.path

    ns = notebook_cells.knee(_knee_config(results), start, compress=False, tolerance=100.0, fraction=0.9)
    rows = ns["result"]["rows"]
    tag = study.prepare_features(ns["configs"][0], progress=False).train.weights
    with open(os.path.join(folder, f"rank{rank}.txt"), "w") as fh:
        fh.write(f"{len(rows)} {tag}")
    dist.barrier()  # both ranks are done communicating before either leaves
    dist.destroy_process_group()


def _knee_config(results):
    from labkit import config

    return config.make_config("ci", hidden=(64, 48, 16), k=8, epochs=1, batch_size=32, train_limit=300,
                              val_limit=200, test_limit=200, lr=1e-3, dropout=0.0, device="cpu", layer="all",
                              fraction=0.9, tolerance=100.0, checkpoints="off", results_dir=results)


def test_rank_zero_takes_the_decisions(tmp_path):
    """Notebook 03's knee cells, run by two ranks."""
    import notebook_cells

    start = tmp_path / "session"  # seed 0's trained start, made in one process, read back by both ranks
    notebook_cells.namespace(_knee_config(str(tmp_path / "results")), start)["start_of"](0)
    # run by torchrun as a real job is (its agent, not rank 0, holds the rendezvous store); this file is the script
    try:
        _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
              str(tmp_path), str(tmp_path / "results"), str(start)], tmp_path)
    except subprocess.TimeoutExpired:
        raise AssertionError("the two ranks did not finish together: they disagreed") from None
    zero, one = (tmp_path / "rank0.txt").read_text(), (tmp_path / "rank1.txt").read_text()
    # tolerance 100: rank 0 keeps every probe, scale 0.1 then 0.01 (one neuron a layer): the start and 2 probes
    assert zero == one == "3 random-seed0"


if __name__ == "__main__":  # one rank of test_rank_zero_takes_the_decisions, under torchrun
    _rank_main(*sys.argv[1:4])
