"""timm backbones: every weight layout lands in the right tensors (features compared with the
library's own model on the same file), position embeddings on a person-shaped grid, input
conventions, overlapping patches, and the errors a user sees."""

from __future__ import annotations

import pickle

import pytest
import timm
import torch
import torchvision

from cacl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cacl.models import CACLNet, build_backbone
from cacl.models import timm_backbone as tb
from cacl.models.vit import infer_grid, resample_pos_embed
from cacl.models.weights import WeightsError

VIT = "vit_small_patch16_224"


def _normalise(x01: torch.Tensor, mean, std) -> torch.Tensor:
    return (x01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _timm_pooled(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().forward_head(model.forward_features(images), pre_logits=True)


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """A random-init ViT-S/16 (224) saved as timm saves it, with its classifier."""
    torch.manual_seed(0)
    model = timm.create_model(VIT, pretrained=False).eval()
    path = tmp_path_factory.mktemp("vit") / "vit_s16.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_timm_file_gives_the_features_of_timms_own_loader(vit_file):
    """Our door and timm's (``pretrained_cfg_overlay=dict(file=...)``) give the same features."""
    path, _ = vit_file
    ours = build_backbone(VIT, str(path), image_size=(224, 224), input_norm="imagenet").eval()
    library = timm.create_model(
        VIT, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=str(path))
    )
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), _timm_pooled(library, images), rtol=0, atol=0)
    report = ours.load_report
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == ["head.weight", "head.bias"]
    assert len(report.sha256) == 64


@pytest.mark.parametrize("layout", ["safetensors", "dino_teacher", "transreid_model"])
def test_wrapped_layouts_load_into_the_same_tensors(vit_file, tmp_path, layout):
    path, source = vit_file
    state = source.state_dict()
    if layout == "safetensors":
        from safetensors.torch import save_file

        target = tmp_path / "vit.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    elif layout == "dino_teacher":  # DINO / LUPerson: teacher, DataParallel, backbone + head
        wrapped = {f"module.backbone.{k}": v for k, v in state.items() if not k.startswith("head")}
        wrapped["module.head.mlp.0.weight"] = torch.zeros(8, 384)
        wrapped["module.head.last_layer.weight_g"] = torch.zeros(1, 8)
        target = tmp_path / "dino.pth"
        torch.save({"teacher": wrapped, "student": {}, "epoch": 100}, target)
    else:  # TransReID-SSL's fine-tuned models: {"model": {"base.xxx": ...}}
        target = tmp_path / "transreid.pth"
        torch.save({"model": {f"base.{k}": v for k, v in state.items()}}, target)
    ours = build_backbone(VIT, str(target), image_size=(224, 224), input_norm="imagenet")
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(images), _timm_pooled(source, images))


def test_position_embeddings_resampled_like_timms_filter(vit_file):
    """From the square 14 x 14 grid to 256 x 128's 16 x 8: what timm itself loads."""
    path, _ = vit_file
    ours = build_backbone(VIT, str(path), image_size=(256, 128))
    library = timm.create_model(
        VIT,
        pretrained=True,
        num_classes=0,
        img_size=(256, 128),
        pretrained_cfg_overlay=dict(file=str(path)),
    )
    assert ours.model.pos_embed.shape == (1, 1 + 16 * 8, 384)
    torch.testing.assert_close(ours.model.pos_embed, library.pos_embed, rtol=0, atol=0)


def _ramp(rows: int, cols: int, dim: int = 4) -> torch.Tensor:
    """A position embedding whose channel 0 is the row centre, channel 1 the column centre."""
    r = (torch.arange(rows) + 0.5) / rows
    c = (torch.arange(cols) + 0.5) / cols
    grid = torch.zeros(rows, cols, dim)
    grid[..., 0] = r[:, None]
    grid[..., 1] = c[None, :]
    cls = torch.full((1, dim), 7.0)
    return torch.cat([cls, grid.reshape(rows * cols, dim)])[None]


def test_resample_keeps_rows_and_columns_apart_on_non_square_grids():
    assert infer_grid(196, (16, 8)) == (14, 14)
    assert infer_grid(128, (16, 8)) == (16, 8)  # LUPerson's 256 x 128 checkpoints
    assert infer_grid(210, (16, 8)) == (21, 10)
    source = _ramp(16, 8)
    assert resample_pos_embed(source, (16, 8)) is source
    out = resample_pos_embed(source, (21, 10))
    assert out.shape == (1, 1 + 210, 4)
    torch.testing.assert_close(out[0, 0], source[0, 0])  # the CLS token is not a position
    grid = out[0, 1:].reshape(21, 10, 4)
    expected = _ramp(21, 10)[0, 1:].reshape(21, 10, 4)
    # a linear ramp survives interpolation away from the borders; a transposed grid would not
    torch.testing.assert_close(grid[3:-3, 2:-2, :2], expected[3:-3, 2:-2, :2], atol=2e-3, rtol=0)


def test_luperson_16x8_checkpoint_and_overlapping_patches(tmp_path):
    """A TransReID-SSL / LUPerson ViT-S saved at 256 x 128 (16 x 8 positions) loads into the
    same grid unchanged, and into stride 12's 21 x 10 grid through the resample."""
    torch.manual_seed(0)
    source = timm.create_model(VIT, pretrained=False, img_size=(256, 128), num_classes=0)
    path = tmp_path / "vit_small_cfs_lup.pth"
    teacher = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    teacher["head.last_layer.weight"] = torch.zeros(4, 4)
    torch.save({"teacher": teacher}, path)
    same = build_backbone(VIT, str(path), image_size=(256, 128))
    torch.testing.assert_close(same.model.pos_embed, source.pos_embed, rtol=0, atol=0)
    strided = build_backbone(VIT, str(path), image_size=(256, 128), patch_stride=12).eval()
    assert strided.model.patch_embed.grid_size == (21, 10)
    assert strided.model.patch_embed.proj.stride == (12, 12)
    expected = resample_pos_embed(source.pos_embed.detach(), (21, 10), 1, (16, 8))
    torch.testing.assert_close(strided.model.pos_embed.detach(), expected)
    with torch.no_grad():
        assert strided(torch.randn(1, 3, 256, 128)).shape == (1, 384)
    small = build_backbone(VIT, str(path), image_size=(128, 64))
    assert small.model.pos_embed.shape == (1, 1 + 8 * 4, 384)


@pytest.fixture(scope="module")
def clip_model():
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    return model, open_clip


def _clip_check(ours, clip, open_clip) -> None:
    """Our trunk fed ImageNet-normalised images, projected by CLIP's ``proj``, equals open_clip's
    image features of the CLIP-normalised images; without the input adapter it does not."""
    x01 = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    imagenet = _normalise(x01, IMAGENET_MEAN, IMAGENET_STD)
    clip_input = _normalise(x01, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    with torch.no_grad():
        expected = clip.visual(clip_input)
        got = ours.eval()(imagenet) @ clip.visual.proj
        adapter, ours.input_adapter = ours.input_adapter, None
        wrong = ours(imagenet) @ clip.visual.proj
        ours.input_adapter = adapter
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (wrong - expected).abs().max() > 1e-2  # CLIP weights must not see ImageNet input


def test_open_clip_and_openai_layouts_with_clips_own_normalisation(clip_model, tmp_path):
    clip, open_clip = clip_model
    name = "vit_base_patch16_clip_224.openai"
    state = {f"visual.{k}": v for k, v in clip.visual.state_dict().items()}
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(state, path)
    ours = build_backbone(name, str(path), image_size=(224, 224))
    assert ours.out_channels == 768  # the CLS token before CLIP's projection
    _clip_check(ours, clip, open_clip)

    class Wrapper(torch.nn.Module):  # the layout of OpenAI's TorchScript files (ViT-B-16.pt)
        def __init__(self, visual):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            return self.visual(x)

    with torch.no_grad():
        scripted = torch.jit.trace(
            Wrapper(clip.visual), torch.rand(1, 3, 224, 224), check_trace=False
        )
    archive = tmp_path / "ViT-B-16.pt"
    scripted.save(str(archive))
    _clip_check(build_backbone(name, str(archive), image_size=(224, 224)), clip, open_clip)


def test_torchvision_resnet_file_into_timms_resnet(tmp_path):
    """A torchvision state dict loads into ``timm/resnet18`` and gives the features of cacl's
    torchvision trunk on the same file (both with last stride 1)."""
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    ours_tv = build_backbone("resnet18", str(path)).eval()
    ours_timm = build_backbone("timm/resnet18", str(path)).eval()
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        maps = ours_tv(images)
        assert maps.shape[-2:] == (4, 2)  # last stride 1
        torch.testing.assert_close(ours_timm(images), maps.mean((2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name,mean,adapter",
    [
        ("vit_base_patch16_clip_224.openai", (0.48145466, 0.4578275, 0.40821073), True),
        ("vit_small_patch14_dinov2.lvd142m", IMAGENET_MEAN, False),
        ("vit_small_patch16_224", (0.5, 0.5, 0.5), True),
        ("efficientnet_lite0", (0.5, 0.5, 0.5), True),
        ("resnet50", IMAGENET_MEAN, False),
    ],
)
def test_input_conventions_come_from_the_pretrained_config(name, mean, adapter):
    from cacl.models.backbone import convention

    conv = convention(name)
    assert conv.mean == pytest.approx(mean) and conv.interpolation == "bicubic"
    net = CACLNet(name, "none", gray_branch=False, predictor=False, image_size=(64, 32))
    trunk = net.branch1.backbone
    assert (getattr(trunk, "input_adapter", None) is not None) == adapter
    if adapter:
        x01 = torch.rand(1, 3, 4, 4)
        torch.testing.assert_close(
            trunk.input_adapter(_normalise(x01, IMAGENET_MEAN, IMAGENET_STD)),
            _normalise(x01, conv.mean, conv.std),
        )


def test_dinov2_builds_on_a_person_grid():
    net = CACLNet(
        "vit_small_patch14_dinov2.lvd142m", "none", gray_branch=False, image_size=(128, 64)
    )
    assert net.branch1.backbone.model.patch_embed.grid_size == (9, 4)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 128, 64)).shape == (1, 384)


def test_global_pool_avg_differs_from_the_cls_token(vit_file):
    path, source = vit_file
    token = build_backbone(VIT, str(path), image_size=(224, 224), input_norm="imagenet")
    avg = build_backbone(
        VIT, str(path), image_size=(224, 224), input_norm="imagenet", global_pool="avg"
    )
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = source.eval().forward_features(images)
        torch.testing.assert_close(token.eval()(images), tokens[:, 0])
        torch.testing.assert_close(avg.eval()(images), tokens[:, 1:].mean(1))


def test_weight_file_errors_say_what_to_fix(vit_file, tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        build_backbone(VIT, str(tmp_path / "missing.pth"))
    resnet = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    with pytest.raises(WeightsError, match="missing .*same architecture"):
        build_backbone(VIT, str(resnet))
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        build_backbone(VIT, str(broken))
    unsafe = tmp_path / "unsafe.pth"
    with open(unsafe, "wb") as handle:  # a pickle that would call a function when loaded
        pickle.dump({"model": pickle.loads(pickle.dumps(print))}, handle)
    with pytest.raises(WeightsError, match="weights_only"):
        build_backbone(VIT, str(unsafe))
    with pytest.raises(Exception, match="unknown backbone"):
        build_backbone("vit_not_a_model", "none")


def test_default_weights_without_network_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(tb, "_hub_cached_file", lambda name: None)
    monkeypatch.setattr(tb, "_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(WeightsError, match="cannot reach.*model.pretrained=PATH"):
        build_backbone("vit_small_patch16_224.augreg_in21k_ft_in1k", "imagenet")


def test_dinov2_release_layout_loads_like_timms_own_loader(tmp_path):
    """DINOv2's released files (a 37 x 37 grid for 518 x 518, a ``mask_token``) load into a
    person-shaped grid with the tensors timm's own loader gives for the same file."""
    name = "vit_small_patch14_dinov2.lvd142m"
    torch.manual_seed(0)
    source = timm.create_model(name, pretrained=False, num_classes=0)
    state = dict(source.state_dict())
    state["mask_token"] = torch.zeros(1, 384)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)
    ours = build_backbone(name, str(path), image_size=(256, 128)).eval()
    library = timm.create_model(
        name,
        pretrained=True,
        num_classes=0,
        img_size=(256, 128),
        pretrained_cfg_overlay=dict(file=str(path)),
    ).eval()
    assert ours.model.patch_embed.grid_size == (18, 9)
    images = torch.randn(1, 3, 256, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), _timm_pooled(library, images))


@pytest.mark.parametrize(
    "name", ["resnet18.a1_in1k", "convnext_atto", "mobilenetv3_small_100", "efficientnet_b0"]
)
@pytest.mark.parametrize("last_stride,grid", [(1, (8, 4)), (2, (4, 2))])
def test_cnn_families_get_last_stride_one(name, last_stride, grid):
    """A 128 x 64 image gives 8 x 4 maps with last stride 1 in every CNN family (plain stride 1
    for ResNets / EfficientNets / MobileNets, timm's output_stride=16 for the others)."""
    trunk = build_backbone(name, "none", last_stride=last_stride).eval()
    with torch.no_grad():
        maps = trunk.model.forward_features(torch.randn(1, 3, 128, 64))
        assert maps.shape[-2:] == grid
        pooled = trunk(torch.randn(2, 3, 128, 64))
    assert pooled.shape == (2, trunk.out_channels)
