"""On the real archive (CI has it): a short CPU training on ten real classes clearly learns."""

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from lab import runs
from lab.config import Config
from lab.evaluate import evaluate_run
from lab.train import fit


@pytest.mark.real_data
def test_ten_real_classes_are_learned(real_archive: Path, real_cache: Path, tmp_path: Path) -> None:
    config = Config(
        model="baseline",
        classes=10,
        per_class=200,  # of 450: keeps the test to seconds, still far above chance
        epochs=4,
        min_size=32,  # progressive resizing: the first epochs cost a quarter
        batch_size=64,
        lr=0.02,
        schedule="onecycle",
        augment="flip",
        normalize="channel",
        cache_dir=str(real_cache),
        runs_root=str(tmp_path),
        name="real10",
        quiet=True,
        train_eval_size=500,
    )
    run_dir = fit(config)
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "finished"
    assert summary["test_top1"] > 40, f"chance is 10%, got {summary['test_top1']:.1f}%"
    assert summary["val_top1"] > 40
    per_class = pd.read_csv(run_dir / "per_class.csv")
    if real_archive.is_dir():
        wnids = next(real_archive.rglob("wnids.txt")).read_text().split()
    else:
        with zipfile.ZipFile(real_archive) as archive:
            wnids = archive.read("tiny-imagenet-200/wnids.txt").decode().split()
    assert list(per_class["wnid"]) == wnids[:10], "the first ten classes of wnids.txt"
    assert per_class.loc[0, "name"] == "Egyptian cat"  # n02124075 in words.txt
    assert (per_class["count"] == 50).all(), "the official val set has 50 images a class"
    recomputed = evaluate_run(run_dir, device="cpu")
    assert recomputed["test_top1"] == pytest.approx(summary["test_top1"], abs=0.01)
