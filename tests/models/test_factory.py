from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from semicompact.errors import ConfigError, ModelError
from semicompact.models import Classifier, check_input_size, create_model, load_weights
from semicompact.models.registry import registered_models

ALL = list(registered_models())


def _no_shared_storage(model: torch.nn.Module) -> None:
    ptrs = [t.data_ptr() for t in model.state_dict().values() if t.numel() > 0]
    assert len(ptrs) == len(set(ptrs)), "state_dict holds shared tensors"


@pytest.mark.parametrize("name", ALL)
def test_every_model_builds_and_predicts(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    assert isinstance(model, Classifier)
    assert model.name == name and model.num_classes == 3 and not model.small_input
    assert model.family == registered_models()[name].family
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    # head / body split
    head, body = model.head_parameters(), model.body_parameters()
    assert head and body
    assert not ({id(p) for p in head} & {id(p) for p in body})
    assert {id(p) for p in head} | {id(p) for p in body} == {id(p) for p in model.parameters()}
    assert sum(p.numel() for p in head) < sum(p.numel() for p in body)
    _no_shared_storage(model)
    # small-input variant: trains at 32 px
    small = create_model(name, num_classes=3, small_input=True)
    small.train()
    out = small(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert small.reduction() < model.reduction()


def test_freeze_body_and_unfreeze():
    model = create_model("mobilenetv2_100", num_classes=4)
    model.freeze_body()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"net.classifier.weight", "net.classifier.bias"}
    assert all(not p.requires_grad for p in model.body_parameters())
    out = model(torch.rand(2, 3, 32, 32))
    out.sum().backward()
    assert model.net.classifier.weight.grad is not None
    assert model.net.conv_stem.weight.grad is None
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("squeezenet1_1", "classifier.1"),
        ("shufflenet_v2_x1_0", "fc"),
        ("resnet18_quantized", "fc"),
        ("resnet18", "fc"),
    ],
)
def test_freeze_body_torchvision_and_resnet(name, head):
    model = create_model(name, num_classes=2)
    model.freeze_body()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"net.{head}.weight", f"net.{head}.bias"}


def test_reduction_resnet18():
    assert create_model("resnet18", num_classes=2).reduction() == 32
    small = create_model("resnet18", num_classes=2, small_input=True)
    assert small.reduction() == 8
    # pretrained-compatible stem: 7x7 conv kept, stride 1, max-pool removed
    assert small.net.conv1.kernel_size == (7, 7) and small.net.conv1.stride == (1, 1)
    assert isinstance(small.net.maxpool, torch.nn.Identity)


def test_reduction_other_families():
    assert create_model("mobilenetv2_100", 2, small_input=True).reduction() == 16
    assert create_model("squeezenet1_1", 2).reduction() == 16
    assert create_model("squeezenet1_1", 2, small_input=True).reduction() == 8
    assert create_model("shufflenet_v2_x1_0", 2, small_input=True).reduction() == 8
    assert create_model("resnet18_quantized", 2, small_input=True).reduction() == 8


def test_timm_passthrough_small_input():
    model = create_model("convnext_atto", num_classes=2, small_input=True)
    assert model.family == "timm"
    assert model.net.stem[0].stride == (1, 1)
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 2)


def test_normalisation_buffers():
    lite = create_model("tf_efficientnet_lite0", num_classes=2)
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(lite.normalize(x), (x * 255 - 127) / 128, atol=1e-5)
    tv = create_model("squeezenet1_1", num_classes=2)
    assert torch.allclose(tv.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert {"mean", "std"} <= set(dict(tv.named_buffers()))


def test_too_small_input_message():
    with pytest.raises(ModelError) as err:
        check_input_size("squeezenet", 8)
    msg = str(err.value)
    assert msg.startswith("image size 8 is too small for squeezenet1_1: it needs at least ")
    assert "--image-size" in msg and "--small-input" in msg
    need = create_model("squeezenet1_1", 2).min_input_size
    assert check_input_size("squeezenet1_1", need) == need
    model = create_model("squeezenet1_1", 2)
    model(torch.rand(1, 3, need, need))  # the minimum really works
    with pytest.raises(RuntimeError):
        model.eval()(torch.rand(1, 3, need - 1, need - 1))
    assert check_input_size(create_model("resnet18", 2), 32) >= 1
    assert check_input_size("squeezenet1_1", 16, small_input=True) < need


def test_bad_arguments():
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("resnet18", num_classes=0)
    with pytest.raises(ConfigError, match="drop_rate"):
        create_model("resnet18", num_classes=2, drop_rate=1.5)


def test_drop_rate_keeps_keys():
    plain = create_model("shufflenet_v2_x1_0", 2)
    drop = create_model("shufflenet_v2_x1_0", 2, drop_rate=0.3)
    assert list(plain.state_dict()) == list(drop.state_dict())
    assert create_model("resnet18", 2, drop_rate=0.3).net.drop_rate == 0.3


@pytest.mark.parametrize(
    ("name", "small"),
    [
        ("resnet18", True),
        ("mobilenetv2_100", False),
        ("squeezenet1_1", False),
        ("resnet18_quantized", True),
        ("tf_efficientnet_lite0", True),
    ],
)
def test_safetensors_round_trip(tmp_path, name, small):
    torch.manual_seed(1)
    model = create_model(name, num_classes=5, small_input=small)
    with torch.no_grad():  # non-trivial BN statistics
        model.train()(torch.rand(4, 3, 48, 48))
    model.eval()
    path = tmp_path / "best.safetensors"
    save_file(model.state_dict(), str(path))
    torch.manual_seed(2)
    again = create_model(name, num_classes=5, small_input=small).eval()
    again.load_state_dict(load_file(str(path)))
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    # the same file through load_weights (a Classifier checkpoint: 'net.' prefix, mean/std buffers)
    third = create_model(name, num_classes=5, small_input=small).eval()
    report = load_weights(third, path)
    assert report.method == "name" and report.head_loaded
    with torch.no_grad():
        assert torch.equal(model(x), third(x))


def test_quantizable_resnet_is_float_and_fusable():
    model = create_model("resnet18_quantized", num_classes=3, small_input=True).eval()
    assert hasattr(model.net, "quant") and hasattr(model.net, "dequant")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.net.fuse_model()
        after = model(x)
    assert torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize(("name", "small"), [("mobilenetv2_100", False), ("squeezenet1_1", False)])
def test_channels_last_computes_the_same_and_saves_a_layout_free_file(tmp_path, name, small):
    """NHWC is a memory layout only: the same logits (to float rounding), a file that loads into
    an NCHW model with identical outputs, and back to NCHW on request."""
    from semicompact.artifacts import ModelCard, load_model, save_model

    torch.manual_seed(1)
    model = create_model(name, num_classes=3, small_input=small).eval()
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        before = model(x)
        fast = model.set_channels_last()
        assert fast is model and model.channels_last
        convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
        assert not convs[0].is_contiguous()  # the stem (3 x 3 over 3 channels) really is NHWC
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
        card = ModelCard(model=name, classes=["a", "b", "c"], image_size=48, small_input=small)
        save_model(tmp_path / "m.safetensors", model, card)
        loaded, _ = load_model(tmp_path / "m.safetensors")
        assert not loaded.channels_last
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
        model.set_channels_last(False)
        assert all(m.weight.is_contiguous() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
