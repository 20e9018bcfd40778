"""Geometric and all-layer prune schedules, the stop at the knee, the smallest head within tolerance."""
import dataclasses
import os
import subprocess
import sys

import pytest

from labkit import compress, config, model, runs, study, train


def test_prune_plan_by_hand(small_config):
    geo = dataclasses.replace(small_config, schedule="geometric", fraction=0.5, layer="all")
    assert config.prune_plan(geo, [25088, 64, 48, 16, 10]) == [(0, 32), (1, 24), (2, 8)]
    assert config.prune_plan(geo, [25088, 3, 1, 2, 10]) == [(0, 2), (2, 1)]  # round(1.5) = 2; width 1 stays
    assert config.prune_plan(geo, [25088, 1, 1, 1, 10]) == []
    one = dataclasses.replace(geo, layer=1, fraction=0.25)
    assert config.prune_plan(one, [25088, 64, 48, 16, 10]) == [(1, 12)]
    fixed_all = dataclasses.replace(small_config, layer="all", k=8)  # k for layer 0, the rest in proportion
    assert config.prune_plan(fixed_all, [25088, 64, 48, 16, 10]) == [(0, 8), (1, 6), (2, 2)]
    assert config.prune_plan(small_config, [25088, 64, 48, 16, 10]) == [(0, 8)]


def test_smallest_within_tolerance_by_hand():
    rows = [{"cycle": 0, "val_accuracy": 0.900, "parameters": 100},
            {"cycle": 1, "val_accuracy": 0.905, "parameters": 50},
            {"cycle": 2, "val_accuracy": 0.8905, "parameters": 25},
            {"cycle": 3, "val_accuracy": 0.870, "parameters": 12}]
    # the control at the same cycle, not cycle 0, is the baseline: here it improves with training
    control = [{"cycle": c, "val_accuracy": v} for c, v in enumerate([0.900, 0.905, 0.900, 0.915])]
    assert study.smallest_within(rows, control, 1.0)["cycle"] == 2  # 0.8905 >= 0.900 - 0.01
    assert study.smallest_within(rows, control, 0.5)["cycle"] == 1
    assert study.smallest_within(rows, control, 5.0)["cycle"] == 3  # 0.870 >= 0.915 - 0.05
    assert study.smallest_within(rows, control, 4.0)["cycle"] == 2  # 0.870 < 0.915 - 0.04
    assert study.stop_cycle(rows, control, 1.0) == 3 and study.stop_cycle(rows, control, 5.0) is None
    with pytest.raises(ValueError, match="no rows"):
        study.smallest_within([], control, 1.0)


def test_geometric_run_stops_at_the_knee_and_keeps_the_smallest_head(small_config):
    # a tolerance of 0 points cannot be met for long: the run must stop, not run all 12 cycles
    c = dataclasses.replace(small_config, schedule="geometric", layer="all", fraction=0.5, cycles=12,
                            tolerance=0.0, checkpoints="none")
    rows, control = study.knee_search(c, progress=False, log=None)
    stop = study.stop_cycle(rows, control, 0.0)
    assert stop is not None and stop == rows[-1]["cycle"]  # stopped at the knee, long before one neuron a layer
    # halving by hand (the removed count rounded half to even, never the last neuron): 3 -> 1, 1 stays
    halved = [(64, 48, 16), (32, 24, 8), (16, 12, 4), (8, 6, 2), (4, 3, 1), (2, 1, 1), (1, 1, 1)]
    assert c.hidden == halved[0]
    assert [r["widths"].hidden for r in rows] == halved[:len(rows)]
    best = study.smallest_within(rows, control, 0.0)
    head, _ = model.load_head(c.run_dir / runs.SMALLEST)
    assert tuple(head.widths()) == best["widths"]
    splits = study.prepare_features(c, progress=False)
    assert train.evaluate(head, splits.val, device="cpu")["correct"] == best["val_correct"]
    assert not list((c.run_dir / "checkpoints").glob("*.pt"))  # checkpoints="none" still keeps the result
    again, _ = study.knee_search(c, progress=False, log=None)  # finished: read back, nothing retrained
    assert [r["test_correct"] for r in again] == [r["test_correct"] for r in rows]


def test_compress_smallest_writes_loads_and_evaluates(small_config):
    c = dataclasses.replace(small_config, schedule="geometric", layer="all", cycles=3, tolerance=100.0)
    result = study.compress_smallest(c, bits=(8, 4), progress=False, log=None)
    rows, best, table = result["rows"], result["smallest"], result["table"]
    assert best is rows[-1]  # a tolerance of 100 points keeps every head: the last is the smallest
    assert [r["storage"] for r in table] == ["float32", "int8, scale per channel", "4-bit k-means codebook"]
    reference = result["control"][best["cycle"]]
    test_set = study.prepare_features(c, progress=False).test
    for r in table:  # sizes and accuracies measured again here, from the files themselves
        assert r["ratio"] == pytest.approx(rows[0]["model_bytes"] / os.path.getsize(r["path"]))
        stored = model.load_head(r["path"])[0] if r["storage"] == "float32" else compress.load_compressed(r["path"])
        accuracy = train.evaluate(stored, test_set, device="cpu")["accuracy"]
        assert r["drop_points"] == pytest.approx(100 * (reference["test_accuracy"] - accuracy))
        assert tuple(stored.widths()) == best["widths"]
    with pytest.raises(ValueError, match="schedule='fixed'"):
        study.compress_smallest(small_config, progress=False, log=None)


@pytest.mark.parametrize("overrides,message", [
    (dict(schedule="halving"), "schedule='halving' is not allowed"),
    (dict(schedule="geometric", fraction=1.0), "fraction=1.0 must be a number strictly between 0 and 1"),
    (dict(tolerance=-1), "tolerance=-1"),
    (dict(layer="first"), "layer='first' is out of range"),
    (dict(layer="all", k=30, cycles=3), "hidden layer 2 has only 16"),
])
def test_bad_schedule_is_named(small_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(small_config, **overrides)


def test_cli_compress_prints_the_table(small_config, tmp_path):
    out = subprocess.run([sys.executable, "-m", "labkit", "compress", "--profile", "ci", "--head", "64", "48", "16",
                          "--train-limit", "300", "--val-limit", "200", "--test-limit", "200", "--batch-size", "32", "--lr", "1e-3",
                          "--cycles", "3", "--bits", "8", "2", "--results", str(tmp_path), "--no-progress"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "int8, scale per channel" in out.stdout and "2-bit k-means codebook" in out.stdout
    assert "layerall-geo0.5-tol1" in out.stdout and "peak memory" in out.stdout
    assert "control_val_accuracy" in out.stdout and "unpruned head trained as long" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "labkit", "compress", "--layer", "top"], capture_output=True, text=True)
    assert bad.returncode == 2 and "layer 'top' must be a hidden layer's number" in bad.stderr


def test_knee_over_seeds_runs_in_lockstep_and_keeps_each_seeds_head(small_config):
    """Two seeds searched together: one decision a cycle (the mean over seeds), the same widths for both, each
    seed's smallest head kept in its own folder, one scratch row per seed."""
    c = dataclasses.replace(small_config, schedule="geometric", layer="all", fraction=0.5, cycles=4, tolerance=2.0,
                            checkpoints="none")
    other = dataclasses.replace(c, seed=1)
    result = study.compress_smallest(c, bits=(8,), progress=False, log=None, seeds=[other])
    rows, control = result["rows"], result["control"]
    by_seed = {s: [r for r in rows if r["seed"] == s] for s in (0, 1)}
    assert [r["widths"] for r in by_seed[0]] == [r["widths"] for r in by_seed[1]]
    assert {(r["seed"], r["cycle"]) for r in control} == {(r["seed"], r["cycle"]) for r in rows}
    best = result["smallest"]
    for s, cfg in ((0, c), (1, other)):
        head, _ = model.load_head(cfg.run_dir / runs.SMALLEST)
        assert tuple(head.widths()) == best["widths"]
    assert set(result["agree"]) == {0, 1}
    assert sorted(r["seed"] for r in result["scratch"]) == ([0, 1] if best["cycle"] > 0 else [])


def test_a_kill_between_keeping_the_head_and_its_row_resumes(small_config, monkeypatch):
    """The knee keeps its smallest head before it records that cycle's row: killed in between (here after the
    head of cycle 1 is kept), the same call resumes and ends as a straight run does."""
    c = dataclasses.replace(small_config, schedule="geometric", layer="all", fraction=0.5, cycles=3,
                            tolerance=100.0, checkpoints="last")
    straight = study.compress_smallest(dataclasses.replace(c, name="straight"), bits=(8,), progress=False, log=None,
                                       scratch=False)
    real = runs.RunFolder.keep_smallest

    def keep_then_die(self, head, row):
        real(self, head, row)
        if row["cycle"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs.RunFolder, "keep_smallest", keep_then_die)
    killed = dataclasses.replace(c, name="killed")
    with pytest.raises(KeyboardInterrupt):
        study.compress_smallest(killed, bits=(8,), progress=False, log=None, scratch=False)
    assert [r["cycle"] for r in runs.read_history(killed.run_dir / "history.csv")] == [0]  # the kept head is ahead
    monkeypatch.setattr(runs.RunFolder, "keep_smallest", real)
    resumed = study.compress_smallest(killed, bits=(8,), progress=False, log=None, scratch=False)
    assert [r["test_correct"] for r in resumed["rows"]] == [r["test_correct"] for r in straight["rows"]]
    assert resumed["smallest"]["widths"] == straight["smallest"]["widths"]
    assert [r["bytes"] for r in resumed["table"]] == [r["bytes"] for r in straight["table"]]


def test_a_smallest_head_of_another_run_is_refused(small_config, tmp_path):
    """smallest_within_tolerance.pt records the run that wrote it: one copied in from a run with other settings
    never reaches the compression table."""
    import shutil

    c = dataclasses.replace(small_config, schedule="geometric", layer="all", cycles=2, tolerance=100.0,
                            checkpoints="none")
    other = dataclasses.replace(c, lr=2e-3)
    study.knee_search(c, progress=False, log=None)
    study.knee_search(other, progress=False, log=None)
    shutil.copyfile(other.run_dir / runs.SMALLEST, c.run_dir / runs.SMALLEST)
    with pytest.raises(Exception, match="lr=0.002.*not this run's smallest head"):
        study.compress_smallest(c, bits=(8,), progress=False, log=None, scratch=False)
    assert not (c.run_dir / "compressed").exists()
