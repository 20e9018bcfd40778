"""The path every online user takes: ImageNet weights found where torchvision looks, offline."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit import backbone, data, features, model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub folder holding an ImageNet-shaped VGG16 file (its features' weights, drawn at random)."""
    home = tmp_path / "torch-home"
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    with torch.random.fork_rng():
        torch.manual_seed(123)
        convs = backbone._vgg16_features()
    torch.save({f"features.{k}": v for k, v in convs.state_dict().items()}, folder / backbone.IMAGENET_FILE)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(backbone, "_announced", set())
    return {"home": home, "state": convs.state_dict()}


def test_weights_in_the_hub_cache_are_used_and_said_once(hub, tmp_path, capsys):
    assert backbone.resolve_weights("auto") == "imagenet"
    assert backbone.resolve_weights("auto") == "imagenet"
    said = capsys.readouterr().out
    assert said.count("ImageNet weights") == 1 and backbone.IMAGENET_FILE in said
    convs, tag = backbone.build_backbone("auto")
    assert tag == "imagenet"
    assert torch.equal(convs[0].weight, hub["state"]["0.weight"])
    root = tmp_path / "data"
    shutil.copytree(data.data_root() / "MNIST", root / "MNIST")
    fs = features.load_features("test", data.Subsets(test=20), weights="auto", root=root)
    assert fs.weights == "imagenet" and list((root / "features").glob("mnist-vgg16-imagenet-32px-test-*.pt"))


def test_notebook_02_runs_on_imagenet_weights(hub, tmp_path):
    env = {**os.environ, "TORCH_HOME": str(hub["home"]), "LABKIT_RESULTS": str(tmp_path / "results"),
           "LABKIT_PROFILE": "ci", "LABKIT_DATA": str(tmp_path / "data"), "LABKIT_PROGRESS": "0"}
    shutil.copytree(data.data_root() / "MNIST", tmp_path / "data" / "MNIST")
    out = tmp_path / "02.ipynb"
    run = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "02_train_vgg16.ipynb"),
                          str(out), "--cwd", str(tmp_path)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    text = json.dumps(json.loads(out.read_text()))
    assert "uses ImageNet weights" in text and "RANDOMLY INITIALIZED" not in text
    assert "weights imagenet" in text and "backbone weights: imagenet" in text
    assert list((tmp_path / "data" / "features").glob("mnist-vgg16-imagenet-*"))
    extra = model.read_extra(tmp_path / "results" / "ci" / "trained_head_seed0.pt")
    assert extra["backbone"] == "imagenet"


def test_asking_for_imagenet_without_the_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    monkeypatch.setattr(backbone, "_announced", set())
    with pytest.raises(RuntimeError, match=f"Put {backbone.IMAGENET_FILE} in .*empty-home"):
        backbone.build_backbone("imagenet")
    assert backbone.resolve_weights("auto").startswith("random")
