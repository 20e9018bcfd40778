"""Shared fixtures: one data folder for the session (MNIST and feature caches), small heads for speed."""
import os
import tempfile
from pathlib import Path

import pytest

# All tests share one MNIST copy and feature cache: $LABKIT_DATA where set (CI sets it), else a temp folder.
if not os.environ.get("LABKIT_DATA"):
    os.environ["LABKIT_DATA"] = str(Path(tempfile.gettempdir()) / "labkit-test-data")
os.environ.setdefault("LABKIT_OFFLINE", "1")  # tests never wait on the network

SMALL_HEAD = (64, 48, 16)


@pytest.fixture
def small_config(tmp_path):
    """A config that trains a small head on 300 / 200 images in a couple of seconds a cycle."""
    from labkit import study

    return study.make_config("ci", head=SMALL_HEAD, k=8, cycles=3, epochs=1, batch_size=32,
                             train_limit=300, test_limit=200, results_dir=str(tmp_path / "results"), lr=1e-3)
