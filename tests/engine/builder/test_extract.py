"""The streamed features stage: workers' shares, resumption, refusals, the training sample
(with the fake networks of tests/engine/conftest.py)."""

import numpy as np
import pytest

from engine.builder.extract import WorkerShare, train_sample
from engine.builder.pipeline import run_stage
from engine.formats.builddir import feature_keys, load_features
from engine.formats.shards import ShardError
from engine.formats.state import BuildOptions

KEYS = ["mobilenet_v2-imagenet.gap", "vgg16-imagenet.pool5"]


def _opts(fmnist, **kw):
    return BuildOptions(**{"catalog_path": str(fmnist), "limit": 30, "queries": 5,
                           "variants": "offline", "device": "cpu", "shard_rows": 8,
                           "batch_size": 5, **kw})


@pytest.mark.parametrize("text, message", [("3/2", "does not exist"), ("1/0", "N >= 1"),
                                           ("-1/2", "does not exist"), ("a/b", "i/N"),
                                           ("2", "i/N")])
def test_a_worker_share_that_cannot_exist_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        WorkerShare.parse(text)


def test_workers_make_the_same_rows_as_one_run(engine_fmnist_dir, engine_fake_features,
                                               tmp_path):
    opts = _opts(engine_fmnist_dir)
    run_stage("extract", tmp_path / "one", opts)
    run_stage("extract", tmp_path / "two", opts, share=WorkerShare(1, 2))
    with pytest.raises(ShardError, match="not finished"):
        load_features(tmp_path / "two", KEYS[0])  # worker 0's parts are missing
    made = [c[3] for c in engine_fake_features.calls if c[1] == "mobilenet_v2-imagenet"]
    run_stage("extract", tmp_path / "two", opts, share=WorkerShare(0, 2))
    made += [c[3] for c in engine_fake_features.calls[-2:] if c[1] == "mobilenet_v2-imagenet"]
    assert made[1:] == [16, 19]  # 35 rows in parts of 8: worker 1 has parts 1 and 3
    assert feature_keys(tmp_path / "two") == KEYS
    for key in KEYS:
        np.testing.assert_array_equal(np.asarray(load_features(tmp_path / "one", key)),
                                      np.asarray(load_features(tmp_path / "two", key)))


def test_extract_goes_on_with_its_own_build_and_refuses_another(engine_fmnist_dir,
                                                                engine_fake_features, tmp_path):
    run_stage("extract", tmp_path / "b", _opts(engine_fmnist_dir))
    calls = len(engine_fake_features.calls)
    run_stage("extract", tmp_path / "b", _opts(engine_fmnist_dir, workers=0, batch_size=7))
    assert len(engine_fake_features.calls) == calls  # every part kept: no pass runs
    before = (tmp_path / "b" / "catalog.csv").read_bytes()
    with pytest.raises(ValueError, match="other options"):
        run_stage("extract", tmp_path / "b", _opts(engine_fmnist_dir, limit=20))
    assert (tmp_path / "b" / "catalog.csv").read_bytes() == before


def test_shards_copied_from_another_build_are_refused_not_overwritten(engine_fmnist_dir,
                                                                      engine_fake_features,
                                                                      tmp_path):
    run_stage("extract", tmp_path / "a", _opts(engine_fmnist_dir, seed=1))
    (tmp_path / "b" / "features").mkdir(parents=True)
    theirs = tmp_path / "a" / "features" / KEYS[1]
    theirs.rename(tmp_path / "b" / "features" / KEYS[1])
    before = sorted((p.name, p.read_bytes()) for p in
                    (tmp_path / "b" / "features" / KEYS[1]).iterdir())
    with pytest.raises(ShardError, match="another build"):
        run_stage("extract", tmp_path / "b", _opts(engine_fmnist_dir))
    assert sorted((p.name, p.read_bytes()) for p in
                  (tmp_path / "b" / "features" / KEYS[1]).iterdir()) == before


def test_train_runs_on_the_stored_conv_maps_of_a_sample(engine_fmnist_dir,
                                                        engine_fake_features, tmp_path):
    run_stage("extract", tmp_path / "b", _opts(engine_fmnist_dir, train_rows=12))
    run_stage("train", tmp_path / "b")
    assert ("train", "pool4", 12) in engine_fake_features.calls
    assert sum(c[0] == "pass" for c in engine_fake_features.calls) == 2  # no second pass
    assert not (tmp_path / "b" / "trunk").exists()  # conv maps removed once used
    fc6 = load_features(tmp_path / "b", "vgg16-fashion.fc6")
    assert fc6.shape == (35, 4096)


def test_the_training_sample_is_seeded_and_bounded():
    rows = np.arange(3, 103)
    np.testing.assert_array_equal(train_sample(rows, 500, seed=0), rows)
    a, b = train_sample(rows, 40, seed=0), train_sample(rows, 40, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(set(a)) == 40 and list(a) == sorted(a) and set(a) <= set(rows)
    assert not np.array_equal(a, train_sample(rows, 40, seed=1))


def test_the_head_embeds_the_conv_maps_one_part_at_a_time(engine_fmnist_dir,
                                                          engine_fake_features, tmp_path,
                                                          monkeypatch):
    """Each part of conv maps is read only once the previous part's rows are written, so at
    most one part is in memory (a list of every part took 3 GB more at 240k items)."""
    from engine.formats.shards import FeatureShards, ShardWriter

    events = []
    read, write = FeatureShards.part, ShardWriter.write

    def reading(self, part):
        if self.dir.parent.name == "trunk":
            events.append(("read", part))
        return read(self, part)

    def writing(self, part, rows):
        if "vgg16-fashion.fc6" in self.dir.name:
            events.append(("write", part))
        return write(self, part, rows)

    run_stage("extract", tmp_path / "b", _opts(engine_fmnist_dir))
    monkeypatch.setattr(FeatureShards, "part", reading)
    monkeypatch.setattr(ShardWriter, "write", writing)
    run_stage("train", tmp_path / "b")
    parts = -(-35 // 8)
    assert events == [(kind, p) for p in range(parts) for kind in ("read", "write")]
