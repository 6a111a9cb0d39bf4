import collections
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.builder.catalog import DEFAULT_PATHS, load_catalog
from engine.builder.catalog_sources import FASHION_MNIST_CLASSES

REAL_FMNIST = DEFAULT_PATHS["fashion-mnist"]


def test_fashion_mnist_train_is_catalog_test_is_queries(engine_fmnist_dir):
    cat = load_catalog("fashion-mnist", engine_fmnist_dir, limit=None, queries=None)
    assert len(cat) == 80
    assert len(cat.catalog_indices) == 60 and len(cat.query_indices) == 20
    assert cat.categories == FASHION_MNIST_CLASSES
    img = cat[0]
    assert isinstance(img, Image.Image) and img.size == (28, 28) and img.mode == "L"
    assert cat.image_id[0] == "fm-train-000000" and cat.image_id[60] == "fm-test-000000"
    assert list(cat.label[:3]) == [0, 1, 2]
    assert cat.category[1] == "Trouser"
    assert cat.item_id == [""] * 80 and not cat.has_item_ids
    # The byte-identical copy across splits shares its pixel hash.
    assert cat.pixel_hash[60] == cat.pixel_hash[0]


def test_fashion_mnist_shows_product_shots_dark_on_white(engine_fmnist_dir):
    """The IDX files hold negated photos; the catalog restores the shop's polarity."""
    from engine.builder.catalog_sources import read_idx

    raw = read_idx(engine_fmnist_dir / "train-images-idx3-ubyte.gz")
    cat = load_catalog("fashion-mnist", engine_fmnist_dir, limit=None, queries=None)
    assert np.array_equal(np.asarray(cat[0]), 255 - raw[0])
    if REAL_FMNIST.is_dir():
        real = load_catalog(limit=20, queries=10, seed=0)
        corners = [np.asarray(real[i])[[0, 0, -1, -1], [0, -1, 0, -1]] for i in range(len(real))]
        assert np.median(corners) == 255  # the background is white


def test_limit_is_a_seeded_category_stratified_sample(engine_fmnist_dir):
    cat = load_catalog("fashion-mnist", engine_fmnist_dir, limit=30, queries=10, seed=3)
    counts = collections.Counter(np.array(cat.category)[cat.catalog_indices])
    assert sorted(counts.values()) == [3] * 10
    assert len(cat.query_indices) == 10
    again = load_catalog("fashion-mnist", engine_fmnist_dir, limit=30, queries=10, seed=3)
    other = load_catalog("fashion-mnist", engine_fmnist_dir, limit=30, queries=10, seed=4)
    assert again.image_id == cat.image_id
    assert other.image_id != cat.image_id


def test_real_fashion_mnist_slice():
    if not REAL_FMNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    cat = load_catalog(limit=100, queries=20, seed=0)
    counts = collections.Counter(np.array(cat.category)[cat.catalog_indices])
    assert set(counts.values()) == {10}
    assert len(cat.query_indices) == 20
    assert all(i.startswith("fm-test-") for i in np.array(cat.image_id)[cat.query_indices])


def test_folder_source_crops_reads_ids_and_skips_unreadable(engine_folder_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.builder.catalog"):
        cat = load_catalog("folder", engine_folder_dir, limit=None, queries=None)
    assert len(cat) == 12
    assert [s[0] for s in cat.skipped] == ["img-000013"]
    assert "Skipping unreadable image" in caplog.text
    assert cat.categories == ["bag", "shirt", "shoe"]
    assert cat[0].size == (40, 30)  # cropped to x1,y1,x2,y2
    assert cat[0].getpixel((5, 5)) == (200, 30, 30)
    assert cat.item_id[0] == "item0" and cat.has_item_ids
    assert len(cat.query_indices) == 3


def test_folder_without_split_holds_out_queries(tmp_path):
    root = tmp_path / "f"
    (root / "i").mkdir(parents=True)
    lines = ["path,category"]
    for i in range(20):
        Image.new("L", (8, 8), i * 10).save(root / "i" / f"{i}.png")
        lines.append(f"i/{i}.png,{'ab'[i % 2]}")
    (root / "catalog.csv").write_text("\n".join(lines) + "\n")
    cat = load_catalog("folder", root, limit=None, queries=4)
    assert len(cat.query_indices) == 4 and len(cat.catalog_indices) == 16
    assert not set(cat.image_id[i] for i in cat.query_indices) & set(
        cat.image_id[i] for i in cat.catalog_indices)


@pytest.mark.parametrize("csv_text, message", [
    ("file,category\na.png,x\n", "missing column(s) path"),
    ("path,category,x1,y1\na.png,x,1,2\n", "bbox needs all of x1,y1,x2,y2"),
    ("path,category,split\na.png,x,train\n", "bad split 'train'"),
    ("path,category\n", "has no rows"),
])
def test_folder_bad_csv_is_a_clear_error(tmp_path, csv_text, message):
    (tmp_path / "catalog.csv").write_text(csv_text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_catalog("folder", tmp_path)


def test_deepfashion_category_layout(engine_deepfashion_category_dir):
    cat = load_catalog("deepfashion", engine_deepfashion_category_dir, limit=None, queries=None)
    assert cat.source["layout"] == "category-attribute"
    assert cat.categories == ["Anorak", "Blazer", "Dress"]
    assert len(cat.catalog_indices) == 6 and len(cat.query_indices) == 3  # train+val / test
    assert cat[0].size == (160, 154)  # cropped to the bbox 72,19 - 232,173
    assert cat.category[0] == "Anorak" and cat.category[2] == "Dress"


def test_deepfashion_consumer_to_shop_layout(engine_deepfashion_c2s_dir):
    cat = load_catalog("deepfashion", engine_deepfashion_c2s_dir, limit=None, queries=None)
    assert cat.source["layout"] == "consumer-to-shop"
    ids = cat.image_id
    catalog = [ids[i] for i in cat.catalog_indices]
    queries = [ids[i] for i in cat.query_indices]
    assert len(catalog) == 4 and all("shop_" in i for i in catalog)
    assert len(queries) == 3 and all("comsumer_" in i for i in queries)  # test split only
    assert cat.item_id[cat.query_indices[0]] == "id_00000001"
    assert "TROUSERS/Leggings" in cat.categories
    assert cat[cat.catalog_indices[0]].size == (200, 240)


def test_deepfashion_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="neither a DeepFashion"):
        load_catalog("deepfashion", tmp_path)


def test_deepfashion_missing_file(engine_deepfashion_category_dir):
    (engine_deepfashion_category_dir / "Anno" / "list_bbox.txt").unlink()
    with pytest.raises(ValueError, match="missing DeepFashion file: list_bbox.txt"):
        load_catalog("deepfashion", engine_deepfashion_category_dir)


@pytest.mark.parametrize("source, path, kwargs, message", [
    ("imagenet", None, {}, "unknown catalog source 'imagenet'; accepted: fashion-mnist"),
    ("folder", None, {}, "needs a path"),
    ("fashion-mnist", "/nonexistent/dir", {}, "does not exist"),
    ("fashion-mnist", "EMPTY", {}, "missing catalog file"),
    ("fashion-mnist", "FMNIST", {"limit": 0}, "limit must be at least 1"),
    ("fashion-mnist", "FMNIST", {"repeat": 0}, "repeat must be an integer >= 1, got 0"),
])
def test_bad_source_arguments(tmp_path, engine_fmnist_dir, source, path, kwargs, message):
    path = {"EMPTY": tmp_path, "FMNIST": engine_fmnist_dir}.get(path, path)
    with pytest.raises(ValueError, match=message):
        load_catalog(source, path, **kwargs)


def test_all_unreadable_is_an_empty_result_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"nope")
    (tmp_path / "b.png").write_bytes(b"nope")
    (tmp_path / "catalog.csv").write_text("path,category,split\na.png,x,catalog\nb.png,x,query\n")
    with pytest.raises(ValueError, match="gave no catalog images"):
        load_catalog("folder", Path(tmp_path))


def test_many_unreadable_images_are_a_clear_error_before_anything_is_written(tmp_path):
    from engine.builder.pipeline import build
    from engine.formats.state import BuildOptions

    lines = ["path,category,split"]
    for i in range(30):
        name = f"{i:02d}.png"
        if i < 18:
            Image.new("RGB", (8, 8), (i * 9, 0, 0)).save(tmp_path / name)
        else:
            (tmp_path / name).write_bytes(b"\x89PNG not really")  # 12 unreadable
        lines.append(f"{name},x,{'query' if i % 6 == 0 else 'catalog'}")
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"12 of 30 catalog images could not be read "
                                         r"\(first: img-\d+: UnidentifiedImageError"):
        build(tmp_path / "out", BuildOptions(catalog="folder", catalog_path=str(tmp_path)))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_repeat_adds_synthetic_copies_of_the_catalog_items(engine_fmnist_dir):
    """A bigger catalog than the source, for measuring growth: each item, then mirrored
    and shifted copies with new ids and no item id; the queries are not copied."""
    one = load_catalog("fashion-mnist", engine_fmnist_dir, limit=40, queries=8, seed=2)
    three = load_catalog("fashion-mnist", engine_fmnist_dir, limit=40, queries=8, seed=2,
                         repeat=3)
    items = [one.rows[i].image_id for i in one.catalog_indices]
    copies = [three.rows[i] for i in three.catalog_indices]
    assert len(copies) == 120 and len(three.query_indices) == len(one.query_indices)
    assert [r.image_id for r in copies[:40]] == items
    assert [r.image_id for r in copies[40:80]] == [f"{i}~1" for i in items]
    assert [r.image_id for r in copies[80:]] == [f"{i}~2" for i in items]
    assert [r.category for r in copies[40:80]] == [r.category for r in copies[:40]]
    assert not any(r.item_id for r in copies[40:])
    assert three.source["repeat"] == 3
    first, mirror = np.asarray(three[int(three.catalog_indices[0])]), \
        np.asarray(three[int(three.catalog_indices[40])])
    np.testing.assert_array_equal(mirror, first[:, ::-1])  # copy 1: the mirror image
    hashes = [three.pixel_hash[i] for i in three.catalog_indices]
    assert len(set(hashes)) > 115  # copies are new images (a blank one may repeat)
    again = load_catalog("fashion-mnist", engine_fmnist_dir, limit=40, queries=8, seed=2,
                         repeat=3)
    assert again.pixel_hash == three.pixel_hash
