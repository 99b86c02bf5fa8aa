"""Figures (PNGs written atomically) and the run-record queries behind them (lab.records)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab import figures, records, runs
from lab.study import STUDY

PNG = b"\x89PNG\r\n\x1a\n"
# conftest's dashboard_runs: base-2ep is a finished run, failed has no checkpoint


def test_make_figures_writes_pngs(dashboard_runs: Path, tmp_path: Path) -> None:
    paths = figures.make_figures(dashboard_runs, tmp_path / "out")
    assert [p.name for p in paths] == ["accuracy.png", "curves.png", "saliency.png"]  # one preset
    for path in paths:
        assert path.read_bytes()[:8] == PNG
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_make_figures_compares_presets(dashboard_runs: Path, tmp_path: Path) -> None:
    # exported records (results/) of the runs (no preset) and of a copy of one under "paper"
    root = tmp_path / "root"
    runs.export_runs(dashboard_runs, root)
    runs.export_runs(dashboard_runs, tmp_path / "copy")
    (tmp_path / "copy" / "base-2ep").rename(root / "paper-base")
    runs.update_summary(root / "paper-base", preset="paper")
    paths = figures.make_figures(root, tmp_path / "out")
    # no saliency: exported records keep no checkpoint
    assert [p.name for p in paths] == ["accuracy.png", "curves.png", "presets.png"]
    assert (tmp_path / "out" / "presets.png").read_bytes()[:8] == PNG


def test_make_figures_needs_a_finished_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no finished runs"):
        figures.make_figures(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_study_table_takes_the_best_val_run_and_the_gap() -> None:
    table = pd.DataFrame(
        [
            {"run": "a", "model": "resnet20", "status": "finished", "train_top1": 70.0,
             "val_top1": 50.0, "test_top1": 49.0},
            {"run": "b", "model": "resnet20", "status": "finished", "train_top1": 60.0,
             "val_top1": 56.0, "test_top1": 50.0},
            {"run": "c", "model": "resnet20", "status": "failed", "train_top1": 99.0,
             "val_top1": 99.0, "test_top1": 99.0},
            {"run": "d", "model": "resnet18", "status": "finished", "train_top1": 90.0,
             "val_top1": 60.0, "test_top1": 59.0},
        ]
    )  # fmt: skip
    rows = records.study_table(table).set_index("model")
    assert list(rows.index) == [*STUDY, "resnet18"]
    assert rows.loc["resnet20", "run"] == "b"  # chosen on val, never on test
    assert rows.loc["resnet20", "gap_test"] == pytest.approx(50.0 - STUDY["resnet20"][2])
    assert np.isnan(rows.loc["squeezenet", "study_test"])  # the study gives no numbers
    assert np.isnan(rows.loc["baseline", "test_top1"])  # no run of ours
    assert np.isnan(rows.loc["resnet18", "gap_val"]) and rows.loc["resnet18", "val_top1"] == 60


def test_preset_table_puts_presets_side_by_side() -> None:
    table = pd.DataFrame(
        [
            {"model": "resnet18", "preset": "best", "status": "finished", "val_top1": 60.0,
             "test_top1": 59.0},
            {"model": "resnet20", "preset": "best", "status": "finished", "val_top1": 50.0,
             "test_top1": 49.0},
            {"model": "resnet20", "preset": "best", "status": "finished", "val_top1": 56.0,
             "test_top1": 51.0},
            {"model": "resnet20", "preset": "paper", "status": "finished", "val_top1": 40.0,
             "test_top1": 41.0},
            {"model": "resnet20", "preset": "paper", "status": "failed", "val_top1": 99.0,
             "test_top1": 99.0},
            {"model": "baseline", "preset": None, "status": "finished", "val_top1": 30.0,
             "test_top1": 31.0},
        ]
    )  # fmt: skip
    scores = records.preset_table(table)
    assert list(scores.columns) == ["paper", "best", "none"]  # the presets' order, then others
    assert list(scores.index) == ["baseline", "resnet20", "resnet18"]  # the study's order first
    assert scores.loc["resnet20", "best"] == 51.0  # the best run on val, never on test
    assert scores.loc["resnet20", "paper"] == 41.0  # a failed run never counts
    assert np.isnan(scores.loc["resnet18", "paper"])
    assert [t.get_text() for t in figures.presets_figure(table).legends[0].texts] == [
        "paper",
        "best",
        "none",
    ]
    full_data = figures.presets_figure(table.assign(num_classes=200))  # the study's setting
    assert [t.get_text() for t in full_data.legends[0].texts][:2] == ["study", "paper"]
    study_bars = full_data.axes[0].containers[0]
    assert study_bars[1].get_height() == 55.40  # resnet20, the study's test top-1
    assert np.isnan(study_bars[2].get_height())  # resnet18 is not in the study


def test_pick_images_right_then_wrong(dashboard_runs: Path) -> None:
    predictions = pd.read_csv(dashboard_runs / "base-2ep" / "predictions.csv").set_index("file")
    picked = records.pick_images(dashboard_runs / "base-2ep", correct=2, wrong=2)
    hits = [predictions.loc[f, "label"] == predictions.loc[f, "pred"] for f in picked]
    assert hits == sorted(hits, reverse=True) and 0 < len(picked) <= 4


def test_predictions_by_file_name(dashboard_runs: Path) -> None:
    table = records.predictions_table([dashboard_runs / "base-2ep"], ["val_3.JPEG", "val_0.JPEG"])
    assert table["file"].tolist() == ["val_3.JPEG", "val_0.JPEG"]
    assert set(table["true"]) <= {f"thing{c}" for c in range(4)}
    images = records.load_test_images(dashboard_runs / "base-2ep", table["file"])
    assert images.shape == (2, 64, 64, 3)


def test_saliency_figure_rejects_bad_input(dashboard_runs: Path) -> None:
    with pytest.raises(ValueError, match="choose one or more of"):
        figures.saliency_figure([dashboard_runs / "base-2ep"], ["val_0.JPEG"], ["lime"])
    with pytest.raises(ValueError, match=r"no test prediction for \['val_99.JPEG'\]"):
        figures.saliency_figure([dashboard_runs / "base-2ep"], ["val_99.JPEG"], ["saliency"])
    with pytest.raises(ValueError, match="not a finished run folder"):
        records.pick_runs(dashboard_runs, [dashboard_runs / "failed"])
