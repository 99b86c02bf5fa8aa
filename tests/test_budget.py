"""A time budget (`minutes`): the plan of epochs, a budgeted run, and its resume after kill -9."""

import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab import runs
from lab.config import Config, reuse_problem
from lab.errors import LabError
from lab.train import fit, plan_epochs, schedule_seconds, train_size

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


def test_a_budgeted_run_trains_within_it_as_an_unbudgeted_one(budgeted: Config) -> None:
    run_dir = fit(replace(budgeted, name="budget"))
    summary = runs.read_json(run_dir / "summary.json")
    config = runs.read_json(run_dir / "config.json")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    planned = summary["planned_epochs"]
    assert planned > 1, "the budget, not the fallback epochs, set the run's length"
    assert config["epochs"] == summary["epochs"] == planned == len(metrics)
    assert config["minutes"] == BUDGET_MINUTES
    assert 0 < summary["planned_train_minutes"] <= BUDGET_MINUTES
    assert summary["train_time_s"] <= TOLERANCE * 60 * BUDGET_MINUTES
    assert all(summary[f"img_per_s_{side}px"] > 0 for side in (48, 56, 64))
    # the measurement left no trace: the same epochs, unbudgeted, train the same rows
    plain = fit(replace(budgeted, name="plain", minutes=0.0, epochs=planned))
    reference = pd.read_csv(plain / "metrics.csv")
    columns = ["train_size", "train_loss", "train_top1", "val_loss", "val_top1", "lr"]
    np.testing.assert_allclose(metrics[columns], reference[columns], rtol=1e-4, atol=1e-4)


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
    assert summary["status"] == "running" and summary["epochs_done"] < planned, "killed mid-run"
    # resumed as a sweep or a preset would: its own fallback epochs, the same budget
    assert reuse_problem(run_dir, replace(budgeted, name="killed", epochs=50)) is None
    with pytest.raises(LabError, match="minutes 0.05 recorded, 0.1 given"):
        fit(replace(budgeted, name="killed", resume=True, minutes=0.1))
    fit(replace(budgeted, name="killed", resume=True, epochs=50))
    final = runs.read_json(summary_path)
    assert final["status"] == "finished" and final["epochs_done"] == planned
    assert final["planned_epochs"] == planned, "the plan is not made again"
    assert final["img_per_s_64px"] == summary["img_per_s_64px"]
    assert runs.read_json(run_dir / "config.json")["epochs"] == planned
    assert list(pd.read_csv(run_dir / "metrics.csv")["epoch"]) == list(range(1, planned + 1))
