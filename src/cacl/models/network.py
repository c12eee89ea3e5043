"""The two-branch CACL network (docs/method.md, "Network").

- Branch 1 ``F(.|Θ)`` sees colour views; its feature is ``x = normalise(BN_neck(pool(F(I))))``.
- Branch 2 ``F'(.|Θ')`` has the same architecture and separate weights and sees gray-scale views:
  ``x~``.
- The predictor ``G(.|Ψ)`` (Linear + BatchNorm1d) on branch 1's pooled feature gives ``z``.

In eval mode the network returns branch 1's ``x`` only: that is the re-ID feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cacl.models import lite
from cacl.models.backbone import build_backbone


def frozen_bias_bn(dim: int) -> nn.BatchNorm1d:
    """BatchNorm1d with weight 1 and a bias frozen at 0 (the "BN neck")."""
    bn = nn.BatchNorm1d(dim)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return bn


class Branch(nn.Module):
    """Backbone + pooling + BN neck. Returns ``(pooled, x)``, ``x`` normalised.

    A backbone that returns maps (B, C, h, w) is pooled by global average pooling; a timm trunk
    returns its own pooled features (B, C): the mean of its maps for CNNs, the CLS token for
    ViTs (:mod:`cacl.models.timm_backbone`). ``options`` go to
    :func:`~cacl.models.backbone.build_backbone` (image_size, patch_stride, ...).
    """

    def __init__(
        self,
        backbone: str,
        pretrained: str = "none",
        last_stride: int = 1,
        input_norm: str = "auto",
        **options,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, pretrained, last_stride, input_norm, **options)
        self.feat_dim = self.backbone.out_channels
        self.neck = frozen_bias_bn(self.feat_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        pooled = features if features.dim() == 2 else F.adaptive_avg_pool2d(features, 1).flatten(1)
        return pooled, self.head(pooled)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """The normalised feature ``x`` of pooled features (BN neck, then L2 normalisation)."""
        return F.normalize(self.neck(pooled), dim=1)

    @torch.no_grad()
    def calibrate_neck(self, pooled: torch.Tensor) -> None:
        """Set the neck's running statistics to the mean and (unbiased) variance of ``pooled``.

        A new neck starts with mean 0 / variance 1, so eval-mode features (the memory
        initialisation) are raw pooled features while train-mode features are standardised by
        batch statistics: the two disagree until the running statistics catch up. Calibrating on
        the training set's pooled features first makes them agree from the first step.
        """
        pooled = pooled.to(self.neck.running_mean.device, torch.float32)
        self.neck.running_mean.copy_(pooled.mean(0))
        self.neck.running_var.copy_(pooled.var(0, unbiased=True) if len(pooled) > 1 else 1.0)


class Predictor(nn.Module):
    """``G(.|Ψ)``: Linear(D, D) + BatchNorm1d (bias frozen at 0), output normalised."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.bn = frozen_bias_bn(dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.bn(self.fc(pooled)), dim=1)


class CACLNet(nn.Module):
    """Colour branch, optional gray branch and optional predictor.

    ``forward(colour, gray=None)`` in training mode returns a dict with ``pooled``, ``x`` and ``z``
    (branch 1) and ``x_tilde`` (branch 2, when ``gray`` is given). In eval mode it returns ``x``.
    ``gray_branch=False`` gives the one-branch cluster-memory baseline; ``predictor=False`` uses
    ``x`` in place of ``z``.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: str = "none",
        last_stride: int = 1,
        gray_branch: bool = True,
        predictor: bool = True,
        input_norm: str = "auto",
        **options,
    ) -> None:
        super().__init__()
        self.branch1 = Branch(backbone, pretrained, last_stride, input_norm, **options)
        self.feat_dim = self.branch1.feat_dim
        self.branch2 = (
            Branch(backbone, pretrained, last_stride, input_norm, **options)
            if gray_branch
            else None
        )
        self.predictor = Predictor(self.feat_dim) if predictor else None
        conv = getattr(self.branch1.backbone, "convention", None)
        #: the resize interpolation of the backbone's input convention (data pipeline)
        self.interpolation = conv.interpolation if conv and input_norm == "auto" else "bicubic"

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As :meth:`nn.Module.load_state_dict`; a state dict saved with cacl's former
        hand-written EfficientNet-Lite trunk is renamed to the timm-based one first."""
        trunk = getattr(self.branch1.backbone, "model", None)
        if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "conv_stem"):
            state_dict = lite.upgrade_state_dict(dict(state_dict), lite.stage_lengths(trunk))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(
        self, colour: torch.Tensor, gray: torch.Tensor | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        pooled, x = self.branch1(colour)
        if not self.training:
            return x
        out = {"pooled": pooled, "x": x}
        out["z"] = self.predictor(pooled) if self.predictor is not None else x
        if gray is not None:
            if self.branch2 is None:
                raise ValueError("this network has no gray branch (model.gray_branch is false)")
            out["x_tilde"] = self.branch2(gray)[1]
        return out

    @torch.no_grad()
    def extract(self, images: torch.Tensor, branch: int = 1) -> torch.Tensor:
        """Normalised features of ``branch`` (1 colour, 2 gray) in the current mode."""
        module = self.branch1 if branch == 1 else self.branch2
        if module is None:
            raise ValueError("this network has no gray branch")
        return module(images)[1]


def network_interpolation(network: nn.Module) -> str:
    """The resize interpolation ``network`` (a CACL network, maybe DDP-wrapped) expects."""
    return getattr(getattr(network, "module", network), "interpolation", "bicubic")


def use_channels_last(module: nn.Module) -> nn.Module:
    """Store ``module``'s 4-d weights in NHWC (channels-last) order, in place; returns it.

    Convolutions then run in that layout whatever the input's layout: the outputs are the same up
    to float rounding, and on CPU (oneDNN) training steps measured 1.3-1.8x and inference 1.4x
    faster for EfficientNet-Lite0 at 128x64 (``benchmarks/bench_backbones.py --channels-last``).
    """
    return module.to(memory_format=torch.channels_last)
