"""Feature extraction: devices, shapes, dtypes, grayscale, row alignment, determinism."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.nets.features import extract_features, resolve_device

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fashion_items():
    """The first 6 Fashion-MNIST test images (grayscale 28x28) and their labels."""
    path = FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST} (make setup)")
    with gzip.open(path) as f:
        pixels = np.frombuffer(f.read(16 + 6 * 784), np.uint8, offset=16).reshape(6, 28, 28)
    return [Image.fromarray(p, "L") for p in pixels]


def test_auto_device_is_cuda_when_present_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:x", "", "mps", "cpu:0", 0])
def test_bad_device_names_the_accepted_values(device):
    with pytest.raises(ValueError, match="accepted: auto, cpu, cuda, cuda:N"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error(device):
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device(device)


@pytest.mark.parametrize(
    ("network", "layer", "dim"),
    [("vgg16-imagenet", "pool5", 512), ("mobilenet_v2-imagenet", "gap", 1280)],
)
def test_shapes_and_dtype(fashion_items, network, layer, dim):
    out = extract_features(fashion_items, network, [layer], image_size=32, device="cpu",
                           batch_size=4, progress=False)
    assert list(out) == [layer]
    assert out[layer].shape == (len(fashion_items), dim)
    assert out[layer].dtype == np.float16
    assert np.isfinite(out[layer].astype(np.float32)).all()


def test_grayscale_is_replicated_to_three_channels(fashion_items):
    gray = fashion_items[:2]
    rgb = [Image.merge("RGB", (g, g, g)) for g in gray]
    a = extract_features(gray, "mobilenet_v2-imagenet", ["gap"], image_size=32, device="cpu",
                         progress=False)["gap"]
    b = extract_features(rgb, "mobilenet_v2-imagenet", ["gap"], image_size=32, device="cpu",
                         progress=False)["gap"]
    np.testing.assert_array_equal(a, b)


def test_rows_line_up_with_images_across_batches(fashion_items):
    kwargs = dict(image_size=32, device="cpu", progress=False)
    batched = extract_features(fashion_items, "vgg16-imagenet", ["pool5"], batch_size=4,
                               **kwargs)["pool5"]
    reversed_ = extract_features(fashion_items[::-1], "vgg16-imagenet", ["pool5"],
                                 batch_size=5, **kwargs)["pool5"]
    one = extract_features(fashion_items[2:3], "vgg16-imagenet", ["pool5"], batch_size=1,
                           **kwargs)["pool5"]
    np.testing.assert_allclose(batched.astype(np.float32), reversed_[::-1].astype(np.float32),
                               rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(batched[2:3].astype(np.float32), one.astype(np.float32),
                               rtol=2e-3, atol=1e-3)
    # Different garments get different rows.
    assert not np.allclose(batched[0], batched[1])


def test_extraction_is_deterministic(fashion_items):
    kwargs = dict(image_size=32, device="cpu", batch_size=3, progress=False)
    a = extract_features(fashion_items, "mobilenet_v2-imagenet", ["gap"], **kwargs)["gap"]
    b = extract_features(fashion_items, "mobilenet_v2-imagenet", ["gap"], **kwargs)["gap"]
    np.testing.assert_array_equal(a, b)


def test_rgb_images_of_any_size_are_resized():
    images = [Image.new("RGB", (50, 30), (200, 10, 10)), Image.new("RGB", (20, 90), (0, 0, 0))]
    out = extract_features(images, "mobilenet_v2-imagenet", ["gap"], image_size=32,
                           device="cpu", progress=False)
    assert out["gap"].shape == (2, 1280)


def test_no_images_gives_empty_arrays():
    out = extract_features([], "vgg16-imagenet", ["pool5"], image_size=32, device="cpu",
                           progress=False)
    assert out["pool5"].shape == (0, 512) and out["pool5"].dtype == np.float16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(image_size=16), "image_size must be an integer >= 32"),
        (dict(image_size=64.0), "image_size must be an integer"),
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(device="tpu"), "accepted: auto, cpu"),
    ],
)
def test_bad_options_are_clear_errors(fashion_items, kwargs, message):
    options = dict(image_size=32, device="cpu", progress=False) | kwargs
    with pytest.raises(ValueError, match=message):
        extract_features(fashion_items, "mobilenet_v2-imagenet", ["gap"], **options)


def test_fashion_network_needs_a_checkpoint(fashion_items):
    with pytest.raises(ValueError, match="fashion_checkpoint"):
        extract_features(fashion_items, "vgg16-fashion", ["fc6"], image_size=32, device="cpu")
