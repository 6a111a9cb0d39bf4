import pytest

from engine.builder.variants import RANDOM, Variant, choose_variant_set, load_variant_set

CLASSIC = ["vgg16-imagenet.fc6.l1", "vgg16-imagenet.fc6.hamming", "vgg16-imagenet.fc7.l2",
           "vgg16-imagenet.fc7.hamming", "vgg16-fashion.fc6.l1", "vgg16-fashion.fc6.l2",
           "vgg16-fashion.fc6.hamming"]
OFFLINE = ["vgg16-imagenet.pool5.l1", "vgg16-imagenet.pool5.hamming",
           "mobilenet_v2-imagenet.gap.l2", "mobilenet_v2-imagenet.gap.hamming",
           "vgg16-fashion.fc6.l1", "vgg16-fashion.fc7.l2", "vgg16-fashion.fc6.hamming"]


@pytest.mark.parametrize("name, slugs", [("classic", CLASSIC), ("offline", OFFLINE)])
def test_builtin_sets(name, slugs):
    vset = load_variant_set(name)
    assert vset.name == name
    assert [v.slug for v in vset.variants] == slugs


def test_slug_and_human_name():
    v = Variant("vgg16-fashion", "fc6", "hamming")
    assert v.slug == "vgg16-fashion.fc6.hamming"
    assert v.name == "VGG16 fine-tuned on clothing, FC6, Hamming"
    assert RANDOM.slug == "random" and RANDOM.manifest_entry()["control"] is True
    assert v.manifest_entry() == {"slug": v.slug, "name": v.name, "network": "vgg16-fashion",
                                  "layer": "fc6", "metric": "hamming", "control": False}


def test_needed_layers_per_network():
    assert load_variant_set("offline").needed() == {
        "vgg16-imagenet": ["pool5"], "mobilenet_v2-imagenet": ["gap"],
        "vgg16-fashion": ["fc6", "fc7"]}


def test_user_set_from_toml(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[[variant]]\nnetwork = "vgg16-imagenet"\nlayer = "pool5"\n'
                    'metric = "cosine"\nname = "Pool5 by angle"\n')
    vset = load_variant_set(str(path))
    assert vset.name == "mine"
    assert vset.variants[0].slug == "vgg16-imagenet.pool5.cosine"
    assert vset.variants[0].name == "Pool5 by angle"


def _variant(network="vgg16-imagenet", layer="pool5", metric="l1"):
    return f'[[variant]]\nnetwork = "{network}"\nlayer = "{layer}"\nmetric = "{metric}"\n'


@pytest.mark.parametrize("text, message", [
    (_variant(network="resnet"), "unknown network 'resnet'; accepted: vgg16-imagenet"),
    (_variant(layer="fc9"), "has no layer 'fc9'; accepted: fc6, fc7, pool5"),
    (_variant(network="mobilenet_v2-imagenet", layer="fc6"), "accepted: gap"),
    (_variant(metric="l3"), "unknown metric 'l3'; accepted: l1, l2, hamming, cosine"),
    (_variant() + _variant(), "duplicate variant vgg16-imagenet.pool5.l1"),
    ('name = "empty"\n', "needs at least one"),
    (_variant() + 'colour = "red"\n', "unknown key"),
    ("[[variant]\n", "not valid TOML"),
])
def test_bad_user_set(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_variant_set(str(path))


@pytest.mark.parametrize("spec, message", [
    ("fancy", "unknown variant set 'fancy'; accepted: auto, classic, offline"),
    ("missing.toml", "variant set file not found"),
])
def test_bad_set_name(spec, message):
    with pytest.raises(ValueError, match=message):
        load_variant_set(spec)


@pytest.mark.parametrize("available, expected", [(True, "classic"), (False, "offline")])
def test_auto_picks_classic_only_when_fc_weights_resolve(monkeypatch, available, expected):
    import engine.nets.networks

    monkeypatch.setattr(engine.nets.networks, "imagenet_fc_available",
                        lambda allow_download=False: (available, "because test says so"))
    vset = choose_variant_set("auto")
    assert vset.name == expected
    assert "because test says so" in vset.reason and expected in vset.reason
