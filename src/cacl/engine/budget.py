"""A time budget for a whole run (``train.budget``): time the first steps, size the schedule.

The same config runs 2-4x slower on one CPU than on another, so a fixed schedule (epochs x
iterations) either overruns on a slow machine or wastes a fast one. With ``train.budget`` seconds
set, the trainer measures what this machine costs, part by part, and only then decides:

- before training: the memory banks (one extraction per branch) and the evaluation before training;
- in epoch 1: the relabelling, the data loader's start-up and ``PROBE_STEPS`` steady training
  steps after ``WARMUP_STEPS`` warm-up steps;
- from these, :func:`plan_schedule` predicts the seconds every schedule needs to the end of the run
  (:func:`seconds_to_finish`) and keeps the configured one when it fits. Otherwise it shrinks
  epochs and iterations together (iterations per epoch never shrink by a larger fraction than the
  epochs do: the largest number of epochs for which that holds); a budget that cannot hold even one
  epoch of :data:`MIN_ITERS_SHARE` of ``train.iters`` is a :class:`BudgetError`.

A machine can slow down after the probe (seen here: 1.15 s per step probed, 1.40 s per step over
the epochs that followed, and 656 s for a 600 s budget). So before every later epoch the run that
made the plan checks its remaining epochs against the budget with the step time of the epoch just
done (:func:`replan_iters`) and, when they would overrun, gives them fewer iterations (never
fewer than :data:`MIN_ITERS_SHARE` of ``train.iters``); the config records the change.

The plan is made once, on rank 0, written into the run's config (``train.epochs``, ``train.iters``
and ``train.budget_plan``, which says what was chosen and why) and logged; a resumed run keeps it,
so it resumes exactly. :class:`Probe` holds the step times of epoch 1; everything else here but
:func:`clock` and :func:`process_age` is a pure function of its arguments.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

from cacl.config import Config
from cacl.errors import TrainingError

#: The first steps of epoch 1 are not timed for the step cost: the loader's workers start and the
#: allocator warms up. Their excess over a steady step counts as the per-epoch start-up.
WARMUP_STEPS = 2
#: Steady steps timed before the plan is made.
PROBE_STEPS = 10
#: Share of the budget kept free for what the prediction leaves out (checkpoint writes, the
#: report, a machine that slows down later).
MARGIN = 0.05
#: The shortest epoch a plan may choose, as a share of the configured ``train.iters``.
MIN_ITERS_SHARE = 0.25

#: The clock every duration of the budget is read from (monotonic seconds); tests replace it.
clock = time.monotonic


class BudgetError(TrainingError):
    """``train.budget`` is too small for even the shortest run this machine can do."""


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc, so Python's and torch's imports
    count too); 0 where that cannot be read."""
    try:
        import os

        with open("/proc/self/stat") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


@dataclass(frozen=True)
class Costs:
    """Seconds that parts of a run take on this machine, as measured."""

    step: float  # one steady training iteration
    epoch_start: float  # what every later epoch costs before its first step (relabel, loader)
    evaluation: float  # one evaluation on the test split (0 when there is none)


@dataclass(frozen=True)
class Plan:
    """The schedule chosen for a budget, and the figures it was chosen from."""

    epochs: int
    iters: int
    configured_epochs: int
    configured_iters: int
    budget: float
    elapsed: float  # seconds of the command when the plan was made
    predicted: float  # seconds the whole command is predicted to take with this schedule
    costs: Costs

    @property
    def shrunk(self) -> bool:
        return (self.epochs, self.iters) != (self.configured_epochs, self.configured_iters)

    def describe(self) -> str:
        """One line: what was chosen, and from which measurements."""
        c = self.costs
        chosen = (
            f"{self.configured_epochs} x {self.configured_iters} -> {self.epochs} x {self.iters}"
            if self.shrunk
            else f"{self.epochs} x {self.iters} kept"
        )
        return (
            f"{chosen} (epochs x iters) for a budget of {self.budget:.0f} s: predicted "
            f"{self.predicted:.0f} s; measured {c.step:.3f} s per step, {c.epoch_start:.1f} s "
            f"per epoch start, {c.evaluation:.1f} s per evaluation, {self.elapsed:.0f} s spent "
            f"when planned"
        )

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "shrunk": self.shrunk, "text": self.describe()}


def evaluations(epochs: int, eval_every: int) -> int:
    """How many epochs of ``epochs`` are evaluated: every ``eval_every``-th and the last."""
    return epochs // eval_every + (1 if epochs % eval_every else 0)


def seconds_to_finish(
    epochs: int, iters: int, done_steps: int, costs: Costs, eval_every: int
) -> float:
    """Seconds from step ``done_steps`` of epoch 1 to the end of a run of ``epochs`` x ``iters``."""
    first = (iters - done_steps) * costs.step
    later = (epochs - 1) * (costs.epoch_start + iters * costs.step)
    return first + later + evaluations(epochs, eval_every) * costs.evaluation


def plan_schedule(
    *,
    budget: float,
    elapsed: float,
    costs: Costs,
    epochs: int,
    iters: int,
    done_steps: int,
    eval_every: int,
    margin: float = MARGIN,
) -> Plan:
    """The longest schedule that fits ``budget`` seconds, ``elapsed`` already spent and
    ``done_steps`` steps of epoch 1 done (see the module's docstring for the rule).

    Raises :class:`BudgetError` when not even one epoch of :data:`MIN_ITERS_SHARE` of ``iters``
    iterations fits.
    """
    left = budget * (1.0 - margin) - elapsed
    floor = max(done_steps, 1, math.ceil(MIN_ITERS_SHARE * iters))

    def plan(e: int, i: int) -> Plan:
        predicted = elapsed + seconds_to_finish(e, i, done_steps, costs, eval_every)
        return Plan(e, i, epochs, iters, budget, elapsed, predicted, costs)

    def most_iters(e: int) -> int:
        """The most iterations per epoch (at most ``iters``) that ``e`` epochs can afford."""
        fixed = (e - 1) * costs.epoch_start + evaluations(e, eval_every) * costs.evaluation
        if costs.step <= 0:
            return iters
        return min(iters, math.floor((left - fixed + done_steps * costs.step) / (e * costs.step)))

    if most_iters(epochs) >= iters:
        return plan(epochs, iters)
    for e in range(epochs, 0, -1):
        i = most_iters(e)
        if i >= floor and (i * epochs >= iters * e or e == 1):
            return plan(e, i)
    shortest = plan(1, floor)
    raise BudgetError(
        f"train.budget={budget:g} s is too small for even one epoch of {floor} iterations on "
        f"this machine: that needs about {shortest.predicted:.0f} s ({elapsed:.0f} s already "
        f"spent on start-up, memory banks and evaluation; {costs.step:.2f} s per step). Give "
        f"a larger train.budget, or train.budget=0 to run the configured "
        f"{epochs} x {iters} schedule however long it takes"
    )


def replan_iters(
    *,
    budget: float,
    elapsed: float,
    epochs_left: int,
    iters: int,
    configured_iters: int,
    step: float,
    epoch_start: float,
    evaluations_left: int,
    evaluation: float,
    margin: float = MARGIN,
) -> int:
    """Iterations for each of the ``epochs_left`` epochs still to run: ``iters`` when they fit the
    budget at ``step`` seconds per step, else the most that fit (at least :data:`MIN_ITERS_SHARE`
    of ``configured_iters``; never more than ``iters``)."""
    if epochs_left <= 0 or step <= 0:
        return iters
    left = budget * (1.0 - margin) - elapsed
    fixed = epochs_left * epoch_start + evaluations_left * evaluation
    fits = math.floor((left - fixed) / (epochs_left * step))
    floor = min(iters, max(1, math.ceil(MIN_ITERS_SHARE * configured_iters)))
    return max(floor, min(iters, fits))


def replan_from_history(
    cfg: Config,
    history: list[dict[str, Any]],
    stages: dict[str, float],
    plan: dict[str, Any] | None,
    *,
    next_epoch: int,
    elapsed: float,
    evaluates: bool,
) -> tuple[int, float]:
    """:func:`replan_iters` for epochs ``next_epoch..train.epochs`` of a run so far (its epoch
    records, stage times and plan): the last epoch's seconds per step, its start (epoch 1
    clustered the memory alone; later epochs extract too); returns (iters, that step time)."""
    t, last = cfg.train, history[-1]
    step = last["train_seconds"] / max(1, last.get("iters", t.iters))
    start = stages.get("relabel_seconds", 0.0)
    if len(history) > 1:
        start = last["relabel_seconds"]
    elif cfg.cluster.source == "extract":
        start += stages.get("extract_seconds", 0.0)
    epochs = range(next_epoch, t.epochs + 1)
    evals = sum(1 for e in epochs if e % t.eval_every == 0 or e == t.epochs)
    iters = replan_iters(
        budget=t.budget,
        elapsed=elapsed,
        epochs_left=len(epochs),
        iters=t.iters,
        configured_iters=plan["configured_iters"] if plan else t.iters,
        step=step,
        epoch_start=start,
        evaluations_left=evals if evaluates else 0,
        evaluation=stages.get("initial_eval_seconds", 0.0),
    )
    return iters, step


def check_start(budget: float, elapsed: float, margin: float = MARGIN) -> None:
    """Raise :class:`BudgetError` when ``elapsed`` seconds (start-up, memory banks, the first
    evaluation) already leave no time for training."""
    if elapsed >= budget * (1.0 - margin):
        raise BudgetError(
            f"train.budget={budget:g} s is spent before training starts ({elapsed:.0f} s on "
            f"start-up, memory banks and the first evaluation on this machine). Give a larger "
            f"train.budget, or train.budget=0 for no limit"
        )


class Probe:
    """The end times of epoch 1's first steps, until there are enough to plan from.

    Made just before the epoch's loader is first iterated, so the workers' start-up falls into
    the warm-up steps. With fewer than ``WARMUP_STEPS + PROBE_STEPS`` iterations in the epoch the
    plan is made after its last step, from the steps there are.
    """

    def __init__(self, iters: int) -> None:
        self.plan_after = max(1, min(WARMUP_STEPS + PROBE_STEPS, iters))
        self.marks = [clock()]

    @property
    def steps(self) -> int:
        return len(self.marks) - 1

    def tick(self) -> bool:
        """Mark the end of a step; True (once) when the plan is to be made now."""
        self.marks.append(clock())
        return self.steps == self.plan_after

    def step_costs(self) -> tuple[float, float]:
        """Seconds of a steady step, and the excess of the warm-up steps over steady ones (the
        loader's start-up, paid again by every epoch)."""
        n = self.steps
        warm = min(WARMUP_STEPS, n - 1)
        step = (self.marks[n] - self.marks[warm]) / (n - warm)
        return step, max(0.0, self.marks[warm] - self.marks[0] - warm * step)


def plan_run(probe: Probe, cfg: Config, stages: dict[str, float], *, elapsed: float) -> Plan:
    """The plan of a run configured by ``cfg`` from ``probe`` and the trainer's ``stages``
    (seconds: ``extract_seconds`` of one branch's extraction, ``initial_eval_seconds``, epoch 1's
    ``relabel_seconds``, which clusters the memory alone)."""
    t = cfg.train
    relabel = stages.get("relabel_seconds", 0.0)
    if cfg.cluster.source == "extract":  # every later epoch extracts the features first
        relabel += stages.get("extract_seconds", 0.0)
    step, startup = probe.step_costs()
    return plan_schedule(
        budget=t.budget,
        elapsed=elapsed,
        costs=Costs(step, relabel + startup, stages.get("initial_eval_seconds", 0.0)),
        epochs=t.epochs,
        iters=t.iters,
        done_steps=probe.steps,
        eval_every=t.eval_every,
    )
