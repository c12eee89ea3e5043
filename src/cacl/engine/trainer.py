"""The CACL training loop (docs/method.md): relabel -> train an epoch -> evaluate -> checkpoint.

One :class:`Trainer` holds the state that changes during a run (network, optimiser, scheduler,
the two memory banks, the pseudo labels, history); everything else is pure functions elsewhere.
The module is long for that reason: each stage is a short method over the same state, and what
a stage computes lives beside it in ``cacl.engine`` (budget, relabel, step, transit, parts).
A checkpoint (``last.pt``) is written atomically after every epoch with all of that state, so
``Trainer.resume(run_dir)`` continues exactly where the run stopped.

Under ``torchrun`` every process runs a Trainer (:mod:`cacl.engine.ddp`, :mod:`cacl.distributed`):
the network trains under DistributedDataParallel on each rank's slice of the global batch, both
memory banks are updated identically everywhere, extraction is sharded, pseudo labels come from
rank 0, and only rank 0 logs and writes files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cacl import distributed
from cacl.checkpoints import run_dir as rd
from cacl.checkpoints.io import (
    BEST,
    LAST,
    atomic_save,
    rng_state,
    set_rng_state,
)
from cacl.clustering.stats import describe_clusters
from cacl.config import Config, save_config
from cacl.cores import share_cpu
from cacl.engine import budget
from cacl.engine.amp import Precision
from cacl.engine.ddp import broadcast_buffers, describe_batch, prepare_model
from cacl.engine.parts import (
    branch_features,
    build_network,
    build_optimizer,
    describe_run,
    load_train_data,
    model_checkpoint,
    results_record,
    step_failure,
    tracklet_constraints,
)
from cacl.engine.preflight import rank_rng_state, resume_state
from cacl.engine.relabel import compute_classes
from cacl.engine.seeds import epoch_seed, loader_seed, rank_seed, seed_everything
from cacl.engine.step import train_step
from cacl.engine.train_data import train_loader
from cacl.engine.transit import EpochTransit
from cacl.errors import TrainingError
from cacl.evaluation.network import network_distances, score_distances
from cacl.memory import InstanceMemory, memory_dtype

log = logging.getLogger(__name__)

# The best evaluation's distances are kept for the run report up to this many entries (60 M:
# Market-1501's 3,368 x 15,913 = 53.6 M fits, 214 MB in float32; MSMT17's 11,659 x 82,161 =
# 958 M does not, and the report evaluates again).
KEEP_DISTANCES = 60_000_000


class Trainer:
    """Train CACL as configured by ``cfg`` into the folder ``output``."""

    def __init__(
        self,
        cfg: Config,
        output: str | Path,
        *,
        progress: bool = True,
        started: float | None = None,
    ) -> None:
        """``started``: when the command began on :func:`budget.clock` (default: now), the
        start of ``train.budget``."""
        t = cfg.train
        self.started = budget.clock() if started is None else started
        self.device = distributed.init_from_env(t.device)  # starts DDP under torchrun
        self.rank, self.world_size = distributed.get_rank(), distributed.get_world_size()
        self.is_main = self.rank == 0
        self.batch_text = describe_batch(t.batch_size, t.num_instances, self.world_size)
        # on a CPU the loader's processes and torch's threads share the usable cores
        self.cpu_text = share_cpu(cfg.data.workers) if self.device.type == "cpu" else ""
        self.cfg, self.progress = cfg, progress and self.is_main
        self.output = Path(distributed.broadcast_object(str(output)))  # rank 0's folder
        self._log_handler: logging.Handler | None = None
        if cfg.data.root:  # absolute, so that --resume and cacl report work from anywhere
            cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
        if not self.is_main:
            logging.getLogger("cacl").setLevel(logging.WARNING)  # rank 0 speaks for all
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        seed_everything(t.seed)
        self.dataset, self.camids, self.true_pids = load_train_data(cfg)
        crossings = None if cfg.cluster.split_crossings == "off" else cfg.cluster.split_iou
        self.tracklets = tracklet_constraints(self.dataset, self.camids, crossings)
        from cacl.data.times import sample_times

        # a site's crops on one clock: the transit model of each epoch's pseudo labels (only
        # those: a Market-style name's frame number is no site clock)
        site = bool(self.dataset.sightings) and self.dataset.clock == "site"
        self.train_times = sample_times(self.dataset, "train") if site else None
        self.transit = EpochTransit(self.camids, self.train_times) if site else None
        if cfg.cluster.time == "on" and self.train_times is None:
            raise TrainingError(
                "cluster.time=on needs training crops with times on one clock (a site's crops "
                "with the tracklets.csv of cacl crops, and the cameras' start times); "
                f"{self.dataset.name} ({self.dataset.root}) has none: use cluster.time=off"
            )
        cuts = {k: getattr(cfg.cluster, k) for k in ("split", "split_crossings")}
        cuts = {k: v for k, v in cuts.items() if v not in ("off", "auto")}
        if cuts and self.tracklets is None:
            key, value = next(iter(cuts.items()))
            raise TrainingError(
                f"cluster.{key}={value} cuts tracklets, and {self.dataset.name} "
                f"({self.dataset.root}) has none (a tracklets.csv of cacl crops beside the "
                f"crops): use cluster.{key}=off"
            )
        m = cfg.model
        self.model = build_network(cfg, self.device)
        # without the gray branch the predictor's z enters no loss: DDP must expect that
        unused = not m.gray_branch and m.predictor
        self.train_model = prepare_model(self.model, self.device, m.sync_bn, find_unused=unused)
        self.precision = Precision(self.device, t.amp, t.amp_dtype)
        # Data and model resolved: only now does the folder become a run (an early failure
        # leaves nothing behind).
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            self._log_handler = rd.attach_log_file(self.output)
            save_config(cfg, self.output / rd.CONFIG_FILE)
        log.info("\n%s", self.dataset.summary())
        if self.rank > 0:
            seed_everything(rank_seed(t.seed, self.rank))  # other augmentations than rank 0's
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg)
        self.memory: InstanceMemory | None = None
        self.memory_tilde: InstanceMemory | None = None
        self.classes: np.ndarray | None = None
        self.epoch = 0  # the next epoch to run
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"mAP": -1.0, "epoch": -1}
        self.initial: dict[str, float] | None = None
        # the best model's query x gallery distances, for the run report (None: not kept)
        self.last_distances: np.ndarray | None = None
        self.best_distances: np.ndarray | None = None
        self.elapsed = 0.0
        # seconds of the stages before training; what train.budget chose (with its reasons)
        self.stages: dict[str, float] = {}
        self.plan: dict[str, Any] | None = None
        self._replans = False  # this process made the plan: it re-checks it before each epoch
        self.scalars = rd.Scalars(self.output, enabled=self.is_main)

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
            "stages": self.stages,
            "plan": self.plan,
            "rng": rng_state(),
            "scaler": self.precision.state_dict(),
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        dtype = memory_dtype(self.cfg.memory.dtype)  # the saved one unless overridden on resume
        self.memory = InstanceMemory.from_state_dict(state["memory"], self.device, dtype)
        if state.get("memory_tilde") is not None:
            self.memory_tilde = InstanceMemory.from_state_dict(
                state["memory_tilde"], self.device, dtype
            )
        self._give_cameras()
        self.classes = state["classes"].numpy() if state.get("classes") is not None else None
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.best, self.initial = dict(state["best"]), state.get("initial")
        self.elapsed = float(state.get("elapsed", 0.0))
        self.stages, self.plan = dict(state.get("stages") or {}), state.get("plan")
        self.precision.load_state_dict(state.get("scaler"))
        set_rng_state(rank_rng_state(state, self.rank, self.world_size))

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] = (), **kwargs) -> Trainer:
        """Continue the run in ``run_dir`` from its ``last.pt`` (overrides may change e.g. epochs)."""
        state, cfg, folder = resume_state(run_dir, list(overrides))
        trainer = cls(cfg, folder, **kwargs)
        trainer.load_state_dict(state)
        log.info("resuming %s at epoch %d", trainer.output, trainer.epoch + 1)
        return trainer

    # ------------------------------------------------------------------ stages

    def _extract(self, branch: int, calibrate: bool = True) -> torch.Tensor:
        return branch_features(
            self.model,
            branch,
            self.dataset,
            self.cfg,
            self.device,
            calibrate=calibrate,
            progress=self.progress,
        )

    def _bank(self, branch: int) -> InstanceMemory:
        """A memory bank of ``branch``'s features, extracted straight into its storage
        (``memory.dtype``)."""
        features = branch_features(
            self.model,
            branch,
            self.dataset,
            self.cfg,
            self.device,
            progress=self.progress,
            dtype=memory_dtype(self.cfg.memory.dtype),
        )
        return InstanceMemory.from_storage(features, self.cfg.memory.alpha).to(self.device)

    def init_memory(self) -> None:
        """Fill both banks with the features of every training image (eval mode, test transform)."""
        t0 = budget.clock()
        self.memory = self._bank(1)
        self.stages["extract_seconds"] = round(budget.clock() - t0, 2)  # one branch's extraction
        if self.model.branch2 is not None:
            self.memory_tilde = self._bank(2)
        self._give_cameras()
        self.stages["memory_seconds"] = round(budget.clock() - t0, 2)
        log.info(
            "memory banks (%s rows) initialised in %.1f s",
            self.cfg.memory.dtype,
            self.stages["memory_seconds"],
        )

    def _give_cameras(self) -> None:
        """The memories keep camera proxies when the camera term of the loss is on."""
        if self.cfg.loss.camera_weight > 0:
            for memory in (self.memory, self.memory_tilde):
                if memory is not None:
                    memory.set_cameras(torch.from_numpy(self.camids))

    def relabel(self) -> dict[str, Any]:
        """Pseudo labels from the colour memory (or true identities when supervised), computed
        on rank 0 and broadcast to every rank."""
        assert self.memory is not None
        features = self.memory.features
        if self.cfg.cluster.source == "extract" and self.epoch > 0:
            # Clean eval-mode features of the colour branch (every rank extracts its share);
            # at epoch 0 the memory is exactly that extraction.
            t0 = time.time()
            features = self._extract(1, calibrate=False)
            log.info("clustering features re-extracted in %.1f s", time.time() - t0)
        self.classes, stats = distributed.on_main(
            lambda: compute_classes(
                features,
                self.cfg.cluster,
                self.true_pids,
                self.cfg.train.supervised,
                cameras=self.camids,
                tracklets=self.tracklets,
                times=self.train_times,
                time_weight=self._time_weight(),
            )
        )
        for memory in (self.memory, self.memory_tilde):
            if memory is not None:
                memory.set_labels(torch.from_numpy(self.classes))
        return stats

    def evaluate(self) -> dict[str, float]:
        """Score branch 1 on the query / gallery; keeps the distances in ``last_distances``."""
        d = self.cfg.data
        distances = network_distances(
            self.model,
            self.dataset,
            height=d.height,
            width=d.width,
            device=self.device,
            batch_size=max(self.cfg.train.batch_size, 64),
            workers=d.workers,
            progress=self.progress,
            shard=True,
        )
        # kept for the run report only when small: MSMT17's matrix alone is 3.8 GB
        self.last_distances = distances if distances.size <= KEEP_DISTANCES else None
        return score_distances(distances, self.dataset)

    def epoch_loader(self) -> DataLoader:
        """This rank's P x K batches of the current epoch and classes (views, index, camera)."""
        assert self.classes is not None
        return train_loader(
            self.dataset.train,
            self.classes,
            self.camids,
            self.cfg,
            self.epoch,
            gray=self.memory_tilde is not None,
            device=self.device,
            loader_seed=loader_seed(self.cfg.train.seed, self.epoch, self.rank),
            rank=self.rank,
            world_size=self.world_size,
        )

    def train_epoch(self) -> dict[str, float]:
        """``train.iters`` steps over P x K batches of the current classes; mean loss terms."""
        assert self.memory is not None and self.classes is not None
        t = self.cfg.train
        loader = self.epoch_loader()
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
        probe = budget.Probe(t.iters) if self._plans() else None
        steps = 0
        for steps, batch in enumerate(bar, 1):
            step = steps - 1
            targets = classes[batch["index"].to(self.device)]
            try:
                losses = train_step(
                    self.train_model,
                    batch,
                    targets,
                    self.memory,
                    self.memory_tilde,
                    self.optimizer,
                    self.cfg.loss,
                    max_grad_norm=t.max_grad_norm,
                    explode_loss=t.explode_loss,
                    precision=self.precision,
                )
            except TrainingError as exc:
                raise step_failure(exc, self.cfg, self.epoch, step, self.output) from None
            for key, value in losses.as_dict().items():
                sums[key] = sums.get(key, 0.0) + value
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses.total:.3f}")
            if probe is not None and probe.tick():
                self._make_plan(probe)  # may shorten this epoch (t.iters) and the run
                bar.total, probe = t.iters, None
            if steps >= t.iters:
                break
        self.scheduler.step()
        broadcast_buffers(self.model)  # every rank evaluates and extracts with rank 0's BN stats
        return {k: v / steps for k, v in sums.items()}

    # ------------------------------------------------------------------ time budget

    def _plans(self) -> bool:
        """Whether this run still has to size its schedule to ``train.budget``."""
        t = self.cfg.train
        return t.budget > 0 and t.budget_plan is None and self.epoch == 0

    def _make_plan(self, probe: budget.Probe) -> None:
        """Size epochs x iters to the budget from ``probe``'s steps (on rank 0, for all ranks);
        record the plan in the run's config, its log and its history."""
        t, elapsed = self.cfg.train, budget.clock() - self.started
        plan = distributed.on_main(
            lambda: budget.plan_run(probe, self.cfg, self.stages, elapsed=elapsed)
        )
        t.epochs, t.iters, t.budget_plan = plan.epochs, plan.iters, plan.describe()
        self.plan = plan.as_dict()
        self._replans = True
        if self.is_main:
            save_config(self.cfg, self.output / rd.CONFIG_FILE)
        (log.warning if plan.shrunk else log.info)("time budget: %s", plan.describe())

    def _replan(self) -> None:
        """Before a later epoch of the run that made the plan: fewer iterations for the epochs
        left when, at the last epoch's step time, they would overrun the budget."""
        t = self.cfg.train
        iters, step = distributed.on_main(
            lambda: budget.replan_from_history(
                self.cfg,
                self.history,
                self.stages,
                self.plan,
                next_epoch=self.epoch + 1,
                elapsed=budget.clock() - self.started,
                evaluates=self.dataset.has_test_split,
            )
        )
        if iters < t.iters:
            log.warning(
                "time budget: the last epoch took %.3f s per step; epochs %d-%d get %d "
                "iterations instead of %d to end within %.0f s",
                step,
                self.epoch + 1,
                t.epochs,
                iters,
                t.iters,
                t.budget,
            )
            t.iters = iters
            t.budget_plan = f"{t.budget_plan}; from epoch {self.epoch + 1}: {iters} iters"
            if self.plan is not None:
                self.plan.setdefault("replans", []).append(
                    {"epoch": self.epoch + 1, "iters": iters, "step": round(step, 4)}
                )
            if self.is_main:
                save_config(self.cfg, self.output / rd.CONFIG_FILE)

    def fit(self) -> dict[str, Any]:
        """Run the remaining epochs; return (and write) ``results.json``."""
        t = self.cfg.train
        amp = self.precision.describe()
        log.info(
            describe_run(self.cfg, self.dataset, self.device, self.world_size, self.batch_text, amp)
            + (f"; {self.cpu_text}" if self.cpu_text else "")
        )
        start = time.time() - self.elapsed
        try:
            if self.memory is None:
                # Memory first: with model.calibrate_neck the initial score is the calibrated
                # network's, so the reported gain is the training's alone.
                self.init_memory()
                if self.dataset.has_test_split and self.initial is None:
                    t0 = budget.clock()
                    self.initial = self.evaluate()
                    self.stages["initial_eval_seconds"] = round(budget.clock() - t0, 2)
                    log.info("before training: mAP %(mAP).4f rank-1 %(rank1).4f", self.initial)
            if self._plans():
                budget.check_start(t.budget, budget.clock() - self.started)
            while self.epoch < t.epochs:
                if self._replans and self.history:
                    self._replan()
                self.history.append(self._run_epoch())
                self.epoch += 1
                self.elapsed = time.time() - start
                self._save_last()
                self.write_results()
        finally:
            self.scalars.close()
            rd.detach_log_file(self._log_handler)
        return self.write_results()

    def _save_last(self) -> None:
        """``last.pt`` (by rank 0, with every rank's RNG state); the other ranks wait for it."""
        rngs = distributed.all_gather_object(rng_state()) if self.world_size > 1 else None
        if self.is_main:
            state = self.state_dict()
            if rngs is not None:
                state["rng_ranks"] = rngs
            atomic_save(state, self.output / LAST)
        distributed.barrier()

    def _time_weight(self):
        """``cluster.time=on``: the weight of the previous relabelling's transit model (None at
        the first epoch, or when no cluster spanned two cameras)."""
        if self.cfg.cluster.time != "on" or self.classes is None:
            return None
        from cacl.temporal.fusion import transit_weight

        model = self.transit.model(self.classes)
        if model is None:
            log.warning("cluster.time=on: clustering by appearance alone this epoch")
        return transit_weight(model) if model is not None else None

    def _save_transit(self, number: int) -> None:
        """``transit.json`` of this epoch's pseudo labels, when the training crops have times
        on one clock (``cacl eval --st`` and ``cacl serve`` use it); never fails a run."""
        if not self.is_main or self.transit is None:
            return
        from cacl.temporal.transit import TRANSIT_FILE

        model = self.transit.model(self.classes, number)
        if model is not None:
            model.save(self.output / TRANSIT_FILE)

    def _run_epoch(self) -> dict[str, Any]:
        """Relabel, train, maybe evaluate; return the epoch's history record."""
        t, number = self.cfg.train, self.epoch + 1
        if t.deterministic:
            seed_everything(epoch_seed(t.seed, self.epoch, self.rank))
        t0 = budget.clock()
        record: dict[str, Any] = {"epoch": number, "cluster": self.relabel()}
        record["relabel_seconds"] = round(budget.clock() - t0, 2)
        if number == 1:  # what the plan counts on (clustering the memory alone)
            self.stages["relabel_seconds"] = record["relabel_seconds"]
        log.info("epoch %d: %s", number, describe_clusters(record["cluster"]))
        self._save_transit(number)
        t0 = budget.clock()
        record["loss"] = self.train_epoch()
        record["train_seconds"] = round(budget.clock() - t0, 1)
        record["iters"] = t.iters
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        losses = " ".join(f"{k} {v:.4f}" for k, v in record["loss"].items())
        log.info("epoch %d: %s (%.0f s)", number, losses, record["train_seconds"])
        if not self.dataset.has_test_split:
            self.best = {"epoch": number, "mAP": float("nan")}  # nothing to compare: keep the last
            self._save_best()
        elif number % t.eval_every == 0 or number == t.epochs:
            t0 = budget.clock()
            metrics = record["eval"] = self.evaluate()
            record["eval_seconds"] = round(budget.clock() - t0, 2)
            log.info(
                "epoch %d: mAP %.4f rank-1 %.4f rank-5 %.4f rank-10 %.4f",
                number,
                *(metrics[k] for k in ("mAP", "rank1", "rank5", "rank10")),
            )
            if metrics["mAP"] > self.best["mAP"]:
                self.best = {"epoch": number, **metrics}
                self.best_distances = self.last_distances
                self._save_best()
        self.scalars.add_epoch(record)
        return record

    def _save_best(self) -> None:
        if self.is_main:
            state = model_checkpoint(self.cfg, self.epoch + 1, self.model, self.best)
            atomic_save(state, self.output / BEST)

    def write_results(self) -> dict[str, Any]:
        results = results_record(
            self.cfg,
            self.dataset,
            best=self.best,
            initial=self.initial,
            epochs_done=self.epoch,
            elapsed=self.elapsed,
            device=self.device,
            world_size=self.world_size,
            history=self.history,
            stages=self.stages,
            plan=self.plan,
        )
        if self.is_main:
            rd.write_json_atomic(results, self.output / rd.RESULTS_FILE)
        return results
