"""Fixtures: small configs for fast study tests (the environment is set in the root conftest.py)."""
import pytest

SMALL_HEAD = (64, 48, 16)


@pytest.fixture
def small_config(tmp_path):
    """A config that trains a small head on 300 / 200 / 200 images in a couple of seconds a cycle."""
    from labkit import config

    return config.make_config("ci", hidden=SMALL_HEAD, k=8, cycles=3, epochs=1, batch_size=32, train_limit=300,
                              val_limit=200, test_limit=200, results_dir=str(tmp_path / "results"), lr=1e-3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Mark a test that failed, so fixtures (the browser test's page) can save what it showed."""
    outcome = yield
    if call.when == "call":
        item.failed = outcome.get_result().failed
