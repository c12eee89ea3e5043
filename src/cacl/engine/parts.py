"""The pieces a :class:`~cacl.engine.trainer.Trainer` is built from and writes: the network and
its optimiser, the memory-bank features of a branch, the model checkpoint and ``results.json``.
Functions of their arguments only; the trainer holds the state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cacl import distributed
from cacl.clustering.tracklets import Tracklets, cannot_link_pairs, check_tracklets
from cacl.config import Config
from cacl.data.default import resolve_dataset
from cacl.data.transforms import test_transform
from cacl.data.types import ReidDataset
from cacl.engine.preflight import check_enough_data
from cacl.errors import CaclError, TrainingError
from cacl.evaluation.extract import extract_features
from cacl.models import CACLNet, use_channels_last


def load_train_data(cfg: Config) -> tuple[ReidDataset, np.ndarray, np.ndarray | None]:
    """The dataset of ``cfg.data`` (generated once per machine for the synthetic set), the
    camera of every training image, and the true identities where some images have one (-1:
    unknown; for the statistics, and for ``train.supervised``)."""
    t = cfg.train
    with distributed.local_main_first():
        dataset = resolve_dataset(**cfg.data.dataset_options())
    check_enough_data(len(dataset.train), t.batch_size, cfg.cluster.min_samples)
    camids = np.array([s.camid for s in dataset.train])
    pids = np.array([s.pid for s in dataset.train])
    true_pids = pids if np.any(pids >= 0) else None
    if t.supervised and true_pids is None:
        raise CaclError("train.supervised=true needs identities in the training file names")
    return dataset, camids, true_pids


def tracklet_constraints(
    dataset: ReidDataset, camids: np.ndarray, crossing_iou: float | None = None
) -> Tracklets | None:
    """The tracklets of the training images (ids 0..T-1, cannot-link pairs, each crop's time on
    its camera's clock) when the data has them (``tracklets.csv``), else None; the pairs are
    empty when the crops have no times. Made whatever ``cluster.constraints`` is: the
    statistics of every run on tracklets use them. With ``crossing_iou`` (``cluster.split_iou``
    where ``cluster.split_crossings`` is not off) they carry their crossing crops, found here
    once."""
    if not dataset.has_tracklets:
        return None

    sightings = [dataset.sightings.get(s.path) for s in dataset.train]
    ids = check_tracklets(
        np.array([-1 if x is None else x.tracklet for x in sightings]), len(sightings)
    )
    times = np.array([np.nan if x is None else x.time for x in sightings], dtype=np.float64)
    pairs = cannot_link_pairs(ids, camids, times)
    boxes = np.full((len(sightings), 5), np.nan)
    for row, x in enumerate(sightings):
        if x is not None and x.box is not None and x.frame >= 0:
            boxes[row] = (x.frame, *x.box)
    tracklets = Tracklets(ids, pairs, times, boxes)
    if crossing_iou is None:
        return tracklets
    from cacl.engine.relabel import crossing_mask

    return tracklets._replace(crossings=crossing_mask(tracklets, camids, crossing_iou))


def describe_run(
    cfg: Config, dataset: ReidDataset, device: torch.device, world_size: int, batch: str, amp: str
) -> str:
    """The log line that opens a training run."""
    t, m = cfg.train, cfg.model
    processes = f" x {world_size} processes" if world_size > 1 else ""
    sync_bn = ", SyncBN" if m.sync_bn and world_size > 1 else ""
    return (
        f"training {m.backbone} on {dataset.name} ({len(dataset.train)} images), device "
        f"{device}{processes}, {batch}, {t.epochs} epochs x {t.iters} iters, {amp}{sync_bn}"
    )


def step_failure(exc: Exception, cfg: Config, epoch: int, step: int, output: Path) -> TrainingError:
    """A failed training step (NaN / exploding loss) as one error that says where the run stands
    and what to change."""
    last = output / "last.pt"
    where = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint yet"
    return TrainingError(
        f"epoch {epoch + 1}, step {step + 1}: {exc}; {where}. Try a lower "
        f"optim.lr (now {cfg.optim.lr:g}) or train.max_grad_norm=5"
    )


def build_network(cfg: Config, device: torch.device) -> CACLNet:
    """The two-branch network of ``cfg.model`` on ``device`` (NHWC weights with
    ``train.channels_last``). Records the SHA-256 of a ``model.pretrained`` file in ``cfg``."""
    m = cfg.model
    net = CACLNet(
        m.backbone,
        m.pretrained,
        m.last_stride,
        m.gray_branch,
        m.predictor,
        m.input_norm,
        **cfg.network_options(),
    )
    report = net.branch1.backbone.load_report
    m.pretrained_sha256 = report.sha256 if report is not None else None
    net.to(device)
    if cfg.train.channels_last:
        use_channels_last(net)
    return net


def build_optimizer(
    model: torch.nn.Module, cfg: Config
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimiser and schedule of ``cfg.optim`` (:mod:`cacl.engine.optim`)."""
    from cacl.engine.optim import build_optimizer as build

    return build(model, cfg.optim)


def branch_features(
    model: CACLNet,
    branch: int,
    dataset: ReidDataset,
    cfg: Config,
    device: torch.device,
    *,
    calibrate: bool = True,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """L2-normalised features ``x`` (branch 1) or ``x~`` (branch 2, on gray-scale images) of every
    training image: eval mode, test transform (docs/method.md, "Instance memory banks"). With
    ``calibrate`` and ``model.calibrate_neck`` the neck's statistics are set from these images
    first. Every rank of a process group extracts its share.

    Returns an (N, D) CPU tensor of ``dtype`` written batch by batch into storage allocated once
    (the memory bank's, for :meth:`InstanceMemory.from_storage`): float32 pooled features first
    when the neck is calibrated on them (then the features overwrite them in place for float32),
    else the features of each batch go straight into the result.
    """
    d, net = cfg.data, model.branch1 if branch == 1 else model.branch2
    n = len(dataset.train)
    net.eval()
    options = dict(
        device=device,
        batch_size=max(cfg.train.batch_size, 64),
        workers=d.workers,
        desc=f"memory init (branch {branch})",
        progress=progress,
        shard=True,
    )
    transform = test_transform(d.height, d.width, branch == 2, model.interpolation)
    if calibrate and cfg.model.calibrate_neck:
        pooled = torch.empty(n, net.feat_dim)
        # pooled: the neck is calibrated on them, then applied below
        extract_features(
            lambda images: net(images)[0], dataset.train, transform, out=pooled, **options
        )
        net.calibrate_neck(pooled)
        feats = pooled if dtype == torch.float32 else torch.empty(n, net.feat_dim, dtype=dtype)
        with torch.no_grad():
            for a in range(0, n, 4096):  # chunk a is read before it is overwritten
                feats[a : a + 4096] = net.head(pooled[a : a + 4096].to(device)).cpu()
        del pooled
    else:
        feats = torch.empty(n, net.feat_dim, dtype=dtype)
        extract_features(
            lambda images: net(images)[1], dataset.train, transform, out=feats, **options
        )
    net.train()
    return feats


def model_checkpoint(cfg: Config, epoch: int, model: torch.nn.Module, metrics: dict) -> dict:
    """What ``best.pt`` holds: the config, the epoch, the network and its scores."""
    return {
        "format": "cacl-model-v1",
        "config": cfg.to_dict(),
        "epoch": epoch,
        "model": model.state_dict(),
        "metrics": metrics,
    }


def results_record(
    cfg: Config,
    dataset: ReidDataset,
    *,
    best: dict[str, Any],
    initial: dict[str, Any] | None,
    epochs_done: int,
    elapsed: float,
    device: torch.device,
    world_size: int,
    history: list[dict[str, Any]],
    stages: dict[str, float] | None = None,
    plan: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``results.json``: the best epoch's scores, the score before training, the run's facts
    (the seconds of the stages before training, what ``train.budget`` chose) and the per-epoch
    history."""
    best = best if best["epoch"] > 0 else {}
    return {
        "initial_mAP": initial["mAP"] if initial else None,
        "initial": initial,
        "mAP": best.get("mAP"),
        "mINP": best.get("mINP"),
        "rank1": best.get("rank1"),
        "rank5": best.get("rank5"),
        "rank10": best.get("rank10"),
        "best_epoch": best.get("epoch"),
        "epochs_done": epochs_done,
        "wall_seconds": round(elapsed, 1),
        "device": str(device),
        "world_size": world_size,
        "batch_size": cfg.train.batch_size,
        "batch_size_per_process": cfg.train.batch_size // world_size,
        "dataset": {"name": dataset.name, "root": str(dataset.root)},
        "stages": stages or {},
        "budget": plan,
        "history": history,
    }
