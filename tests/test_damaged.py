"""Damaged runs never end in a traceback: checkpoints and tables cut short or garbled by the tests,
read by every command; resuming falls back to the previous checkpoint."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lab import records, runs
from lab.cli import main
from lab.figures import make_figures
from lab.train import Config, fit


@pytest.fixture(scope="module")
def record(tiny_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run: checkpoint.pt of epoch 2, checkpoint.prev.pt of epoch 1."""
    root = tmp_path_factory.mktemp("damaged_runs")
    return fit(replace(tiny_config, epochs=2, runs_root=str(root), name="record"))


def copy(record: Path, dest: Path) -> Path:
    """A copy of the run folder to damage."""
    return Path(shutil.copytree(record, dest))


def cut(path: Path, keep: float = 0.5) -> None:
    """Truncate a file to a share of its bytes, as a full disk or a killed copy would."""
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * keep)])


def garble(path: Path) -> None:
    """Overwrite the middle of a file with bytes that are no CSV."""
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 40] = b"\x00\xff\x13\x07garbage,,,\n\x01\x02" * 2 + b"\xfe" * 12
    path.write_bytes(bytes(blob))


def one_line(err: str) -> str:
    """The only line of stderr, checked to be no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_save_checkpoint_keeps_the_previous_until_the_next_is_written(tmp_path: Path, capsys):
    for epoch in (1, 2):
        runs.save_checkpoint(tmp_path, {"model": {}, "epoch": epoch, "num_classes": 3})
    assert runs.load_checkpoint(tmp_path)["epoch"] == 2
    assert torch.load(tmp_path / "checkpoint.prev.pt")["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))
    cut(tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint\.pt: damaged checkpoint"):
        runs.load_checkpoint(tmp_path)  # evaluating never falls back silently
    assert runs.load_checkpoint(tmp_path, fallback=True)["epoch"] == 1
    assert "resuming from checkpoint.prev.pt" in one_line(capsys.readouterr().err)
    # the one that loaded is the newest now, and the damaged one is gone
    assert runs.load_checkpoint(tmp_path)["epoch"] == 1
    assert not (tmp_path / "checkpoint.prev.pt").exists()

    runs.save_checkpoint(tmp_path, {"model": {}, "epoch": 2, "num_classes": 3})
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00" * 100)
    torch.save(["not", "a", "dict"], tmp_path / "checkpoint.prev.pt")
    with pytest.raises(ValueError, match=r"checkpoint\.pt: damaged.*prev\.pt: not a checkpoint"):
        runs.load_checkpoint(tmp_path, fallback=True)
    with pytest.raises(ValueError, match=r"checkpoint\.pt: no checkpoint"):
        runs.load_checkpoint(tmp_path / "empty", fallback=True)


def test_resume_uses_the_previous_checkpoint_when_the_newest_is_damaged(
    record: Path, tmp_path: Path, capsys
) -> None:
    run = copy(record, tmp_path / "interrupted")
    runs.update_summary(run, status="running")
    cut(run / "checkpoint.pt")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "checkpoint.prev.pt" in capsys.readouterr().err
    # epoch 2 trained again from epoch 1's checkpoint: the same numbers as the first time
    resumed, original = pd.read_csv(run / "metrics.csv"), pd.read_csv(record / "metrics.csv")
    assert list(resumed["epoch"]) == [1, 2]
    columns = ["train_loss", "train_top1", "val_loss", "val_top1"]
    np.testing.assert_allclose(resumed[columns], original[columns], rtol=1e-4, atol=1e-4)
    summary = runs.read_json(run / "summary.json")
    assert summary["status"] == "finished"
    before = runs.read_json(record / "summary.json")
    assert summary["test_top1"] == pytest.approx(before["test_top1"])


def test_resume_with_no_checkpoint_that_loads_is_one_line(record: Path, tmp_path: Path, capsys):
    run = copy(record, tmp_path / "lost")
    runs.update_summary(run, status="running")
    cut(run / "checkpoint.pt")
    cut(run / "checkpoint.prev.pt", 0.1)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "checkpoint.pt: damaged" in line and "checkpoint.prev.pt: damaged" in line
    assert runs.read_json(run / "summary.json")["status"] == "failed"


def test_runs_give_the_training_minutes_to_a_val_accuracy(
    record: Path, tmp_path: Path, capsys
) -> None:
    run = copy(record, tmp_path / "root" / "run")
    metrics = pd.read_csv(run / "metrics.csv")
    metrics["epoch_time_s"], metrics["val_top1"] = [90.0, 30.0], [40.0, 60.0]
    metrics.to_csv(run / "metrics.csv", index=False)
    assert records.minutes_to(run, 40) == 1.5 and records.minutes_to(run, 50) == 2.0
    assert np.isnan(records.minutes_to(run, 60.5))
    assert main(["runs", str(tmp_path / "root"), "--to", "50"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    start = header.index("min_to_50")  # by position: a run's preset may be an empty cell
    assert row[start : start + len("min_to_50")].strip() == "2.00"


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_damaged_checkpoint_is_named(record: Path, tmp_path: Path, command: str, capsys):
    run = copy(record, tmp_path / "run")
    cut(run / "checkpoint.pt", 0.3)
    extra = [str(tmp_path / "any.png")] if command == "predict" else []
    assert main([command, str(run), *extra]) == 2
    assert f"{run / 'checkpoint.pt'}: damaged checkpoint" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("metrics.csv", cut, "cut short"),
        ("metrics.csv", garble, "metrics.csv"),
        ("per_class.csv", cut, "per_class.csv: line"),
        ("per_class.csv", garble, "per_class.csv"),
        ("metrics.csv", Path.unlink, "metrics.csv: missing"),
        ("per_class.csv", Path.unlink, "per_class.csv: missing"),
    ],
)
def test_a_damaged_table_marks_the_run_and_the_others_go_on(
    record: Path, tmp_path: Path, name: str, damage, message: str, capsys
) -> None:
    root = tmp_path / "root"
    copy(record, root / "good")
    bad = copy(record, root / "bad")
    damage(bad / name)
    table = records.load_runs(root).set_index("run")
    assert table.loc["good", "status"] == "finished" and pd.isna(table.loc["good", "error"])
    assert table.loc["bad", "status"] == "broken"
    assert message in table.loc["bad", "error"] and str(bad / name) in table.loc["bad", "error"]
    with pytest.raises(ValueError, match=name):
        runs.load_run(bad) if damage is not Path.unlink else runs.read_table(bad / name)

    assert main(["runs", str(root), "--to", "0"]) == 0  # no minutes for the broken run
    out = capsys.readouterr().out
    assert "good" in out and "broken" in out

    assert main(["export", str(root), str(tmp_path / "export")]) == 0
    err = capsys.readouterr().err
    assert one_line(err).startswith("not exported: bad: ")
    assert (tmp_path / "export" / "good" / "summary.json").exists()
    assert not (tmp_path / "export" / "bad").exists()

    assert main(["figures", str(root), "--out", str(tmp_path / "figures")]) == 0
    assert one_line(capsys.readouterr().err).startswith("left out: bad: ")
    assert (tmp_path / "figures" / "curves.png").exists()


def test_garbled_predictions_are_named_where_they_are_read(record: Path, tmp_path: Path) -> None:
    run = copy(record, tmp_path / "run")
    garble(run / "predictions.csv")
    with pytest.raises(ValueError, match=r"predictions\.csv: "):
        runs.load_run(run)


@pytest.mark.parametrize("name", ["checkpoint.pt", "predictions.csv"])
def test_figures_without_saliency_when_the_best_run_is_damaged(
    record: Path, tmp_path: Path, name: str, capsys
) -> None:
    root = tmp_path / "root"
    run = copy(record, root / "run")
    cut(run / name)
    written = {path.name for path in make_figures(root, tmp_path / "figures")}
    assert written == {"accuracy.png", "curves.png", "minutes.png"}
    line = one_line(capsys.readouterr().err)
    assert line.startswith("saliency.png left out: ") and str(run / name) in line
