"""The optimiser and the learning-rate schedule of ``cfg.optim``.

The paper's: Adam, lr 3.5e-4, weight decay 5e-4 on every trainable tensor, x0.1 every 20 epochs.
The ViT recipes add what ``optim.name`` (``adamw``, ``sgd`` with momentum), ``optim.decay_all``
(no weight decay on biases, normalisation weights, position embeddings and class tokens, as timm
and TransReID exempt them) and ``optim.warmup_epochs`` (a linear warm-up from ``lr *
warmup_factor``) select. Frozen tensors (the necks' biases) are never optimised.
"""

from __future__ import annotations

import torch
from torch import nn

from cacl.config import OptimConfig

#: names of 1-d parameters that are not biases / norm weights but still exempt (ViT tokens)
NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "dist_token", "mask_token")


def is_decay_exempt(name: str, param: torch.Tensor) -> bool:
    """Biases and normalisation weights (every tensor of one dimension), position embeddings and
    class / register tokens."""
    return param.ndim <= 1 or name.endswith(".bias") or any(t in name for t in NO_DECAY_NAMES)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """The trainable parameters, in one group (``decay_all``) or two (decay / no decay)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.decay_all:
        return [{"params": [p for _, p in named], "weight_decay": cfg.weight_decay}]
    decay = [p for n, p in named if not is_decay_exempt(n, p)]
    exempt = [p for n, p in named if is_decay_exempt(n, p)]
    return [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": exempt, "weight_decay": 0.0},
    ]


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """The learning rate of ``epoch`` (0-based) as a multiple of ``optim.lr``: a linear warm-up
    from ``warmup_factor`` to 1 over ``warmup_epochs``, times ``lr_gamma`` every ``step_size``.

    >>> cfg = OptimConfig(warmup_epochs=2, warmup_factor=0.1, step_size=3, lr_gamma=0.5)
    >>> [round(lr_factor(e, cfg), 3) for e in range(5)]
    [0.1, 0.55, 1.0, 0.5, 0.5]
    """
    step = cfg.lr_gamma ** (epoch // cfg.step_size) if cfg.step_size > 0 else 1.0
    if epoch < cfg.warmup_epochs:
        return (cfg.warmup_factor + (1 - cfg.warmup_factor) * epoch / cfg.warmup_epochs) * step
    return step


def build_optimizer(
    model: nn.Module, cfg: OptimConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimiser and its per-epoch schedule. Without warm-up the schedule is a ``StepLR``
    (as runs saved before warm-up existed resume into), with it a ``LambdaLR`` of
    :func:`lr_factor`."""
    groups = param_groups(model, cfg)
    if cfg.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    elif cfg.name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        optimizer = torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.warmup_epochs == 0:
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(cfg.step_size, 1), gamma=cfg.lr_gamma
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg))
    return optimizer, scheduler
