"""Feature shards: parts written as they are made, read back as one array, refused when
they come from another build or are damaged."""

import json

import numpy as np
import pytest

from engine.formats.shards import (
    INDEX_FILE,
    FeatureShards,
    PartFiller,
    ShardError,
    ShardPlan,
    ShardWriter,
    iter_parts,
)


def _rows(n=23, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float16)


def _write_all(directory, rows, shard_rows=10, fingerprint="fp", batch=4):
    writer = ShardWriter(directory, ShardPlan(len(rows), shard_rows), fingerprint)
    filler = PartFiller(writer, writer.missing())
    for start in range(0, len(rows), batch):  # batches that straddle part boundaries
        filler.add(rows[start:start + batch])
    filler.close()
    assert writer.finish()
    return writer


def test_parts_read_back_as_one_array(tmp_path):
    rows = _rows()
    _write_all(tmp_path / "k", rows)
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert names == [INDEX_FILE] + [f"part-0000{i}.{ext}" for i in range(3)
                                    for ext in ("json", "npy")]
    shards = FeatureShards(tmp_path / "k")
    assert shards.shape == (23, 5) and shards.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(shards), rows)
    pick = np.array([22, 0, 11, 9, 10])
    np.testing.assert_array_equal(shards[pick], rows[pick])
    np.testing.assert_array_equal(shards[3:15], rows[3:15])
    assert [first for first, _ in iter_parts(shards)] == [0, 10, 20]
    assert [first for first, _ in iter_parts(rows, shard_rows=8)] == [0, 8, 16]


def test_a_shard_directory_of_another_build_is_refused_and_kept(tmp_path):
    rows = _rows()
    _write_all(tmp_path / "k", rows, fingerprint="theirs")
    before = {p.name: p.read_bytes() for p in (tmp_path / "k").iterdir()}
    with pytest.raises(ShardError, match="another build"):
        ShardWriter(tmp_path / "k", ShardPlan(23, 10), "ours")
    with pytest.raises(ShardError, match="another build"):  # other shard size
        ShardWriter(tmp_path / "k", ShardPlan(23, 5), "theirs")
    assert {p.name: p.read_bytes() for p in (tmp_path / "k").iterdir()} == before


def test_a_foreign_part_without_an_index_is_refused(tmp_path):
    writer = ShardWriter(tmp_path / "k", ShardPlan(23, 10), "theirs")
    writer.write(1, _rows(10))
    with pytest.raises(ShardError, match="another build"):
        ShardWriter(tmp_path / "k", ShardPlan(23, 10), "ours").missing()


def test_a_half_written_part_is_named_and_never_read(tmp_path):
    _write_all(tmp_path / "k", _rows())
    npy = tmp_path / "k" / "part-00001.npy"
    npy.write_bytes(npy.read_bytes()[:-7])  # truncated after its .json was written
    with pytest.raises(ShardError, match="part-00001.*half-written"):
        FeatureShards(tmp_path / "k")
    with pytest.raises(ShardError, match="part-00001.*half-written"):
        ShardWriter(tmp_path / "k", ShardPlan(23, 10), "fp").missing()


def test_a_part_without_its_json_is_made_again(tmp_path):
    _write_all(tmp_path / "k", _rows())
    (tmp_path / "k" / "part-00002.json").unlink()  # killed between the two renames
    (tmp_path / "k" / INDEX_FILE).unlink()
    writer = ShardWriter(tmp_path / "k", ShardPlan(23, 10), "fp")
    assert writer.missing() == [2]
    with pytest.raises(ShardError, match="not finished"):
        FeatureShards(tmp_path / "k")
    assert not writer.finish()


def test_batches_must_fill_their_parts(tmp_path):
    writer = ShardWriter(tmp_path / "k", ShardPlan(23, 10), "fp")
    filler = PartFiller(writer, [0, 2])
    filler.add(_rows(12))
    with pytest.raises(RuntimeError, match="ended before"):
        filler.close()
    assert writer.missing() == [1, 2]  # part 0 written, part 2 not (1 row of 3)
    with pytest.raises(ValueError, match="needs 3 rows"):
        writer.write(2, _rows(4))
    meta = json.loads((tmp_path / "k" / "part-00000.json").read_text())
    assert meta == {"part": 0, "first_row": 0, "rows": 10, "dims": 5, "fingerprint": "fp",
                    "shard_rows": 10}
