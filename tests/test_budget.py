"""A time budget (`minutes`): the plan of epochs, a budgeted run, and its resume after kill -9."""

import inspect
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import lab.train
from lab import runs
from lab.config import Config, reuse_problem
from lab.errors import LabError
from lab.train import (
    epoch_plan,
    fit,
    plan_epochs,
    replan_epochs,
    schedule,
    schedule_seconds,
    train_size,
)

REPO = Path(__file__).resolve().parents[1]
# A budget of seconds on tiny data: its epochs take tenths of a second.
BUDGET_MINUTES = 0.05
# How far the measured training time may pass the budget: the plan comes from a few steps a
# side on 2 shared cores, and each epoch adds its reordering of the images to its steps.
TOLERANCE = 1.5


@pytest.fixture(scope="module")
def budgeted(tiny_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """tiny_config with a budget of seconds, progressive resizing (three sides to measure),
    dropout (baseline) and a weight average: state the measurement must restore."""
    return replace(
        tiny_config,
        minutes=BUDGET_MINUTES,  # epochs=1 is a fallback the budget replaces
        batch_size=32,  # 3 steps an epoch of 24 images a class
        min_size=48,
        ramp_start=0.0,
        ema=0.9,
        runs_root=str(tmp_path_factory.mktemp("runs")),
        device="cpu",
    )


def test_the_plan_is_the_most_epochs_that_fit() -> None:
    # seconds an epoch at each side: 32 px costs a quarter of 64 px
    seconds = {32: 1.0, 40: 1.6, 48: 2.3, 56: 3.1, 64: 4.0}
    config = Config(min_size=32, ramp_start=0.4, ramp_end=0.85)
    for minutes in (0.5, 1.0, 3.0, 10.0):
        planned = plan_epochs(minutes, seconds, config)
        fits = [
            epochs
            for epochs in range(1, 700)
            if schedule_seconds(replace(config, epochs=epochs), seconds) <= 60 * minutes
        ]
        assert planned == max(fits), minutes
    # 30 s: 15 epochs take 29.9 s (seven at 32 px, three at 64), 16 take 32.4 s
    assert plan_epochs(0.5, seconds, config) == 15
    sides = [train_size(epoch, replace(config, epochs=15)) for epoch in range(1, 16)]
    assert sides == [32] * 7 + [40, 40, 48, 48, 56, 64, 64, 64]
    assert plan_epochs(1.0, {64: 10.0}, Config()) == 6  # no resizing: 6 epochs of 10 s
    assert plan_epochs(0.1, {64: 10.0}, Config()) == 1  # less than an epoch: one all the same


def test_the_plan_made_again_takes_the_epochs_own_times() -> None:
    measured = {32: 1.0, 40: 1.6, 48: 2.3, 56: 3.1, 64: 4.0}  # 15 epochs in 30 s
    config = Config(min_size=32, ramp_start=0.4, ramp_end=0.85, epochs=15)
    # the first epoch, at 32 px, took half its measured time: every side is taken as fast
    first = pd.DataFrame({"epoch": [1], "train_size": [32], "epoch_time_s": [0.5]})
    halved = {side: seconds / 2 for side, seconds in measured.items()}
    assert replan_epochs(0.5, measured, first, config) == plan_epochs(0.5, halved, config) == 30
    # eight 32 px epochs of 0.5 s, then a 40 px one as measured: the sides to come as measured
    done = pd.DataFrame(
        {"epoch": range(1, 10), "train_size": [32] * 8 + [40], "epoch_time_s": [0.5] * 8 + [1.6]}
    )
    seconds = measured | {32: 0.5}
    fits = [
        epochs
        for epochs in range(9, 700)
        if 5.6 + schedule_seconds(replace(config, epochs=epochs), seconds, done=9) <= 30
    ]
    assert replan_epochs(0.5, measured, done, config) == max(fits) > 15
    # past the run's first half (8 of 12 epochs trained, the last at 48 px, all at half their
    # measured time) a plan grows only as far as keeps the next side at 48 px: 14 epochs, not
    # the 29 that fit, whose 9th epoch would go back to 32 px
    twelve = replace(config, epochs=12)
    sides = [32] * 6 + [40, 48]
    assert sides == [train_size(epoch, twelve) for epoch in range(1, 9)]
    late = pd.DataFrame(
        {"epoch": range(1, 9), "train_size": sides, "epoch_time_s": [0.5] * 6 + [0.8, 1.15]}
    )
    assert plan_epochs(0.5, halved, twelve, done=8, elapsed=4.95) == 29
    assert replan_epochs(0.5, measured, late, twelve) == 14
    assert (
        train_size(9, replace(twelve, epochs=14)) == 48 > train_size(9, replace(twelve, epochs=15))
    )
    # past the budget already: one epoch more, in which the lr ends its schedule
    slow = done.assign(epoch_time_s=[4.0] * 8 + [6.0])
    assert replan_epochs(0.5, measured, slow, config) == 10


def test_a_budgeted_run_trains_within_it_as_an_unbudgeted_one(budgeted: Config) -> None:
    run_dir = fit(replace(budgeted, name="budget"))
    summary = runs.read_json(run_dir / "summary.json")
    config = runs.read_json(run_dir / "config.json")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    planned = summary["planned_epochs"]
    assert planned > 1, "the budget, not the fallback epochs, set the run's length"
    assert config["epochs"] == summary["epochs"] == len(metrics)  # the plan, made again
    assert config["minutes"] == BUDGET_MINUTES
    assert 0 < summary["planned_train_minutes"] <= BUDGET_MINUTES
    assert summary["train_time_s"] <= TOLERANCE * 60 * BUDGET_MINUTES
    assert all(summary[f"img_per_s_{side}px"] > 0 for side in (48, 56, 64))
    # the measurement left no trace: the planned epochs, unbudgeted, train the same first epoch
    # (the plan made again after it may change the schedule of the rest)
    plain = fit(replace(budgeted, name="plain", minutes=0.0, epochs=planned))
    reference = pd.read_csv(plain / "metrics.csv")
    columns = ["train_size", "train_loss", "train_top1", "val_loss", "val_top1", "lr"]
    np.testing.assert_allclose(metrics[columns][:1], reference[columns][:1], rtol=1e-4, atol=1e-4)


def test_a_misjudged_plan_is_made_again_from_the_epochs(
    budgeted: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    measure = lab.train.measure_step_seconds

    def four_times_slow(*args: object, **kwargs: object) -> dict[int, float]:
        return {side: 4 * seconds for side, seconds in measure(*args, **kwargs).items()}

    monkeypatch.setattr(lab.train, "measure_step_seconds", four_times_slow)
    run_dir = fit(replace(budgeted, name="misjudged", schedule="cosine"))
    summary = runs.read_json(run_dir / "summary.json")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    epochs = summary["epochs"]
    assert epochs > 2 * summary["planned_epochs"], "the epochs' own times planned more of them"
    assert runs.read_json(run_dir / "config.json")["epochs"] == epochs == len(metrics)
    assert summary["train_time_s"] <= TOLERANCE * 60 * BUDGET_MINUTES
    # the epochs trained in the final plan (metrics.csv keeps each epoch's) follow its sides
    # and lr schedule
    final = replace(budgeted, schedule="cosine", epochs=epochs)
    steps, _ = epoch_plan(summary["num_classes"] * budgeted.per_class, budgeted.batch_size, 1)
    lr = schedule(final, steps).groupby("epoch")["lr"].first()
    after = metrics[metrics["run_epochs"] == epochs]
    assert len(after) >= 1 and list(after["train_size"]) == [
        train_size(e, final) for e in after["epoch"]
    ]
    np.testing.assert_allclose(after["lr"], lr[after["epoch"]], rtol=1e-6)
    # past a plan's first half a plan made again never takes the side back down
    late = metrics[2 * metrics["epoch"] > metrics["run_epochs"]].index
    sides = metrics["train_size"]
    assert all(sides[row + 1] >= sides[row] for row in late if row + 1 in sides.index)


def test_the_sides_take_turns_in_the_measurement(
    budgeted: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    sides: list[int] = []
    step = lab.train.train_step

    def recording(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sides.append(args[-2].shape[-1])  # x, the batch
        return step(*args)

    monkeypatch.setattr(lab.train, "train_step", recording)
    fit(replace(budgeted, name="turns"))
    parameters = inspect.signature(lab.train.measure_step_seconds).parameters
    steps, warmup = parameters["steps"].default, parameters["warmup"].default
    assert steps >= 3, "a median of a few steps a side"
    # each side warmed up on its own, then one timed step a side in turn, `steps` times over
    assert sides[: 3 * warmup] == [48] * warmup + [56] * warmup + [64] * warmup
    assert sides[3 * warmup : 3 * (warmup + steps)] == [48, 56, 64] * steps
    assert sides[3 * (warmup + steps)] == 48, "then the run, from its first side"


def test_a_run_past_its_budget_still_ends_its_lr_schedule(
    budgeted: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_one_epoch = lab.train.train_one_epoch

    def fifty_times_slow(*args: object, **kwargs: object) -> dict:
        row = train_one_epoch(*args, **kwargs)
        return row | {"epoch_time_s": 50 * row["epoch_time_s"]}

    monkeypatch.setattr(lab.train, "train_one_epoch", fifty_times_slow)
    run_dir = fit(replace(budgeted, name="past", schedule="cosine"))
    summary = runs.read_json(run_dir / "summary.json")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert summary["planned_epochs"] > 2
    # its first epoch took the whole budget: one more, in a plan of 2, and no more
    assert list(metrics["run_epochs"]) == [summary["planned_epochs"], 2]
    assert summary["epochs"] == runs.read_json(run_dir / "config.json")["epochs"] == 2
    steps, _ = epoch_plan(summary["num_classes"] * budgeted.per_class, budgeted.batch_size, 1)
    final = schedule(replace(budgeted, schedule="cosine", epochs=2), steps)
    assert metrics["lr"].iloc[-1] == pytest.approx(final.groupby("epoch")["lr"].first()[2])


def test_a_resume_after_kill_keeps_the_plan(wait_for_an_epoch: Callable, budgeted: Config) -> None:
    run_dir = Path(budgeted.runs_root) / "killed"
    options = {
        "model": budgeted.model,
        "minutes": BUDGET_MINUTES,
        "batch-size": budgeted.batch_size,
        "lr": budgeted.lr,
        "per-class": budgeted.per_class,
        "min-size": budgeted.min_size,
        "ramp-start": budgeted.ramp_start,
        "ema": budgeted.ema,
        "data": budgeted.data,
        "cache-dir": budgeted.cache_dir,
        "runs-root": budgeted.runs_root,
        "device": "cpu",
        "train-eval-size": budgeted.train_eval_size,
        "name": "killed",
    }
    command = [sys.executable, "-m", "lab.cli", "train", "--quiet"]
    process = subprocess.Popen([*command, *(f"--{k}={v}" for k, v in options.items())], cwd=REPO)
    summary_path = run_dir / "summary.json"
    wait_for_an_epoch(process, run_dir, 120)
    process.send_signal(signal.SIGKILL)
    process.wait()
    summary = runs.read_json(summary_path)
    planned = summary["planned_epochs"]
    assert summary["status"] == "running" and summary["epochs_done"] < summary["epochs"], "killed"
    # resumed as a sweep or a preset would: its own fallback epochs, the same budget
    assert reuse_problem(run_dir, replace(budgeted, name="killed", epochs=50)) is None
    with pytest.raises(LabError, match="minutes 0.05 recorded, 0.1 given"):
        fit(replace(budgeted, name="killed", resume=True, minutes=0.1))
    fit(replace(budgeted, name="killed", resume=True, epochs=50))
    final = runs.read_json(summary_path)
    epochs = final["epochs"]  # the plan, made again from the epochs of both processes
    assert final["status"] == "finished" and final["epochs_done"] == epochs
    assert final["planned_epochs"] == planned, "the steps are not measured again"
    assert final["img_per_s_64px"] == summary["img_per_s_64px"]
    assert runs.read_json(run_dir / "config.json")["epochs"] == epochs
    assert list(pd.read_csv(run_dir / "metrics.csv")["epoch"]) == list(range(1, epochs + 1))
