"""The study's cycle: rows measured, files written atomically, resume after a kill, clear errors."""
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit import backbone, capacity, config, features, model, runs, study, train


def _snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes (the lock aside): to show an error changed nothing on disk."""
    return ({p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name not in (".lock", ".lock-holder")}
            if folder.exists() else {})


def test_rows_are_what_was_measured(small_config):
    c = dataclasses.replace(small_config, checkpoints="all")
    rows = study.run_study(c, progress=False, log=None)
    assert [r["cycle"] for r in rows] == [0, 1, 2]
    assert [str(r["widths"]) for r in rows] == ["25088-64-48-16-10", "25088-56-48-16-10", "25088-48-48-16-10"]
    # by hand, the four rules: (25,088 + 1) x 48 for the first layer, then each layer its inputs: 48, 48, 16
    assert rows[2]["mec_bits"] == 25089 * 48 + 48 + 48 + 16 == 1_204_384
    assert rows[0]["parameters"] > rows[1]["parameters"] > rows[2]["parameters"]
    assert rows[0]["model_bytes"] > rows[1]["model_bytes"] > rows[2]["model_bytes"]
    assert (c.run_dir / "config.json").exists()
    assert _same(runs.read_history(c.run_dir / "history.csv"), rows)
    # the numbers in the table come from the checkpointed model
    splits = study.prepare_features(c, progress=False)
    for r in rows:
        head, extra = model.load_head(c.run_dir / "checkpoints" / f"cycle_{r['cycle']:03d}.pt")
        assert extra["cycle"] == r["cycle"] and extra["rows"][-1]["test_correct"] == r["test_correct"]
        assert train.evaluate(head, splits.val)["correct"] == r["val_correct"]
        correct = train.evaluate(head, splits.test)["correct"]  # measured again, from the saved head
        assert correct == r["test_correct"]
        assert capacity.mec_of(head) == r["mec_bits"]
        assert r["rho"] == pytest.approx(correct / capacity.mec_of(head))
        assert model.save_head(head, c.run_dir.parent / "alone.pt") == r["model_bytes"]  # the head's own file


def test_finished_run_without_checkpoints_reads_back(small_config):
    c = dataclasses.replace(small_config, checkpoints="off", cycles=2)
    rows = study.run_study(c, progress=False, log=None)
    assert not list((c.run_dir / "checkpoints").iterdir())
    messages = []
    assert _same(study.run_study(c, progress=False, log=messages.append), rows)
    assert "already finished" in messages[0]
    messages = []
    longer = study.run_study(dataclasses.replace(c, cycles=3), progress=False, log=messages.append)
    assert any("keeps no checkpoints" in m for m in messages)  # computed again from cycle 0, then on
    assert _same(longer[:2], rows) and len(longer) == 3


def test_fit_is_deterministic_on_cpu(small_config):
    splits = study.prepare_features(small_config, progress=False)
    losses = []
    for _ in range(2):
        head = study.new_head(small_config, splits.train)
        losses.append([e["loss"] for e in train.fit(head, splits.train, 2, 32, 1e-3, seed=7, device="cpu")])
    assert losses[0] == losses[1]


def _same(rows_a, rows_b):
    keys = ("cycle", "widths", "mec_bits", "test_correct", "train_loss", "model_bytes")
    return [[r[k] for k in keys] for r in rows_a] == [[r[k] for k in keys] for r in rows_b]


def test_interrupted_run_resumes_with_same_rows(small_config, monkeypatch):
    reference = study.run_study(dataclasses.replace(small_config, name="straight"), progress=False, log=None)
    c = dataclasses.replace(small_config, name="interrupted")
    real_fit, calls = train.fit, []

    def fit_then_die(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        if kwargs.get("desc") == "cycle 2":  # in the middle of cycle 2 (cycle 0 trains in two fits: lr, then fine)
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit", fit_then_die)
    with pytest.raises(KeyboardInterrupt):
        study.run_study(c, progress=False, log=None)
    kept = runs.read_history(c.run_dir / "history.csv")
    assert [r["cycle"] for r in kept] == [0, 1]  # only the cycle in progress is lost
    monkeypatch.setattr(train, "fit", real_fit)
    messages = []
    resumed = study.run_study(c, progress=False, log=messages.append)
    assert any("resuming after cycle 1" in m for m in messages)
    assert _same(resumed, reference)


def test_killed_process_resumes(small_config, tmp_path):
    """A real SIGKILL during a cycle: the rerun keeps the finished rows and ends like a straight run."""
    script = tmp_path / "run.py"
    script.write_text(
        "import dataclasses, sys\nfrom labkit import config, study\n"
        f"c = config.make_config('ci', hidden={tuple(small_config.hidden)}, k=8, cycles=4, epochs=3, batch_size=16, "
        f"train_limit=300, test_limit=200, lr=1e-3, results_dir={small_config.results_dir!r}, name=sys.argv[1])\n"
        "if sys.argv[2:] == ['hold']:  # cycle 2 trained, not yet recorded: say so and wait to be killed\n"
        "    fit = study.train.fit\n"
        "    def held(*a, **kw):\n"
        "        out = fit(*a, **kw)\n"
        "        if kw.get('desc') == 'cycle 2':\n"
        "            print('in cycle 2', flush=True)\n"
        "            sys.stdin.readline()\n"
        "        return out\n"
        "    study.train.fit = held\n"
        "study.run_study(c, progress=False)\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, str(script), "straight"], check=True, env=env, capture_output=True)
    run_dir = Path(small_config.results_dir) / "killed"
    proc = subprocess.Popen([sys.executable, str(script), "killed", "hold"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    said = []
    for line in proc.stdout:  # the event: mid-cycle, two cycles recorded
        said.append(line.strip())
        if said[-1] == "in cycle 2":
            break
    assert said and said[-1] == "in cycle 2", said
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    history = run_dir / "history.csv"
    finished = runs.read_history(history)
    assert [r["cycle"] for r in finished] == [0, 1]
    subprocess.run([sys.executable, str(script), "killed"], check=True, env=env, capture_output=True)
    straight = runs.read_history(Path(small_config.results_dir) / "straight" / "history.csv")
    resumed = runs.read_history(history)
    assert _same(resumed[:len(finished)], finished)
    assert _same(resumed, straight)


@pytest.mark.parametrize("overrides, message", [
    (dict(epochs=0), "epochs=0 must be a positive integer"),
    (dict(cycles=-1), "cycles=-1 must be a positive integer"),
    (dict(method="bogus"), "method='bogus' is not allowed.*'l1', 'l2', 'reservoir', 'magnitude'"),
    (dict(layer=3), "layer=3 is out of range.*0..2"),
    (dict(k=4096, cycles=2), "k=4096 .* only 4096"),
    (dict(image_size=28), "image_size=28"),
    (dict(weights="resnet"), "weights='resnet'"),
    (dict(colour="red"), "unknown config field"),
])
def test_bad_config_is_named_and_writes_nothing(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config.make_config("quick", results_dir=str(tmp_path / "r"), **overrides)
    assert not (tmp_path / "r").exists()


def test_unknown_profile():
    with pytest.raises(ValueError, match="profile='huge' is not allowed.*'ci', 'quick', 'paper'"):
        config.make_config("huge")


def test_changed_config_refuses_to_resume(small_config):
    study.run_study(dataclasses.replace(small_config, cycles=1), progress=False, log=None)
    before = _snapshot(small_config.run_dir)
    with pytest.raises(ValueError, match="lr=0.001, not 0.01"):
        study.run_study(dataclasses.replace(small_config, lr=1e-2, name=small_config.run_name),
                        progress=False, log=None)
    assert _snapshot(small_config.run_dir) == before


def test_corrupt_checkpoint_is_named_and_left_alone(small_config):
    c = dataclasses.replace(small_config, cycles=2)
    study.run_study(c, progress=False, log=None)
    ckpt = c.run_dir / "checkpoints" / "cycle_001.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated, as by a full disk
    before = _snapshot(c.run_dir)
    with pytest.raises(model.CheckpointError, match="cycle_001.pt"):
        study.run_study(dataclasses.replace(c, cycles=3), progress=False, log=None)
    assert _snapshot(c.run_dir) == before


def test_features_are_read_once_per_process(small_config):
    first = study.prepare_features(small_config, progress=False)
    again = study.prepare_features(dataclasses.replace(small_config, method="l1"), progress=False)
    assert again.train.maps is first.train.maps  # runs of a grid share one copy instead of reloading the cache
    assert again.train.stats() is first.train.stats()  # and the statistics are computed once


def test_one_backbone_fills_the_three_caches(tmp_path, monkeypatch, small_config):
    import shutil

    from labkit import data

    shutil.copytree(data.data_root() / "MNIST", tmp_path / "data" / "MNIST")
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "data"))  # empty feature cache: every split is extracted
    built = []
    monkeypatch.setattr(features, "build_backbone", lambda *a: built.append(a) or backbone.build_backbone(*a))
    monkeypatch.setattr(features, "_built", {})
    c = dataclasses.replace(small_config, weights="random")
    splits = study.prepare_features(c, progress=False)
    assert len(built) == 1 and len(list((tmp_path / "data" / "features").glob("*.pt"))) == 3
    # the one backbone gives what a fresh one gives, for the last split it filled
    images, _ = c.subsets.load("test")
    fresh = features.extract(backbone.build_backbone("random")[0], images, c.image_size)
    assert torch.equal(fresh, splits.test.maps)


def test_corrupt_cache_is_named_and_left_alone(small_config):
    tr = study.prepare_features(small_config, progress=False).train
    path = features.cache_path(tr.weights, 32, "train", small_config.subsets)
    good = path.read_bytes()
    try:
        path.write_bytes(b"not a tensor file")
        with pytest.raises(features.CacheError, match=path.name + ".*delete that file"):
            study.prepare_features(small_config, progress=False)
        assert path.read_bytes() == b"not a tensor file"
    finally:
        path.write_bytes(good)


def test_cli_prints_table_and_rejects_bad_values(tmp_path):
    base = [sys.executable, "-m", "labkit", "study", "--profile", "ci", "--results", str(tmp_path), "--no-progress"]
    bad = subprocess.run(base + ["--epochs", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "epochs=0 must be a positive integer" in bad.stderr
    bad = subprocess.run(base + ["--method", "l3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'l3'" in bad.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_quick_profile_unpruned_head_reaches_85_percent(tmp_path):
    """The quick profile's cycle 0, offline with whatever backbone weights are here (random-init in CI)."""
    c = config.make_config("quick", cycles=1, results_dir=str(tmp_path), checkpoints="off")
    rows = study.run_study(c, progress=False, log=None)
    print(f"quick profile cycle 0: {rows[0]['test_accuracy']:.4f} test accuracy on {rows[0]['test_total']} images")
    assert rows[0]["test_accuracy"] >= 0.85


def test_every_setting_says_what_it_counts_for():
    """Issue 20: one list (config.FIELD_ROLES) decides which settings count for what; a new field must join it."""
    from labkit import config

    fields = [f.name for f in dataclasses.fields(config.StudyConfig)]
    assert list(config.FIELD_ROLES) == fields
    roles = {"pruning", "resume", "place", "start file", "start"}
    assert all(set(r) <= roles for r in config.FIELD_ROLES.values())
    # what the roles mean, on settings whose part is not in doubt
    assert set(runs.IDENTITY_FREE) == {"cycles", "device", "checkpoints", "results_dir", "name", "start"}
    assert "tolerance" in config.PRUNING_FIELDS and "epochs" not in study.START_FIELDS and "lr" in study.START_FIELDS


def test_older_names_are_not_read(small_config):
    """Issue 28: a 0.1.0 package keeps no older spellings: weights "none" and the field "head" are refused by name."""
    from labkit import config

    with pytest.raises(ValueError, match="weights='none'"):
        config.make_config("ci", weights="none")
    with pytest.raises(ValueError, match="unknown config field.*head"):
        config.make_config("ci", head=(64, 48, 16))
    assert config.make_config("quick", weights="random").run_name == "quick-l2-layer0-k100-seed0-weights-random"
