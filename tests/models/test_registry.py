from __future__ import annotations

import pytest

from semicompact.errors import ConfigError, ModelError
from semicompact.models import list_models, register_model, resolve_name
from semicompact.models.registry import get_spec, registered_models

PAPER = {
    "standard": {"resnet50", "resnet101", "efficientnet_b3"},
    "manual": {"resnet18", "mobilenetv2_100", "squeezenet1_1", "shufflenet_v2_x1_0"},
    "automatic": {
        "fbnetc_100",
        "mixnet_s",
        "mixnet_m",
        "mnasnet_100",
        "efficientnet_b0",
        "tf_efficientnet_lite0",
    },
    "quantized": {"resnet18_quantized", "resnet50_quantized"},
}


def test_paper_models_registered_by_family():
    specs = registered_models()
    for family, names in PAPER.items():
        assert {n for n, s in specs.items() if s.family == family} >= names


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("ResNet-18", "resnet18"),
        ("resnet18", "resnet18"),
        ("MobileNet", "mobilenetv2_100"),
        ("mobilenet_v2", "mobilenetv2_100"),
        ("MobileNet-V2", "mobilenetv2_100"),
        ("EfficientNet", "efficientnet_b0"),
        ("EfficientNet-Lite0", "tf_efficientnet_lite0"),
        ("MNasNet", "mnasnet_100"),
        ("mixnet", "mixnet_m"),
        ("MixNet-S", "mixnet_s"),
        ("fbnet", "fbnetc_100"),
        ("SqueezeNet", "squeezenet1_1"),
        ("ShuffleNet", "shufflenet_v2_x1_0"),
        ("ResNet 50", "resnet50"),
        ("resnet18_quantized", "resnet18_quantized"),
    ],
)
def test_alias_resolution(alias, name):
    assert resolve_name(alias) == name


def test_timm_passthrough():
    spec = get_spec("convnext_atto")
    assert spec.name == "convnext_atto"
    assert spec.family == "timm"


def test_unknown_name_suggests():
    with pytest.raises(ModelError) as err:
        resolve_name("resnt18")
    msg = str(err.value)
    assert msg.startswith("unknown model 'resnt18'; did you mean resnet18")
    assert "semicompact models" in msg
    assert "\n" not in msg


def test_unknown_name_without_suggestion():
    with pytest.raises(ModelError, match="unknown model 'qqqqqqqq'; Run `semicompact models`"):
        resolve_name("qqqqqqqq")


def test_register_model_bad_family():
    with pytest.raises(ConfigError, match="family 'huge'"):
        register_model("x_net", "huge", lambda **_: None, "x")


def test_list_models():
    rows = {r.name: r for r in list_models()}
    assert set().union(*PAPER.values()) <= set(rows)
    assert rows["resnet18"].params == pytest.approx(11.69, abs=0.01)
    assert rows["squeezenet1_1"].source == "torchvision"
    assert rows["mobilenetv2_100"].source == "timm"
    assert "mobilenet" in rows["mobilenetv2_100"].aliases
    assert "int8" in rows["resnet18_quantized"].description
    assert all(r.family == "manual" for r in list_models("manual"))
