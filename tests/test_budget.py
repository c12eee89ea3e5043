"""train.budget: the schedule sized to the seconds a machine needs, chosen once and resumed."""

from __future__ import annotations

import itertools
import math

import pytest
import yaml

from cacl.config import ConfigError, load_config
from cacl.engine import budget
from cacl.engine.budget import (
    MARGIN,
    MIN_ITERS_SHARE,
    BudgetError,
    Costs,
    Probe,
    evaluations,
    plan_schedule,
    replan_iters,
    seconds_to_finish,
)
from cacl.engine.trainer import Trainer

# ---------------------------------------------------------------------- the pure rule


def test_evaluations_count_every_nth_epoch_and_the_last():
    assert [evaluations(e, 6) for e in (1, 5, 6, 7, 12, 13)] == [1, 1, 1, 2, 2, 3]
    assert evaluations(7, 1) == 7


def test_seconds_to_finish_by_hand():
    costs = Costs(step=2.0, epoch_start=5.0, evaluation=7.0)
    # epoch 1: 6 steps left = 12; epochs 2, 3: 5 + 10 x 2 each = 50; epochs 2 and 3 evaluated
    assert seconds_to_finish(3, 10, 4, costs, eval_every=2) == 12 + 50 + 14


def _brute_force(budget, elapsed, costs, epochs, iters, done, eval_every):
    """The schedule the rule asks for, by trying every (e, i): the configured one when it fits,
    else the most epochs, then the most iterations, of those that fit with i >= floor and
    i / iters >= e / epochs (or e == 1)."""
    left = budget * (1 - MARGIN) - elapsed
    floor = max(done, 1, math.ceil(MIN_ITERS_SHARE * iters))

    def fits(e, i):
        return seconds_to_finish(e, i, done, costs, eval_every) <= left + 1e-9

    if fits(epochs, iters):
        return epochs, iters
    ok = [
        (e, i)
        for e in range(1, epochs + 1)
        for i in range(floor, iters + 1)
        if fits(e, i) and (i * epochs >= iters * e or e == 1)
    ]
    return max(ok) if ok else None


@pytest.mark.parametrize("budget_s", [60, 150, 240, 330, 420, 510, 600, 700, 2000])
@pytest.mark.parametrize("step", [0.4, 1.2])
def test_plan_matches_the_brute_force_schedule(budget_s, step):
    costs = Costs(step=step, epoch_start=11.0, evaluation=8.0)
    args = dict(elapsed=45.0, costs=costs, epochs=7, iters=80, done_steps=12, eval_every=6)
    expected = _brute_force(budget_s, 45.0, costs, 7, 80, 12, 6)
    if expected is None:
        with pytest.raises(BudgetError, match="too small for even one epoch"):
            plan_schedule(budget=budget_s, **args)
        return
    plan = plan_schedule(budget=budget_s, **args)
    assert (plan.epochs, plan.iters) == expected
    assert plan.predicted <= budget_s * (1 - MARGIN) + 1e-6
    assert plan.predicted == pytest.approx(
        45.0 + seconds_to_finish(plan.epochs, plan.iters, 12, costs, 6)
    )
    assert plan.shrunk == ((plan.epochs, plan.iters) != (7, 80))


def default_plan(budget_s, elapsed, costs):
    """The plan for the synthetic default's 7 x 80, evaluated every 6th epoch, after 12 steps."""
    return plan_schedule(
        budget=budget_s,
        elapsed=elapsed,
        costs=costs,
        epochs=7,
        iters=80,
        done_steps=12,
        eval_every=6,
    )


def test_a_fast_machine_keeps_the_schedule_and_says_so():
    plan = default_plan(600, 40, Costs(0.5, 10, 8))
    assert not plan.shrunk and (plan.epochs, plan.iters) == (7, 80)
    assert "7 x 80 kept" in plan.describe() and "0.500 s per step" in plan.describe()


def test_a_slow_machine_shrinks_epochs_and_iterations_together():
    # 3x slower than the machine above: 7 x 80 would need about 40 + 7 x 10 x 1.5 + ... > 900 s
    plan = default_plan(600, 120, Costs(1.5, 30, 24))
    assert plan.shrunk and plan.epochs < 7
    assert plan.iters / 80 >= plan.epochs / 7
    assert plan.predicted <= 600 * (1 - MARGIN)
    assert "7 x 80 -> " in plan.describe()


def test_a_budget_too_small_for_one_epoch_is_a_clear_error():
    with pytest.raises(BudgetError, match=r"train.budget=100 s is too small.*train.budget=0"):
        default_plan(100, 90, Costs(1.0, 5, 5))
    with pytest.raises(BudgetError, match="spent before training starts"):
        budget.check_start(60, 58)
    budget.check_start(600, 58)  # plenty left: no error


def test_probe_times_steady_steps_after_the_warm_up(monkeypatch):
    ticks = iter([0.0, 4.0, 5.0, 6.0, 6.5, 7.0, 7.5, 8.0])
    monkeypatch.setattr(budget, "clock", lambda: next(ticks))
    probe = Probe(iters=5)  # fewer than WARMUP + PROBE steps: plan after the last
    assert [probe.tick() for _ in range(5)] == [False] * 4 + [True]
    step, startup = probe.step_costs()
    assert step == pytest.approx((7.0 - 5.0) / 3)  # steps 3-5, after the two warm-up steps
    assert startup == pytest.approx(5.0 - 2 * step)


def test_budget_config_is_checked():
    assert load_config("synthetic").train.budget == 600
    assert load_config("smoke").train.budget == 0
    for bad in ("-1", "nan"):
        with pytest.raises(ConfigError, match="train.budget must be >= 0"):
            load_config("smoke", [f"train.budget={bad}"])


# ---------------------------------------------------------------------- in the trainer

FAST = [
    "data.height=32",
    "data.width=16",
    "train.batch_size=8",
    "train.deterministic=true",
    "train.epochs=3",
    "train.iters=6",
    "train.eval_every=1",
]


@pytest.fixture
def fake_clock(monkeypatch):
    """Every reading of the budget's clock is one second after the last: the same run reads
    the same times, so its plan is the same however fast this machine is."""

    def install():
        counter = itertools.count()
        monkeypatch.setattr(budget, "clock", lambda: float(next(counter)))

    install()
    return install


@pytest.fixture
def steps(monkeypatch):
    """Counts the training steps that run."""
    import cacl.engine.trainer as trainer_module

    count = [0]
    real = trainer_module.train_step

    def counted(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", counted)
    return count


def run(output, *overrides):
    cfg = load_config("smoke", [*FAST, *overrides])
    return Trainer(cfg, output, progress=False).fit()


def saved_train(output):
    return yaml.safe_load((output / "config.yaml").read_text())["train"]


def test_budget_sizes_the_run_records_the_plan_and_resumes_exactly(
    cache, tmp_path, fake_clock, steps, monkeypatch
):
    # The fake clock's epochs read it more often than the probe's steps do; the re-check before
    # each epoch is tested on its own (test_a_machine_that_slows_down_gets_shorter_epochs).
    monkeypatch.setattr(budget, "replan_iters", lambda **kw: kw["iters"])
    roomy = run(tmp_path / "roomy", "train.budget=100000")
    kept = roomy["budget"]
    assert not kept["shrunk"] and roomy["epochs_done"] == 3 and steps[0] == 3 * 6
    assert "3 x 6 kept" in saved_train(tmp_path / "roomy")["budget_plan"]

    # A budget that holds 2 epochs of 6 steps but not 3: the plan drops an epoch.
    costs = Costs(**kept["costs"])
    # 6 iterations are fewer than WARMUP + PROBE steps: the plan is made after the 6th
    need = kept["elapsed"] + seconds_to_finish(2, 6, 6, costs, 1)
    tight = f"train.budget={(need + 0.5) / (1 - MARGIN)}"
    fake_clock()
    steps[0] = 0
    whole = run(tmp_path / "whole", tight)
    plan = whole["budget"]
    assert plan["shrunk"] and (plan["epochs"], plan["iters"]) == (2, 6)
    assert whole["epochs_done"] == 2 and steps[0] == 2 * 6
    assert plan["predicted"] <= plan["budget"] * (1 - MARGIN)
    saved = saved_train(tmp_path / "whole")
    assert (saved["epochs"], saved["iters"]) == (2, 6) and "3 x 6 -> 2 x 6" in saved["budget_plan"]

    # The same run stopped after epoch 1 and resumed: no new plan, the same schedule and results.
    fake_clock()
    real = Trainer._run_epoch

    def stop_in_epoch_2(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "_run_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "part", tight)
    monkeypatch.setattr(Trainer, "_run_epoch", real)
    resumed = Trainer.resume(tmp_path / "part", progress=False).fit()
    assert resumed["epochs_done"] == 2 and resumed["budget"] == plan
    assert resumed["mAP"] == pytest.approx(whole["mAP"], abs=1e-6)
    for a, b in zip(resumed["history"], whole["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_shrunk_iterations_end_epoch_1_early(cache, tmp_path, fake_clock, steps):
    roomy = run(tmp_path / "roomy", "train.budget=100000", "train.epochs=1", "train.iters=20")
    kept = roomy["budget"]
    done = budget.WARMUP_STEPS + budget.PROBE_STEPS  # the steps timed before the plan
    need = kept["elapsed"] + seconds_to_finish(1, 15, done, Costs(**kept["costs"]), 1)
    fake_clock()
    steps[0] = 0
    short = run(
        tmp_path / "short",
        f"train.budget={(need + 0.5) / (1 - MARGIN)}",
        "train.epochs=1",
        "train.iters=20",
    )
    assert (short["budget"]["epochs"], short["budget"]["iters"]) == (1, 15)
    assert steps[0] == 15 and saved_train(tmp_path / "short")["iters"] == 15
    assert all(math.isfinite(v) for v in short["history"][0]["loss"].values())


def test_too_small_a_budget_stops_with_a_clear_error(cache, tmp_path, fake_clock):
    with pytest.raises(BudgetError, match="spent before training starts"):
        run(tmp_path / "none", "train.budget=3")
    fake_clock()
    roomy = run(tmp_path / "roomy", "train.budget=100000")
    fake_clock()
    # enough for the start (memory banks, evaluation) but not for one epoch of training
    with pytest.raises(BudgetError, match="too small for even one epoch"):
        run(tmp_path / "small", f"train.budget={roomy['budget']['elapsed'] / (1 - MARGIN)}")
    assert not (tmp_path / "small" / "last.pt").exists()


def test_no_budget_no_plan(cache, tmp_path, steps):
    results = run(tmp_path, "train.epochs=1", "train.iters=3")
    assert results["budget"] is None and steps[0] == 3
    assert saved_train(tmp_path)["budget_plan"] is None
    assert {"memory_seconds", "initial_eval_seconds", "relabel_seconds"} <= set(results["stages"])


def test_replan_iters_by_hand():
    common = dict(budget=100.0, configured_iters=40, epoch_start=2.0, evaluation=3.0, margin=0.0)
    # 2 epochs left, 1 evaluation: 100 - 50 - (2 * 2 + 3) = 43 s for 2 epochs at 1 s per step
    assert (
        replan_iters(elapsed=50, epochs_left=2, iters=40, step=1.0, evaluations_left=1, **common)
        == 21
    )
    # enough time: the iterations stay; never more than before
    assert (
        replan_iters(elapsed=0, epochs_left=2, iters=30, step=1.0, evaluations_left=1, **common)
        == 30
    )
    # hopeless: the floor, a quarter of the configured iterations
    assert (
        replan_iters(elapsed=99, epochs_left=3, iters=40, step=1.0, evaluations_left=1, **common)
        == 10
    )
    # nothing left to run
    assert (
        replan_iters(elapsed=99, epochs_left=0, iters=40, step=1.0, evaluations_left=0, **common)
        == 40
    )


def test_a_machine_that_slows_down_gets_shorter_epochs(cache, tmp_path, monkeypatch):
    """Steps cost 1 s in epoch 1 (when the plan is made) and 3 s from epoch 2 on: the re-check
    before epoch 3 gives it fewer iterations, the config records it, the run ends in its budget.
    The clock moves only with the steps."""
    import cacl.engine.trainer as trainer_module

    now, slow = [0.0], [False]
    monkeypatch.setattr(budget, "clock", lambda: now[0])
    real_step, real_epoch = trainer_module.train_step, Trainer._run_epoch

    def timed(*args, **kwargs):
        now[0] += 3.0 if slow[0] else 1.0
        return real_step(*args, **kwargs)

    def epoch(self):
        slow[0] = self.epoch > 0
        return real_epoch(self)

    monkeypatch.setattr(trainer_module, "train_step", timed)
    monkeypatch.setattr(Trainer, "_run_epoch", epoch)
    results = run(tmp_path, "train.budget=50", "train.epochs=3", "train.iters=8")
    plan = results["budget"]
    assert (plan["epochs"], plan["iters"]) == (3, 8)  # at 1 s per step 3 x 8 fits 50 s
    iters = [record["iters"] for record in results["history"]]
    # epoch 2 still plans with epoch 1's 1 s per step; after it, 32 s are spent and
    # 50 * 0.95 - 32 = 15.5 s hold 5 steps of 3 s
    assert iters == [8, 8, 5]
    assert plan["replans"] == [{"epoch": 3, "iters": 5, "step": 3.0}]
    assert now[0] == 8 + 24 + 15 <= 50
    saved = saved_train(tmp_path)
    assert saved["iters"] == iters[-1] and "from epoch" in saved["budget_plan"]
