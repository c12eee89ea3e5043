"""The CACL training loop (METHOD.md): relabel -> train an epoch -> evaluate -> checkpoint.

One :class:`Trainer` holds the state that changes during a run (network, optimiser, scheduler,
the two memory banks, the pseudo labels, history); everything else is pure functions elsewhere.
A checkpoint (``last.pt``) is written atomically after every epoch with all of that state, so
``Trainer.resume(run_dir)`` continues exactly where the run stopped.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cacl.config import Config, apply_overrides, config_from_dict, save_config
from cacl.data.default import resolve_dataset
from cacl.data.image_dataset import TwoViewDataset
from cacl.data.sampler import CameraAwareIdentitySampler
from cacl.data.transforms import colour_view, gray_view, test_transform
from cacl.engine import run_dir as rd
from cacl.engine.checkpoint import (
    BEST,
    LAST,
    atomic_save,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from cacl.engine.evaluate import evaluate_network
from cacl.engine.extract import extract_features
from cacl.engine.labels import (
    cluster_stats,
    describe_clusters,
    identity_classes,
    training_classes,
)
from cacl.engine.step import TrainingError, train_step
from cacl.errors import CaclError
from cacl.memory import InstanceMemory
from cacl.models import CACLNet

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaclError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train CACL as configured by ``cfg`` into the folder ``output``."""

    def __init__(self, cfg: Config, output: str | Path, *, progress: bool = True) -> None:
        self.cfg, self.output, self.progress = cfg, Path(output), progress
        self.output.mkdir(parents=True, exist_ok=True)
        self._log_handler = rd.attach_log_file(self.output)
        save_config(cfg, self.output / rd.CONFIG_FILE)
        t = cfg.train
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        seed_everything(t.seed)
        self.device = resolve_device(t.device)
        self.dataset = resolve_dataset(cfg.data)
        log.info("\n%s", self.dataset.summary())
        train = self.dataset.train
        self.camids = np.array([s.camid for s in train])
        pids = np.array([s.pid for s in train])
        self.true_pids = pids if np.all(pids >= 0) else None
        if t.supervised and self.true_pids is None:
            raise CaclError("train.supervised=true needs identities in the training file names")

        m = cfg.model
        self.model = CACLNet(m.backbone, m.pretrained, m.last_stride, m.gray_branch, m.predictor)
        self.model.to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg.optim.step_size, gamma=cfg.optim.lr_gamma
        )
        self.memory: InstanceMemory | None = None
        self.memory_tilde: InstanceMemory | None = None
        self.classes: np.ndarray | None = None
        self.epoch = 0  # the next epoch to run
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"mAP": -1.0, "epoch": -1}
        self.initial: dict[str, float] | None = None
        self.elapsed = 0.0
        self.scalars = rd.Scalars(self.output)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        assert self.memory is not None
        return {
            "format": "cacl-train-v1",
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "memory": self.memory.state_dict(),
            "memory_tilde": self.memory_tilde.state_dict() if self.memory_tilde else None,
            "classes": torch.from_numpy(self.classes) if self.classes is not None else None,
            "history": self.history,
            "best": self.best,
            "initial": self.initial,
            "elapsed": self.elapsed,
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.memory = InstanceMemory(torch.zeros(1, 1), self.cfg.train.momentum)
        self.memory.load_state_dict(state["memory"])
        self.memory.to(self.device)
        if state.get("memory_tilde") is not None:
            self.memory_tilde = InstanceMemory(torch.zeros(1, 1), self.cfg.train.momentum)
            self.memory_tilde.load_state_dict(state["memory_tilde"])
            self.memory_tilde.to(self.device)
        self.classes = state["classes"].numpy() if state.get("classes") is not None else None
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.best, self.initial = dict(state["best"]), state.get("initial")
        self.elapsed = float(state.get("elapsed", 0.0))
        set_rng_state(state["rng"])

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] = (), **kwargs) -> Trainer:
        """Continue the run in ``run_dir`` from its ``last.pt`` (overrides may change e.g. epochs)."""
        state = load_checkpoint(run_dir, prefer=LAST)
        if state.get("format") != "cacl-train-v1" or "optimizer" not in state:
            raise CaclError(f"{state['_path']} is not a resumable training checkpoint")
        cfg = config_from_dict(state["config"])
        apply_overrides(cfg, list(overrides))
        trainer = cls(cfg, Path(state["_path"]).parent, **kwargs)
        trainer.load_state_dict(state)
        log.info("resuming %s at epoch %d", trainer.output, trainer.epoch + 1)
        return trainer

    # ------------------------------------------------------------------ stages

    def _extract(self, branch: int) -> torch.Tensor:
        d, net = self.cfg.data, self.model.branch1 if branch == 1 else self.model.branch2
        net.eval()
        feats = extract_features(
            lambda images: net(images)[1],
            self.dataset.train,
            test_transform(d.height, d.width, gray=branch == 2),
            device=self.device,
            batch_size=max(self.cfg.train.batch_size, 64),
            workers=d.workers,
            desc=f"memory init (branch {branch})",
            progress=self.progress,
        )
        net.train()
        return feats

    def init_memory(self) -> None:
        """Fill both banks with the features of every training image (eval mode, test transform)."""
        t0 = time.time()
        momentum = self.cfg.train.momentum
        self.memory = InstanceMemory(self._extract(1), momentum).to(self.device)
        if self.model.branch2 is not None:
            self.memory_tilde = InstanceMemory(self._extract(2), momentum).to(self.device)
        log.info("memory banks initialised in %.1f s", time.time() - t0)

    def relabel(self) -> dict[str, Any]:
        """Pseudo labels from the colour memory (or true identities when supervised)."""
        c = self.cfg.cluster
        if self.cfg.train.supervised:
            assert self.true_pids is not None
            self.classes = identity_classes(self.true_pids)
            stats = cluster_stats(self.classes, self.true_pids)
        else:
            from cacl.clustering import pseudo_labels_with_stats

            assert self.memory is not None
            labels, raw = pseudo_labels_with_stats(
                self.memory.features,
                eps=c.eps,
                eps_gap=c.eps_gap,
                k1=c.k1,
                k2=c.k2,
                min_samples=c.min_samples,
                refine=c.refine,
                ratio=c.ratio,
                backend=c.knn,
            )
            stats = cluster_stats(labels, self.true_pids)
            stats["clusters_before_refine"] = raw.n_clusters_raw
            stats["outliers_before_refine"] = raw.n_outliers_raw
            stats["seconds"] = {k: round(v, 2) for k, v in raw.seconds.items()}
            outliers = c.outliers
            if stats["clusters"] == 0:
                advice = (
                    f"DBSCAN found no cluster at cluster.eps={c.eps} (min_samples={c.min_samples}); "
                    "a larger cluster.eps (e.g. +0.05) merges more"
                )
                if c.on_no_cluster == "stop":
                    raise TrainingError(advice)
                log.warning("%s; training on singleton classes this epoch", advice)
                outliers = "singleton"
            elif stats["size_max"] > 0.5 * stats["samples"]:
                log.warning(
                    "one cluster holds %d of %d samples: clusters are collapsing; "
                    "try a smaller cluster.eps",
                    stats["size_max"],
                    stats["samples"],
                )
            self.classes = training_classes(labels, outliers)
        for memory in (self.memory, self.memory_tilde):
            if memory is not None:
                memory.set_labels(torch.from_numpy(self.classes))
        return stats

    def evaluate(self) -> dict[str, float]:
        d = self.cfg.data
        return evaluate_network(
            self.model,
            self.dataset,
            height=d.height,
            width=d.width,
            device=self.device,
            batch_size=max(self.cfg.train.batch_size, 64),
            workers=d.workers,
            progress=self.progress,
        )

    def train_epoch(self) -> dict[str, float]:
        """``train.iters`` steps over P x K batches of the current classes; mean loss terms."""
        assert self.memory is not None and self.classes is not None
        t, d = self.cfg.train, self.cfg.data
        sampler = CameraAwareIdentitySampler(
            self.classes, self.camids, t.batch_size, t.num_instances, t.iters, seed=t.seed
        )
        sampler.set_epoch(self.epoch)
        dataset = TwoViewDataset(
            self.dataset.train,
            colour_view(d.height, d.width, pad=d.pad),
            gray_view(d.height, d.width, pad=d.pad) if self.memory_tilde is not None else None,
        )
        loader = DataLoader(
            dataset,
            batch_size=t.batch_size,
            sampler=sampler,
            num_workers=d.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            generator=torch.Generator().manual_seed(t.seed * 100003 + self.epoch),
            persistent_workers=False,
        )
        classes = torch.from_numpy(self.classes).to(self.device)
        self.model.train()
        sums: dict[str, float] = {}
        bar = tqdm(
            loader,
            total=t.iters,
            desc=f"epoch {self.epoch + 1}/{t.epochs}",
            leave=False,
            disable=not self.progress,
        )
        for step, batch in enumerate(bar):
            targets = classes[batch["index"].to(self.device)]
            try:
                losses = train_step(
                    self.model,
                    batch,
                    targets,
                    self.memory,
                    self.memory_tilde,
                    self.optimizer,
                    self.cfg.loss,
                    max_grad_norm=t.max_grad_norm,
                    explode_loss=t.explode_loss,
                )
            except TrainingError as exc:
                last = self.output / LAST
                where = (
                    f"the last good checkpoint is {last}" if last.exists() else "no checkpoint yet"
                )
                raise TrainingError(
                    f"epoch {self.epoch + 1}, step {step + 1}: {exc}; {where}. Try a lower "
                    f"optim.lr (now {self.cfg.optim.lr:g}) or train.max_grad_norm=5"
                ) from None
            for key, value in losses.as_dict().items():
                sums[key] = sums.get(key, 0.0) + value
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses.total:.3f}")
        self.scheduler.step()
        return {k: v / t.iters for k, v in sums.items()}

    def _epoch_seed(self) -> int:
        return self.cfg.train.seed * 1000003 + self.epoch

    def fit(self) -> dict[str, Any]:
        """Run the remaining epochs; return (and write) ``results.json``."""
        t = self.cfg.train
        log.info(
            "training %s on %s (%d images), device %s, batch %d = %d x %d, %d epochs x %d iters",
            self.cfg.model.backbone,
            self.dataset.name,
            len(self.dataset.train),
            self.device,
            t.batch_size,
            t.batch_size // t.num_instances,
            t.num_instances,
            t.epochs,
            t.iters,
        )
        start = time.time() - self.elapsed
        if self.memory is None:
            if self.dataset.has_test_split and self.initial is None:
                self.initial = self.evaluate()
                log.info(
                    "before training: mAP %.4f rank-1 %.4f",
                    self.initial["mAP"],
                    self.initial["rank1"],
                )
            self.init_memory()
        try:
            while self.epoch < t.epochs:
                self.history.append(self._run_epoch())
                self.epoch += 1
                self.elapsed = time.time() - start
                atomic_save(self.state_dict(), self.output / LAST)
                self.write_results()
        finally:
            self.scalars.close()
            logging.getLogger("cacl").removeHandler(self._log_handler)
            self._log_handler.close()
        return self.write_results()

    def _run_epoch(self) -> dict[str, Any]:
        """Relabel, train, maybe evaluate; return the epoch's history record."""
        t, number = self.cfg.train, self.epoch + 1
        if t.deterministic:
            seed_everything(self._epoch_seed())
        record: dict[str, Any] = {"epoch": number, "cluster": self.relabel()}
        log.info("epoch %d: %s", number, describe_clusters(record["cluster"]))
        t0 = time.time()
        record["loss"] = self.train_epoch()
        record["train_seconds"] = round(time.time() - t0, 1)
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        losses = " ".join(f"{k} {v:.4f}" for k, v in record["loss"].items())
        log.info("epoch %d: %s (%.0f s)", number, losses, record["train_seconds"])
        if not self.dataset.has_test_split:
            self.best = {"epoch": number, "mAP": float("nan")}  # nothing to compare: keep the last
            self._save_best()
        elif number % t.eval_every == 0 or number == t.epochs:
            metrics = record["eval"] = self.evaluate()
            log.info(
                "epoch %d: mAP %.4f rank-1 %.4f rank-5 %.4f rank-10 %.4f",
                number,
                metrics["mAP"],
                metrics["rank1"],
                metrics["rank5"],
                metrics["rank10"],
            )
            if metrics["mAP"] > self.best["mAP"]:
                self.best = {"epoch": number, **metrics}
                self._save_best()
        self.scalars.add_epoch(record)
        return record

    def _save_best(self) -> None:
        atomic_save(
            {
                "format": "cacl-model-v1",
                "config": self.cfg.to_dict(),
                "epoch": self.epoch + 1,
                "model": self.model.state_dict(),
                "metrics": self.best,
            },
            self.output / BEST,
        )

    def write_results(self) -> dict[str, Any]:
        best = self.best if self.best["epoch"] > 0 else {}
        results = {
            "initial_mAP": self.initial["mAP"] if self.initial else None,
            "initial": self.initial,
            "mAP": best.get("mAP"),
            "mINP": best.get("mINP"),
            "rank1": best.get("rank1"),
            "rank5": best.get("rank5"),
            "rank10": best.get("rank10"),
            "best_epoch": best.get("epoch"),
            "epochs_done": self.epoch,
            "wall_seconds": round(self.elapsed, 1),
            "device": str(self.device),
            "world_size": 1,
            "dataset": {"name": self.dataset.name, "root": str(self.dataset.root)},
            "history": self.history,
        }
        rd.write_json_atomic(results, self.output / rd.RESULTS_FILE)
        return results
