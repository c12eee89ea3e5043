"""Rebuild a trained network from a checkpoint file or a run directory."""

from __future__ import annotations

import os
from typing import Any

import torch

from cacl.checkpoints.io import BEST, CheckpointError, load_checkpoint
from cacl.config import Config, config_from_dict
from cacl.models import CACLNet, use_channels_last


def load_network(
    checkpoint: str | os.PathLike,
    device: torch.device | str = "cpu",
    *,
    channels_last: bool = True,
) -> tuple[CACLNet, Config, dict[str, Any]]:
    """The network of ``checkpoint`` in eval mode, its config, and the checkpoint's metadata.

    ``channels_last`` stores the convolution weights in NHWC order (see
    :func:`cacl.models.use_channels_last`); export passes ``False`` to trace the plain layout.
    """
    state = load_checkpoint(checkpoint, prefer=BEST)
    if "model" not in state or "config" not in state:
        raise CheckpointError(f"{state['_path']} holds no cacl model")
    cfg = config_from_dict(state["config"])
    m = cfg.model
    net = CACLNet(
        m.backbone,
        "none",
        m.last_stride,
        m.gray_branch,
        m.predictor,
        m.input_norm,
        **cfg.network_options(),
    )
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{state['_path']} does not match its own config: {exc}") from exc
    meta = {
        k: v for k, v in state.items() if k not in ("model", "optimizer", "memory", "memory_tilde")
    }
    net = net.to(device).eval()
    if channels_last:
        use_channels_last(net)
    return net, cfg, meta
