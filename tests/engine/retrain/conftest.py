"""The small real build and simulated votes the retraining tests share (made once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from retrainkit import TONE, run_retrain, simulate

from engine.cli.main import main

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    if not FASHION_MNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path_factory.mktemp("retrain") / "build"
    result = CliRunner().invoke(main, [
        "-q", "build", "--catalog", "fashion-mnist", "--limit", "300", "--queries", "40",
        "--variants", "offline", "--image-size", "32", "--device", "cpu", "--seed", "5",
        "--no-tsne", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tone_votes(small, tmp_path_factory):
    return simulate(small, TONE, 1500, tmp_path_factory.mktemp("v") / "tone.jsonl", seed=2)


@pytest.fixture(scope="session")
def round1(small, tone_votes, tmp_path_factory):
    out = tmp_path_factory.mktemp("r1") / "challenger"
    result = run_retrain(small, tone_votes, out)
    assert result.exit_code == 0, result.output
    return out
