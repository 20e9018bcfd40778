"""Prune schedules (fixed, geometric, oneshot), the knee search (labkit.knee), the smallest head within tolerance."""
import dataclasses
import os
import subprocess
import sys

import pytest

import notebook_cells
from labkit import compress, config, knee, model, runs, study, train


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
    one_step = dataclasses.replace(small_config, schedule="oneshot", layer="all", target=(20, 48, 3), cycles=2)
    assert config.prune_plan(one_step, [25088, 64, 48, 16, 10]) == [(0, 44), (2, 13)]  # layer 1 kept whole
    assert config.prune_plan(one_step, [25088, 20, 48, 3, 10]) == []


def test_smallest_within_tolerance_by_hand():
    rows = [{"cycle": 0, "val_accuracy": 0.900, "parameters": 100},
            {"cycle": 1, "val_accuracy": 0.905, "parameters": 50},
            {"cycle": 2, "val_accuracy": 0.8905, "parameters": 25},
            {"cycle": 3, "val_accuracy": 0.870, "parameters": 12}]
    # the control at the same cycle, not cycle 0, is the baseline: here it improves with training
    control = [{"cycle": c, "val_accuracy": v} for c, v in enumerate([0.900, 0.905, 0.900, 0.915])]
    assert knee.smallest_within(rows, control, 1.0)["cycle"] == 2  # 0.8905 >= 0.900 - 0.01
    assert knee.smallest_within(rows, control, 0.5)["cycle"] == 1
    assert knee.smallest_within(rows, control, 5.0)["cycle"] == 3  # 0.870 >= 0.915 - 0.05
    assert knee.smallest_within(rows, control, 4.0)["cycle"] == 2  # 0.870 < 0.915 - 0.04
    with pytest.raises(ValueError, match="no rows"):
        knee.smallest_within([], control, 1.0)


def test_smallest_against_a_scan_written_apart():
    """smallest_within against a plain scan over random rows of up to three seeds (issue 28): means
    over seeds summed by hand, the fewest parameters among the cycles within the tolerance (cycle 0 is the start
    the pruned runs and the control share)."""
    import random

    rng = random.Random(5)
    for trial in range(200):
        cycles, seeds, tolerance = rng.randint(1, 6), rng.randint(1, 3), rng.choice([0.0, 0.5, 1.0, 2.0])
        params = sorted((rng.randint(1, 10 ** 6) for _ in range(cycles)), reverse=True)
        rows = [{"cycle": c, "seed": s, "val_accuracy": rng.randint(800, 950) / 1000, "parameters": params[c]}
                for s in range(seeds) for c in range(cycles)]
        control = [{"cycle": c, "seed": s, "val_accuracy": rng.randint(850, 950) / 1000}
                   for s in range(seeds) for c in range(1, cycles)]
        control += [{**r, "parameters": None} for r in rows if r["cycle"] == 0]  # cycle 0: the start they share
        inside = []
        for c in range(cycles):
            pruned = sum(r["val_accuracy"] for r in rows if r["cycle"] == c) / seeds
            held = sum(r["val_accuracy"] for r in control if r["cycle"] == c) / seeds
            if c == 0 or 100 * (held - pruned) <= tolerance + 1e-9:
                inside.append(c)
        fewest = min(inside, key=lambda c: (params[c], -rows[c]["val_accuracy"]))
        assert knee.smallest_within(rows, control, tolerance)["cycle"] == fewest, trial


@pytest.mark.parametrize("overrides,message", [
    (dict(schedule="halving"), "schedule='halving' is not allowed"),
    (dict(schedule="geometric", fraction=1.0), "fraction=1.0 must be a number strictly between 0 and 1"),
    (dict(tolerance=-1), "tolerance=-1"),
    (dict(layer="first"), "layer='first' is out of range"),
    (dict(layer="all", k=30, cycles=3), "hidden layer 2 has only 16"),
    (dict(schedule="oneshot", layer="all", cycles=2), "give 3 widths"),
    (dict(schedule="oneshot", layer="all", target=(64, 48, 16), cycles=2), "equals the head's widths"),
    (dict(schedule="oneshot", layer=0, target=(32, 24, 16), cycles=2), "which layer=0 does not prune"),
    (dict(schedule="oneshot", layer="all", target=(32, 24, 8), cycles=3), "a oneshot run has two cycles"),
    (dict(recover_patience=0), "recover_patience=0"),
])
def test_bad_schedule_is_named(small_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(small_config, **overrides)




def test_probe_widths_by_hand():
    assert knee.probe_widths((64, 48, 16), "all", 0.5) == (32, 24, 8)
    assert knee.probe_widths((64, 48, 16), "all", 0.3) == (19, 14, 5)  # 19.2, 14.4, 4.8 rounded
    assert knee.probe_widths((64, 48, 16), 1, 0.25) == (64, 12, 16)  # the other layers whole
    assert knee.probe_widths((64, 48, 16), "all", 0.01) == (1, 1, 1)  # one neuron at least


def _walk(threshold, hidden=(4096, 4096, 256), fraction=0.5):
    """Notebook 03's search loop run against an oracle: a probe is within tolerance when its scale is at least
    `threshold` (known in advance, as no trained head is). Returns (steps, smallest scale within, largest
    outside)."""
    return notebook_cells.walk(threshold, hidden, fraction)


@pytest.mark.parametrize("threshold", [0.9, 0.3, 0.11, 0.013])
def test_the_search_brackets_a_known_knee_to_fifteen_percent(threshold):
    steps, lo, hi = _walk(threshold)
    assert hi is not None and hi < threshold <= lo  # the threshold lies between the two last probes
    assert lo / hi <= 1.15 and len(steps) <= 12  # known to within 15%, in few probes
    phases = [p for _, p, _, _ in steps]
    first_out = next(i for i, (_, _, s, _) in enumerate(steps) if s < threshold)
    assert set(phases[:first_out + 1]) == {"halving"} and set(phases[first_out + 1:]) <= {"refine"}
    assert len(phases) > first_out + 1  # it refined past the first probe out of tolerance
    # halving by hand before the first probe out: 1/2, 1/4, 1/8, ...
    assert [s for _, _, s, _ in steps[:first_out + 1]] == [0.5 ** (k + 1) for k in range(first_out + 1)]


def test_the_search_stops_at_one_neuron_or_whole_widths():
    steps, lo, hi = _walk(0.0, hidden=(64, 48, 16))  # every probe within: halving to one neuron a layer
    assert hi is None and steps[-1][3] == (1, 1, 1)
    assert [t for _, _, _, t in steps] == [(32, 24, 8), (16, 12, 4), (8, 6, 2), (4, 3, 1), (2, 2, 1), (1, 1, 1)]
    steps, lo, hi = _walk(0.97, hidden=(8, 6, 2))  # widths this small cannot tell scales 15% apart
    assert len({t for _, _, _, t in steps}) == len(steps)  # no widths probed twice


@pytest.fixture
def setup(small_config, tmp_path):
    """The small config in layer "all" and a results folder: notebook 03's knee cells train seed 0's and seed 1's
    starts there (its start_of) and search from them."""
    return dataclasses.replace(small_config, layer="all"), tmp_path / "results03"


def _knee(setup, compress=True, **parameters):
    """Notebook 03's knee cells (notebook_cells.knee) on the small head: its namespace."""
    return notebook_cells.knee(*setup, compress=compress, **parameters)


def test_knee_probes_recover_and_their_controls_train_as_long(setup):
    """Tolerance 0 cannot hold for long: the search leaves tolerance, then refines; every probe trained until
    validation stopped rising (at most the recovery's epochs) and its control exactly as many epochs."""
    ns = _knee(setup, tolerance=0.0, seeds=2)
    c, result = ns["configs"][0], ns["result"]
    rows, table, most = result["rows"], result["knee"], config.KNEE_RECOVERY["ci"]["epochs"]
    for seed in (0, 1):
        mine = [r for r in table if r["seed"] == seed and r["method"] != "scratch"]
        steps = [r["cycle"] for r in mine]
        first_out = next(r["cycle"] for r in mine if not r["within_tolerance"])
        assert max(steps) > first_out  # rows past the first step out of tolerance: the refinement
        assert {r["step_phase"] for r in mine if r["cycle"] > first_out} == {"refine"}
        start = next(r for r in mine if r["cycle"] == 0)
        for r in mine:
            assert r["epochs_total"] == r["control_epochs_total"] == start["epochs_total"] + r["cycle_epochs"]
            if r["cycle"] > 0:  # early stopping: it stopped after `patience` epochs without a gain, or at the cap
                assert 0 <= r["cycle_epochs"] <= r["epochs_run"] <= most
                assert r["epochs_run"] == most or r["epochs_run"] - r["cycle_epochs"] == config.KNEE_RECOVERY["ci"][
                    "patience"]
    # the decision per step is the mean over seeds against the mean of the controls, counted by hand
    for step in {r["cycle"] for r in rows}:
        a = [r["val_accuracy"] for r in rows if r["cycle"] == step]
        b = [r["val_accuracy"] for r in result["control"] if r["cycle"] == step]
        decided = next(r["step_within_tolerance"] for r in table if r["cycle"] == step)
        assert decided == (sum(a) / len(a) >= sum(b) / len(b) - 1e-12)
    best = result["smallest"]
    assert [r["seed"] for r in table if r["smallest"]] == [0, 1]
    head, _ = model.load_head(knee.probe_config(c, best["widths"].hidden).run_dir / runs.SMALLEST) \
        if best["cycle"] else (None, None)
    if head is not None:
        assert tuple(head.widths()) == best["widths"]
        assert sorted(r["seed"] for r in result["scratch"]) == [0, 1]
        for s in result["scratch"]:  # trained from scratch as many epochs as that seed's probe, in all
            probe = next(r for r in rows if r["seed"] == s["seed"] and r["cycle"] == best["cycle"])
            assert s["epochs_total"] == probe["epochs_total"] and s["widths"] == best["widths"]


def test_compress_knee_writes_loads_and_evaluates(setup, monkeypatch):
    ns = _knee(setup, tolerance=100.0)
    c, result = ns["configs"][0], ns["result"]
    best, table = result["smallest"], result["table"]
    assert parse_hidden(best) == (1, 1, 1)  # a tolerance of 100 points keeps every probe: one neuron a layer
    assert [r["storage"] for r in table] == ["float32", "int8, scale per channel", "4-bit k-means codebook"]
    reference = next(r for r in result["control"] if r["cycle"] == best["cycle"])
    test_set = study.prepare_features(c, progress=False).test
    for r in table:  # sizes and accuracies measured again here, from the files themselves
        assert r["ratio"] == pytest.approx(result["rows"][0]["model_bytes"] / os.path.getsize(r["path"]))
        stored = model.load_head(r["path"])[0] if r["storage"] == "float32" else compress.load_compressed(r["path"])
        accuracy = train.evaluate(stored, test_set, device="cpu")["accuracy"]
        assert r["drop_points"] == pytest.approx(100 * (reference["test_accuracy"] - accuracy))
        assert tuple(stored.widths()) == best["widths"]
    trained, real_fit = [], train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: trained.append(a) or real_fit(*a, **k))
    again = _knee(setup, compress=False, tolerance=100.0)["result"]  # finished: every probe read back
    monkeypatch.undo()
    assert not trained and [r["test_correct"] for r in again["rows"]] == [r["test_correct"] for r in result["rows"]]
    other = {**result["rows"][0], "widths": result["rows"][0]["widths"]}  # the start's widths, not the knee's
    with pytest.raises(ValueError, match="one per seed, of the knee's widths"):  # notebook 03's rows, checked
        knee.compress_knee(c, bits=(8,), result=again, from_scratch=[other])
    with pytest.raises(ValueError, match="start=None"):
        knee.Search(dataclasses.replace(c, start=None))


def parse_hidden(row):
    return config.parse_widths(row["widths"]).hidden


def test_a_kill_between_keeping_the_head_and_its_row_resumes(setup, monkeypatch):
    """A probe within tolerance keeps its head before its row is recorded: killed in between, notebook 03's
    cells run again resume and end as a straight search does."""
    c, folder = setup
    straight = notebook_cells.knee(dataclasses.replace(c, results_dir=str(folder) + "-straight"),
                                   str(folder) + "-straight", tolerance=100.0, fraction=0.9)["result"]
    real = runs.RunFolder.keep_smallest
    calls = []

    def keep_then_die(self, head, row):
        real(self, head, row)
        calls.append(row)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs.RunFolder, "keep_smallest", keep_then_die)
    with pytest.raises(KeyboardInterrupt):
        _knee(setup, tolerance=100.0, fraction=0.9)
    monkeypatch.setattr(runs.RunFolder, "keep_smallest", real)
    resumed = _knee(setup, tolerance=100.0, fraction=0.9)["result"]
    assert [r["test_correct"] for r in resumed["rows"]] == [r["test_correct"] for r in straight["rows"]]
    assert resumed["smallest"]["widths"] == straight["smallest"]["widths"]
    # the files hold the same head (the float32 file also records its run's folder, which differs here)
    assert [r["bytes"] for r in resumed["table"][1:]] == [r["bytes"] for r in straight["table"][1:]]
    assert [r["test_correct"] for r in resumed["table"]] == [r["test_correct"] for r in straight["table"]]


def test_a_smallest_head_of_another_run_is_refused(setup):
    """smallest_within_tolerance.pt records the run that wrote it: one copied in from a run with other settings
    never reaches the compression table."""
    import shutil

    c, folder = setup
    first = _knee(setup, compress=False, tolerance=100.0, fraction=0.9)
    other = notebook_cells.knee(dataclasses.replace(c, lr=2e-3, results_dir=str(folder) + "-other"),
                                str(folder) + "-other", compress=False, tolerance=100.0, fraction=0.9)
    target = first["result"]["smallest"]["widths"].hidden
    mine, theirs = (knee.probe_config(ns["configs"][0], target).run_dir for ns in (first, other))
    shutil.copyfile(theirs / runs.SMALLEST, mine / runs.SMALLEST)
    with pytest.raises(Exception, match="lr=0.002.*not this run's smallest head"):
        notebook_cells.run("03_prune_compare", "# The knee's second control", first)
    assert not (mine / "compressed").exists()


def test_cli_compress_runs_notebooks_02_and_03_with_its_options(monkeypatch, capsys, tmp_path):
    """`python -m labkit compress` is notebook 03's knee and Deep Compression (one implementation): its options
    become 03's parameters, checked before anything runs."""
    from labkit import __main__ as cli, runner

    ran = []
    monkeypatch.setenv("LABKIT_RESULTS", str(tmp_path))
    monkeypatch.setattr(runner, "run_notebooks", lambda profile, names, parameters=None: ran.append(
        (profile, tuple(names), parameters)) or [tmp_path / "ci" / f"{n}.ipynb" for n in names])
    assert cli.main(["compress", "--profile", "ci", "--layer", "1", "--fraction", "0.9", "--bits", "2",
                     "--tolerance", "0.5", "--seeds", "2", "--dc-bits", "4"]) == 0
    assert ran == [("ci", ("02_train_vgg16",), None),  # 02 with its own defaults, then 03 with the options
                   ("ci", ("03_prune_compare",), {"knee_layer": "1", "fraction": 0.9, "share_bits": 2,
                                                  "tolerance": 0.5, "seeds": 2, "dc_bits": 4})]
    assert "knee.csv" in capsys.readouterr().out
    for bad, named in ((["--fraction", "1.5"], "fraction"), (["--layer", "3"], "knee_layer")):
        with pytest.raises(SystemExit):
            cli.main(["compress", *bad])
        assert named in capsys.readouterr().err and len(ran) == 2  # refused before notebook 02 runs
    bad = subprocess.run([sys.executable, "-m", "labkit", "compress", "--layer", "top"], capture_output=True, text=True)
    assert bad.returncode == 2 and "layer 'top' must be a hidden layer's number" in bad.stderr
