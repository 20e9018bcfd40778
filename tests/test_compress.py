"""Quantization and weight sharing: exact round trips, error bounds, clusters found by hand, real bytes."""
import os

import pytest
import torch

from labkit import compress, features, model, train
from labkit.model import CheckpointError


def test_per_channel_quantization_error_is_half_a_step():
    w = torch.randn(16, 300) * torch.logspace(-3, 1, 16)[:, None]  # rows of very different size
    q, scale = compress.quantize_per_channel(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and scale.shape == (16,)
    err = (compress.dequantize_per_channel(q, scale) - w).abs()
    assert torch.all(err <= scale[:, None] / 2 + 1e-7)
    assert torch.equal(q.abs().amax(1), torch.full((16,), 127, dtype=torch.int8))  # every row uses its range


def test_kmeans_finds_made_up_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([-1.0, -0.2, 0.3, 2.0])
    w = (centres[torch.randint(0, 4, (4000,))] + 0.01 * torch.randn(4000)).view(40, 100)
    codebook, index = compress.kmeans_codebook(w, bits=2)
    torch.testing.assert_close(codebook, centres, atol=0.005, rtol=0)
    assert torch.all((codebook[index] - w.flatten()).abs() < 0.05)


def _trained_small_head(side=1):
    torch.manual_seed(0)
    maps = torch.randn(400, 512, side, side)
    labels = (maps[:, :10].flatten(1).sum(1) > 0).long() + 2 * (maps[:, 10:20].flatten(1).sum(1) > 0).long()
    head = model.build_head((64, 32, 16), num_classes=4, map_size=side, seed=0)
    head.norm.set_stats(*features.feature_stats(maps))
    fs = features.FeatureSet(maps, labels, "test", 32, "train")
    train.fit(head, fs, epochs=3, batch_size=50, lr=1e-3, device="cpu")
    return head, fs


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_saved_head_is_smaller_and_loads_back(tmp_path, bits):
    head, fs = _trained_small_head()
    full = model.save_head(head, tmp_path / "full.pt")
    size = compress.save_compressed(head, tmp_path / "small.pt", bits)
    weights = sum(m.weight.numel() for m in head.linears())
    assert size < weights * bits / 8 + 0.05 * full + 20_000  # the packed weights dominate the file
    assert size < full / (32 / bits) * 1.5
    back = compress.load_compressed(tmp_path / "small.pt")
    assert back.widths() == head.widths()
    with torch.no_grad():
        diff = (back(fs.maps) - head(fs.maps)).abs().max()
    assert diff < {8: 0.05, 4: 0.5, 2: 2.0}[bits]
    acc = train.evaluate(head, fs, device="cpu")["accuracy"]
    acc_back = train.evaluate(back, fs, device="cpu")["accuracy"]
    assert acc_back >= acc - {8: 0.01, 4: 0.05, 2: 0.2}[bits]
    # the loaded head is an ordinary head: it trains on
    train.fit(back, fs, epochs=1, batch_size=100, device="cpu")


def test_compression_table(tmp_path):
    head, fs = _trained_small_head()
    rows = compress.compression_table(head, {"val": fs, "test": fs}, tmp_path, reference_bytes=10**7, bits=(8, 4),
                                      device="cpu")
    assert [r["storage"] for r in rows] == ["float32", "int8, scale per channel", "4-bit k-means codebook"]
    assert rows[0]["bytes"] > rows[1]["bytes"] > rows[2]["bytes"]
    for r in rows:  # the bytes are the file's, measured here; the ratio is against the reference given
        assert r["bytes"] == os.path.getsize(r["path"]) and r["ratio"] == pytest.approx(10**7 / os.path.getsize(r["path"]))
    assert all(r["val_accuracy"] == r["test_accuracy"] and r["val_correct"] <= len(fs) for r in rows)
    assert rows[0]["test_correct"] == train.evaluate(head, fs, device="cpu")["correct"]
    with pytest.raises(ValueError, match="bits=9"):
        compress.compression_table(head, {"test": fs}, tmp_path, 10**7, bits=(8, 9))


def test_bad_input_is_named(tmp_path):
    head, _ = _trained_small_head()
    with pytest.raises(ValueError, match="bits=0"):
        compress.save_compressed(head, tmp_path / "x.pt", bits=0)
    with pytest.raises(ValueError, match="bits=16"):
        compress.compress_head(head, bits=16)
    model.save_head(head, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a compressed labkit head"):
        compress.load_compressed(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt is damaged or not a labkit file"):
        compress.load_compressed(tmp_path / "junk.pt")
    payload = compress.compress_head(head, bits=4)  # packed indices cut short: named, never a wrong head
    payload["layers"][0]["packed"] = payload["layers"][0]["packed"][:-1].clone()
    torch.save(payload, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match=r"short.pt is damaged \(ValueError: .* the data is damaged"):
        compress.load_compressed(tmp_path / "short.pt")


def test_kmeans_on_a_sample_matches_the_full_fit():
    torch.manual_seed(1)
    centres = torch.tensor([-0.5, -0.1, 0.05, 0.4])
    w = centres[torch.randint(0, 4, (200_000,))] + 0.02 * torch.randn(200_000)
    full, full_index = compress.kmeans_codebook(w, bits=2, sample=len(w))
    fast, fast_index = compress.kmeans_codebook(w, bits=2, sample=5_000)
    torch.testing.assert_close(fast, full, atol=0.01, rtol=0)
    assert len(fast_index) == len(w) and (fast_index == full_index).float().mean() > 0.99
    big = torch.zeros(25_690_112)  # a 1024 x 25088 layer: float32 index arithmetic would overrun it
    big[-1] = 1.0
    codebook, index = compress.kmeans_codebook(big, bits=1)
    assert codebook.tolist() == [0.0, 1.0] and index[-1] == 1 and index[:-1].sum() == 0
