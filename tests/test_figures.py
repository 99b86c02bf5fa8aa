"""Figures (PNGs written atomically) and the run-record queries behind them (lab.records)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab import data, figures, records, runs
from lab.cli import main
from lab.config import Config
from lab.predict import load_predictor, top_classes
from lab.study import STUDY
from lab.train import fit

PNG = b"\x89PNG\r\n\x1a\n"
# conftest's dashboard_runs: base-2ep is a finished run, failed has no checkpoint


def test_make_figures_writes_pngs(dashboard_runs: Path, tmp_path: Path) -> None:
    paths = figures.make_figures(dashboard_runs, tmp_path / "out")
    names = ["accuracy.png", "curves.png", "minutes.png", "saliency.png"]  # one preset
    assert [p.name for p in paths] == names
    for path in paths:
        assert path.read_bytes()[:8] == PNG
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_make_figures_compares_presets(dashboard_runs: Path, tmp_path: Path) -> None:
    # exported records (results/) of the runs (no preset) and of a copy of one under "paper"
    root = tmp_path / "root"
    records.export_runs(dashboard_runs, root)
    records.export_runs(dashboard_runs, tmp_path / "copy")
    (tmp_path / "copy" / "base-2ep").rename(root / "paper-base")
    runs.update_summary(root / "paper-base", preset="paper")
    paths = figures.make_figures(root, tmp_path / "out")
    # no saliency: exported records keep no checkpoint
    assert [p.name for p in paths] == ["accuracy.png", "curves.png", "minutes.png", "presets.png"]
    assert (tmp_path / "out" / "presets.png").read_bytes()[:8] == PNG


def test_minutes_curves_sum_the_epoch_times(dashboard_runs: Path) -> None:
    table = records.finished_runs(dashboard_runs)
    curves = records.minutes_curves(table)
    run = table["path"].iloc[0]
    metrics = runs.read_table(Path(run) / "metrics.csv")
    mine = curves[curves["run"] == Path(run).name]
    assert list(mine["epoch"]) == list(metrics["epoch"])
    assert mine["minutes"].iloc[-1] == pytest.approx(metrics["epoch_time_s"].sum() / 60)
    assert mine["minutes"].is_monotonic_increasing
    fig = figures.minutes_figure(table)
    assert table["device"].iloc[0] in fig.axes[0].get_title()  # the CPU and precision named


def test_figures_draw_several_roots_together(dashboard_runs: Path, tmp_path: Path) -> None:
    # one set of records exported to two roots: one table, where each run is named by its root
    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        records.export_runs(dashboard_runs, root)
    single = records.finished_runs(roots[0])
    table = records.finished_runs(roots)
    assert sorted(table["run"]) == sorted(f"{r.name}/{run}" for r in roots for run in single["run"])
    assert set(records.minutes_curves(table)["run"]) == set(table["run"])
    labels = {line.get_label() for line in figures.minutes_figure(table).axes[0].lines}
    assert set(table["run"]) <= labels
    # a transfer experiment's table in one of them (as `lab transfer` writes it) is drawn too
    transfer = Path(__file__).resolve().parents[1] / "results/transfer-cpu/transfer.csv"
    (roots[1] / "transfer.csv").write_bytes(transfer.read_bytes())
    out = tmp_path / "out"
    assert main(["figures", *map(str, roots), "--out", str(out)]) == 0
    assert (out / "minutes.png").read_bytes()[:8] == PNG
    assert (out / "transfer.png").read_bytes()[:8] == PNG


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


def test_pick_images_right_then_wrong(tmp_path: Path) -> None:
    rows = [  # file, label, pred, confidence
        ("right-low", 0, 0, 0.5),
        ("wrong-high", 1, 0, 0.9),
        ("right-high", 2, 2, 0.8),
        ("wrong-low", 3, 1, 0.4),
        ("right-mid", 1, 1, 0.7),
        ("wrong-mid", 0, 3, 0.6),
    ]
    table = pd.DataFrame(rows, columns=["file", "label", "pred", "confidence"])
    table.insert(0, "index", range(len(table)))
    table["top5"] = table["pred"].astype(str)
    runs.write_csv(tmp_path / "predictions.csv", table)
    right_then_wrong = ["right-high", "right-mid", "wrong-high", "wrong-mid"]
    assert records.pick_images(tmp_path, correct=2, wrong=2) == right_then_wrong
    assert records.pick_images(tmp_path, correct=1, wrong=3) == [
        "right-high",
        "wrong-high",
        "wrong-mid",
        "wrong-low",
    ]


def test_mistakes_are_most_confident_first_ties_in_table_order() -> None:
    table = pd.DataFrame(
        {"file": ["a", "b", "c", "d"], "label": [0, 1, 1, 2], "pred": [1, 1, 0, 0],
         "confidence": [0.6, 0.9, 0.6, 0.8]}
    )  # fmt: skip
    assert records.mistakes(table)["file"].tolist() == ["d", "a", "c"]


def test_confused_pairs_and_the_order_that_groups_them() -> None:
    confusion = np.array([[5, 4, 0, 0], [1, 6, 0, 0], [0, 0, 7, 2], [0, 0, 3, 4]])
    pairs = records.confused_pairs(confusion, ["w", "x", "y", "z"], top=3)
    assert pairs[["true name", "predicted name", "count"]].values.tolist() == [
        ["w", "x", 4],
        ["z", "y", 3],
        ["y", "z", 2],
    ]
    assert pairs["% of true"].iloc[0] == pytest.approx(100 * 4 / 9)
    assert records.confused_pairs(np.eye(3, dtype=int), ["a", "b", "c"], top=5).empty
    order = list(records.confusion_order(confusion))
    assert abs(order.index(0) - order.index(1)) == 1 and abs(order.index(2) - order.index(3)) == 1


def test_run_table_columns_and_the_study_beside_each_run() -> None:
    table = pd.DataFrame(
        [{"run": "a", "model": "resnet20", "test_top1": 50.0, "extra": 1, "error": None},
         {"run": "b", "model": "resnet18", "test_top1": 60.0, "extra": 2, "error": None}]
    )  # fmt: skip
    shown = records.run_table(table, ["extra"])
    assert list(shown.columns) == [*records.RUN_COLUMNS[:-1], "extra", "error"]
    study = records.study_columns(table).set_index("run")
    assert study.loc["a", "study_val_top1"] == STUDY["resnet20"][1]
    assert study.loc["a", "gap_test_top1"] == pytest.approx(50.0 - STUDY["resnet20"][2])
    assert np.isnan(study.loc["b", "study_test_top1"])  # not a model of the study


def test_same_test_split_matches_the_data_and_classes() -> None:
    table = pd.DataFrame(
        {"run": ["a", "b", "c", "d"], "cfg_data": ["x", "x", "x", "y"],
         "cfg_classes": [20, 20, 10, 20], "cfg_first_class": [0, 0, 0, 0]}
    ).set_index("run")  # fmt: skip
    assert list(records.same_test_split(table, "a").index) == ["b"]


@pytest.fixture(scope="module")
def flip_run(tiny_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run on all four classes, trained on unmirrored images (so a mirror
    changes its logits) and evaluated on each image averaged with its mirror."""
    root = str(tmp_path_factory.mktemp("flip_runs"))
    return fit(replace(tiny_config, augment="none", tta_flip=True, runs_root=root, name="flip"))


def test_the_saliency_figure_and_challenge_predict_as_the_run(
    flip_run: Path, tiny_cache: Path
) -> None:
    # one prediction everywhere: the run's precision, flip averaging and top-k's first
    predictions = records.load_predictions(flip_run)
    fig = figures.saliency_figure([flip_run], predictions["file"], ["saliency"])
    titles = [ax.get_title() for ax in fig.axes[::2]]  # a row: the image, then its map
    assert [title.split("pred: ")[1] for title in titles] == list(predictions["predicted"])
    challenge = data.load_split("challenge", cache_dir=tiny_cache)
    tops = top_classes(load_predictor(flip_run), np.asarray(challenge.images), k=1)
    wnids = [challenge.wnids[int(top["label"].iloc[0])] for top in tops]
    lines = "".join(f"{f} {w}\n" for f, w in zip(challenge.files, wnids, strict=True))
    assert (flip_run / "challenge.txt").read_text() == lines


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
