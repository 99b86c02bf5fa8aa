"""The transfer experiment: pretrain on some classes, fine-tune on others three ways."""

from pathlib import Path

import pandas as pd

from lab.train import Config
from lab.transfer import transfer_experiment


def test_transfer_experiment_runs_every_mode_and_resumes(
    tiny_archive: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    base = Config(
        model="resnet20_cifar",
        epochs=1,
        batch_size=16,
        lr=0.05,
        data=str(tiny_archive),
        cache_dir=str(tiny_cache),
        runs_root=str(tmp_path),
        quiet=True,
        train_eval_size=32,
    )
    table = transfer_experiment(base, classes=2, sizes=(8,), pretrain_epochs=2)
    assert list(table["mode"]) == ["head", "whole", "scratch"]
    assert (table["per_class"] == 8).all()
    assert table[["train_top1", "test_top1"]].apply(lambda c: c.between(0, 100)).all().all()
    assert pd.read_csv(tmp_path / "transfer.csv").equals(table)
    assert len(list(tmp_path.glob("transfer-*/summary.json"))) == 4  # pretrain + 3 modes
    finished = {p.parent.name: p.stat().st_mtime for p in tmp_path.glob("transfer-*/summary.json")}
    again = transfer_experiment(base, classes=2, sizes=(8,), pretrain_epochs=2)
    assert again.equals(table), "a second call reuses the finished runs"
    assert finished == {
        p.parent.name: p.stat().st_mtime for p in tmp_path.glob("transfer-*/summary.json")
    }
