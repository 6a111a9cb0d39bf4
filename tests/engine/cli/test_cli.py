import json

import pytest
from click.testing import CliRunner

from engine.cli.main import main


@pytest.fixture
def engine_runner():
    return CliRunner()


@pytest.mark.parametrize("args, message", [
    (["--catalog", "imagenet"], "'imagenet' is not one of 'fashion-mnist', 'folder'"),
    (["--limit", "-1"], "Invalid value for '--limit'"),
    (["--queries", "x"], "Invalid value for '--queries'"),
    (["--image-size", "8"], "Invalid value for '--image-size': 8 is not in the range 32<=x<=1024"),
    (["--device", "tpu"], "'tpu'; accepted: auto, cpu, cuda, cuda:N"),
    (["--variants", "fancy"], "'fancy'; accepted: auto, classic, offline or a path"),
    (["--variants", "nope.toml"], "file not found: nope.toml"),
    (["--seed", "-3"], "Invalid value for '--seed'"),
    (["--workers", "-1"], "Invalid value for '--workers'"),
    (["--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["--catalog-path", "/no/such/dir"], "Invalid value for '--catalog-path'"),
    (["--fashion-input", "pool3"], "'pool3' is not one of 'pool4', 'pool5'"),
    (["--repeat", "0"], "Invalid value for '--repeat': 0 is not in the range 1<=x<=1000"),
    (["--index", "hnsw"], "'hnsw' is not one of 'auto', 'annoy', 'faiss'"),
    (["--shard-rows", "0"], "Invalid value for '--shard-rows'"),
    (["--train-rows", "5"], "Invalid value for '--train-rows'"),
    ([], "Missing option '--out'"),
])
def test_build_rejects_bad_options(engine_runner, tmp_path, args, message):
    out = [] if args == [] else ["--out", str(tmp_path / "b")]
    result = engine_runner.invoke(main, ["build", *args, *out])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("share, message", [("3/2", "worker 3 of 2 does not exist"),
                                            ("x", "must look like i/N")])
def test_extract_rejects_a_share_that_cannot_exist(engine_runner, tmp_path, share, message):
    result = engine_runner.invoke(main, ["extract", "--shard", share, "--build",
                                         str(tmp_path / "b")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "b").exists()


def test_cuda_device_without_cuda_is_a_usage_error(engine_runner, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = engine_runner.invoke(main, ["build", "--device", "cuda", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_engine_errors_become_usage_errors(engine_runner, tmp_path):
    result = engine_runner.invoke(main, ["build", "--catalog", "folder", "--catalog-path",
                                         str(tmp_path), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "missing catalog file" in result.output and "catalog.csv" in result.output


def test_stage_on_a_directory_that_is_not_a_build(engine_runner, tmp_path):
    result = engine_runner.invoke(main, ["index", "--build", str(tmp_path)])
    assert result.exit_code == 2
    assert "not an engine build directory" in result.output


def test_build_refuses_to_overwrite_without_force(engine_runner, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    result = engine_runner.invoke(main, ["build", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "pass --force" in result.output
    assert (tmp_path / "b" / "keep.txt").exists()


def test_stages_chain_through_the_build_directory(engine_runner, engine_fmnist_dir,
                                                  engine_fake_features, tmp_path):
    build = str(tmp_path / "b")
    common = ["--catalog-path", str(engine_fmnist_dir), "--limit", "40", "--queries", "10",
              "--variants", "offline", "--image-size", "32", "--device", "cpu"]
    steps = [["extract", *common, "--build", build], ["train", "--build", build],
             ["index", "--build", build], ["pairs", "--build", build],
             ["evaluate", "--build", build]]
    for step in steps:
        result = engine_runner.invoke(main, step)
        assert result.exit_code == 0, (step, result.output)
    staged = (tmp_path / "b" / "pairs.jsonl").read_text()
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["counts"]["pairs"] == 8 * 10
    result = engine_runner.invoke(main, ["build", *common, "--out", str(tmp_path / "whole")])
    assert result.exit_code == 0, result.output
    assert "| network | layer |" in result.output
    assert (tmp_path / "whole" / "pairs.jsonl").read_text() == staged


@pytest.mark.parametrize("extra, expected",
                         [([], "pool4"), (["--fashion-input", "pool5"], "pool5")])
def test_fashion_input_reaches_training_from_the_extract_stage(engine_runner, engine_fmnist_dir,
                                                               engine_fake_features, tmp_path,
                                                               extra, expected):
    build = str(tmp_path / "b")
    common = ["--catalog-path", str(engine_fmnist_dir), "--limit", "40", "--queries", "10",
              "--variants", "offline", "--image-size", "32", "--device", "cpu"]
    for step in (["extract", *common, *extra, "--build", build], ["train", "--build", build]):
        result = engine_runner.invoke(main, step)
        assert result.exit_code == 0, (step, result.output)
    state = json.loads((tmp_path / "b" / "engine-state.json").read_text())
    assert state["options"]["fashion_input"] == expected
    tap = {"pool4": "conv4", "pool5": "conv"}[expected]
    passes = [c for c in engine_fake_features.calls if c[0] == "pass"]
    assert [c[1] for c in passes] == ["vgg16-imagenet", "mobilenet_v2-imagenet"]
    assert tap in passes[0][2]  # extract stores the conv map train reads: no second pass
    assert [c[:2] for c in engine_fake_features.calls if c[0] == "train"] == \
        [("train", expected)]
