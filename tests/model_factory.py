"""Small random-initialised checkpoints, saved the way the trainer saves ``best.pt``."""

from __future__ import annotations

from pathlib import Path

import torch

from cacl.checkpoints.io import atomic_save
from cacl.config import Config
from cacl.models import CACLNet


def save_random_checkpoint(
    path: Path, backbone: str = "resnet18", height: int = 32, width: int = 16, seed: int = 0
) -> Path:
    """A ``cacl-model-v1`` checkpoint of a random ``backbone`` network at ``height`` x ``width``.

    The BN necks get non-trivial running statistics so that eval-mode features depend on them.
    """
    torch.manual_seed(seed)
    cfg = Config()
    cfg.data.height, cfg.data.width = height, width
    cfg.model.backbone, cfg.model.pretrained = backbone, "none"
    net = CACLNet(backbone, "none", cfg.model.last_stride, True, True)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {"format": "cacl-model-v1", "config": cfg.to_dict(), "epoch": 1}
    state["model"] = net.state_dict()
    state["metrics"] = {"mAP": 0.0, "epoch": 1}
    atomic_save(state, path)
    return path
