"""The two-branch network: shapes, last stride, frozen biases, eval output, weights loading."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cacl.errors import CaclError
from cacl.models import CACLNet, build_backbone, load_weights_file, use_channels_last
from cacl.models.backbone import WeightsError


@pytest.mark.parametrize("name,channels", [("resnet18", 512), ("resnet50", 2048)])
def test_last_stride_one_keeps_16x8_maps(name, channels):
    trunk = build_backbone(name, "none", last_stride=1).eval()
    with torch.no_grad():
        out = trunk(torch.zeros(1, 3, 256, 128))
    assert out.shape == (1, channels, 16, 8)
    trunk2 = build_backbone(name, "none", last_stride=2).eval()
    with torch.no_grad():
        assert trunk2(torch.zeros(1, 3, 256, 128)).shape[-2:] == (8, 4)


def test_training_outputs_and_eval_output():
    torch.manual_seed(0)
    net = CACLNet("resnet18", "none")
    colour, gray = torch.randn(4, 3, 64, 32), torch.randn(4, 3, 64, 32)
    out = net(colour, gray)
    assert set(out) == {"pooled", "x", "z", "x_tilde"}
    for key in ("x", "z", "x_tilde"):
        assert out[key].shape == (4, 512)
        torch.testing.assert_close(out[key].norm(dim=1), torch.ones(4))
    net.eval()
    x = net(colour)
    assert isinstance(x, torch.Tensor) and x.shape == (4, 512)


def test_branches_do_not_share_weights_and_biases_are_frozen():
    net = CACLNet("resnet18", "none")
    p1 = dict(net.branch1.named_parameters())
    p2 = dict(net.branch2.named_parameters())
    assert all(p1[k].data_ptr() != p2[k].data_ptr() for k in p1)
    assert not net.branch1.neck.bias.requires_grad
    assert not net.predictor.bn.bias.requires_grad
    assert net.branch1.neck.weight.requires_grad


def test_ablation_switches():
    net = CACLNet("resnet18", "none", gray_branch=False, predictor=False)
    assert net.branch2 is None and net.predictor is None
    out = net(torch.randn(2, 3, 64, 32))
    assert torch.equal(out["z"], out["x"]) and "x_tilde" not in out
    with pytest.raises(ValueError, match="no gray branch"):
        net(torch.randn(2, 3, 64, 32), torch.randn(2, 3, 64, 32))


def test_local_weights_file_round_trip(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    trunk = build_backbone("resnet18", str(path))
    torch.testing.assert_close(trunk.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        build_backbone("resnet18", str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(WeightsError, match="missing"):
        load_weights_file(torchvision.models.resnet50(weights=None), wrong)
    with pytest.raises(CaclError, match="unknown backbone"):
        build_backbone("not_a_backbone")


def test_imagenet_download_failure_names_the_path_option(monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(
        torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", fail
    )
    with pytest.raises(WeightsError, match="model.pretrained=PATH"):
        build_backbone("resnet18", "imagenet")


def test_calibrated_neck_matches_batch_statistics():
    """After calibrate_neck on a set of pooled features, eval mode standardises them exactly as
    train mode does with that set as the batch (up to the biased / unbiased variance)."""
    torch.manual_seed(0)
    net = CACLNet("resnet18", "none", gray_branch=False, predictor=False)
    branch = net.branch1
    pooled = torch.randn(64, branch.feat_dim) * 3 + 5
    branch.eval()
    raw = branch.head(pooled)  # uncalibrated: mean 0 / var 1, i.e. the raw pooled direction
    assert torch.allclose(raw, torch.nn.functional.normalize(pooled, dim=1), atol=1e-5)
    branch.calibrate_neck(pooled)
    calibrated = branch.head(pooled)
    expected = (pooled - pooled.mean(0)) / torch.sqrt(pooled.var(0) + branch.neck.eps)
    assert torch.allclose(calibrated, torch.nn.functional.normalize(expected, dim=1), atol=1e-5)
    branch.train()
    batch_stats = branch.head(pooled)  # train mode: biased variance of this batch
    assert torch.allclose(calibrated, batch_stats, atol=5e-3)
    assert not torch.allclose(raw, batch_stats, atol=5e-2)


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_channels_last_gives_the_same_outputs_and_gradients(backbone, dtype):
    """In float64 the layout changes nothing but rounding (a check of the semantics); float32
    runs oneDNN's NHWC kernels, whose rounding a deep random network amplifies in the gradients,
    so only the outputs are compared there."""
    torch.manual_seed(0)
    plain = CACLNet(backbone, "none").to(dtype)
    fast = CACLNet(backbone, "none").to(dtype)
    fast.load_state_dict(plain.state_dict())
    use_channels_last(fast)
    conv = next(p for p in fast.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()
    colour, gray = torch.randn(4, 3, 64, 32, dtype=dtype), torch.randn(4, 3, 64, 32, dtype=dtype)
    out_plain, out_fast = plain(colour, gray), fast(colour, gray)
    tol = {"rtol": 1e-9, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for key in ("x", "z", "x_tilde"):
        torch.testing.assert_close(out_fast[key], out_plain[key], **tol)
    if dtype == torch.float64:
        (out_plain["z"].sum() + out_plain["x_tilde"].sum()).backward()
        (out_fast["z"].sum() + out_fast["x_tilde"].sum()).backward()
        for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-8, atol=1e-10, msg=name)
    plain.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(colour), plain(colour), **tol)


def test_lite0_input_convention_matches_its_stem_statistics():
    """The stem BatchNorm's running mean is E[conv(x)] = conv(E[x]) over the data it was trained
    on: the declared convention must predict it (ImageNet's mean / std would predict zeros)."""
    from cacl.data.transforms import IMAGENET_MEAN
    from cacl.models.backbone import input_normalization
    from cacl.models.lite import packaged_weights_path

    path = packaged_weights_path("efficientnet_lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    kernel_sums = state["_conv_stem.weight"].sum(dim=(2, 3))  # (32, 3)
    running_mean = state["_bn0.running_mean"]
    mean, std = input_normalization("efficientnet_lite0")
    expected_input = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std)
    predicted = kernel_sums @ expected_input
    corr = torch.corrcoef(torch.stack([predicted, running_mean]))[0, 1]
    assert corr > 0.95
    assert (predicted - running_mean).abs().mean() < 0.6 * running_mean.abs().mean()
    assert input_normalization("resnet50") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_input_adapter_maps_imagenet_input_to_the_backbone_convention():
    from cacl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from cacl.models.backbone import build_backbone

    trunk = build_backbone("efficientnet_lite0", "none", input_norm="auto")
    raw = torch.rand(2, 3, 8, 4)
    imagenet = (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(trunk.input_adapter(imagenet), (raw - 0.5) / 0.5)
    assert not any("input_adapter" in k for k in trunk.state_dict())  # nothing new to save
    assert build_backbone("efficientnet_lite0", "none", input_norm="imagenet").input_adapter is None


def test_configs_saved_before_input_norm_load_as_imagenet():
    from cacl.config import Config, config_from_dict

    saved = Config().to_dict()
    del saved["model"]["input_norm"]
    assert config_from_dict(saved).model.input_norm == "imagenet"
    assert config_from_dict(Config().to_dict()).model.input_norm == "auto"
