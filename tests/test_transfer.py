"""The transfer experiment: pretrain on some classes, fine-tune on others three ways."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from lab import runs
from lab.models import build_model, classifier_name
from lab.train import Config
from lab.transfer import transfer_experiment


def backbone(run_dir: Path) -> dict[str, torch.Tensor]:
    """A resnet20_cifar run's checkpoint weights and norm statistics, less its classifier."""
    state = runs.load_checkpoint(run_dir)["model"]
    head = classifier_name(build_model("resnet20_cifar", num_classes=2)) + "."
    return {name: value for name, value in state.items() if not name.startswith(head)}


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
    for row in table.itertuples():
        run_dir = tmp_path / f"transfer-{row.mode}-8"
        summary = runs.read_json(run_dir / "summary.json")
        assert (row.train_top1, row.test_top1) == (summary["train_top1"], summary["test_top1"])
        assert row.gap == pytest.approx(row.train_top1 - row.test_top1)
        config = runs.read_json(run_dir / "config.json")
        assert (config["first_class"], config["classes"]) == (2, 2)  # the classes not pretrained
    # head trains the classifier alone on the pretrained backbone; whole retrains all of it
    pretrained = backbone(tmp_path / "transfer-pretrain")

    def kept(mode: str) -> bool:
        tuned = backbone(tmp_path / f"transfer-{mode}-8")
        return tuned.keys() == pretrained.keys() and all(
            torch.equal(value, pretrained[name]) for name, value in tuned.items()
        )

    assert kept("head") and not kept("whole") and not kept("scratch")
    assert pd.read_csv(tmp_path / "transfer.csv").equals(table)
    assert len(list(tmp_path.glob("transfer-*/summary.json"))) == 4  # pretrain + 3 modes
    finished = {p.parent.name: p.stat().st_mtime for p in tmp_path.glob("transfer-*/summary.json")}
    again = transfer_experiment(base, classes=2, sizes=(8,), pretrain_epochs=2)
    assert again.equals(table), "a second call reuses the finished runs"
    assert finished == {
        p.parent.name: p.stat().st_mtime for p in tmp_path.glob("transfer-*/summary.json")
    }
