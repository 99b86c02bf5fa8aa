"""Transfer learning without downloads: pretrain on some classes, fine-tune on the others.

The study's Inception row fine-tunes ImageNet weights and warns that retraining a whole network
on little data overfits. ImageNet weights cannot be fetched everywhere, so this experiment
shows the same effect inside Tiny ImageNet: a model is pretrained on classes [0, K), then
trained on the disjoint classes [K, 2K) with N images a class in three ways: the classifier
only on the frozen pretrained backbone (`head`), the whole pretrained network (`whole`), and
the same network from random weights (`scratch`). The train-test gap shows where retraining
overfits.
"""

from dataclasses import replace
from pathlib import Path

import pandas as pd

from lab import runs
from lab.config import Config, check_config, check_reuse
from lab.train import fit

MODES = ("head", "whole", "scratch")


def fit_once(config: Config) -> Path:
    """Train unless a finished run of that name exists; resume one that has a checkpoint. Either
    must be of this experiment (LabError if not)."""
    check_config(config)  # its name is one folder under the runs root, before any is cleared
    check_reuse([config])
    run_dir = Path(config.runs_root) / config.name
    action = runs.resume_or_clear(run_dir)
    if action == "finished":
        return run_dir
    return fit(replace(config, resume=action == "resume"))


def transfer_experiment(
    base: Config,
    classes: int = 100,
    sizes: tuple[int, ...] = (50, 100, 450),
    pretrain_epochs: int = 0,
) -> pd.DataFrame:
    """Pretrain on `classes` classes, fine-tune on the next `classes` three ways per size."""
    pretrained = fit_once(
        replace(
            base,
            name="transfer-pretrain",
            first_class=0,
            classes=classes,
            per_class=0,
            epochs=pretrain_epochs or base.epochs,
        )
    )
    rows = []
    for size in sizes:
        for mode in MODES:
            config = replace(
                base,
                name=f"transfer-{mode}-{size}",
                first_class=classes,
                classes=classes,
                per_class=size,
                init_from="" if mode == "scratch" else str(pretrained),
                freeze_backbone=mode == "head",
            )
            summary = runs.read_json(fit_once(config) / "summary.json")
            rows.append(
                {
                    "mode": mode,
                    "per_class": size,
                    "train_top1": summary["train_top1"],
                    "val_top1": summary["val_top1"],
                    "test_top1": summary["test_top1"],
                    "gap": summary["train_top1"] - summary["test_top1"],
                    "wall_time_s": summary["wall_time_s"],
                }
            )
    table = pd.DataFrame(rows)
    runs.write_csv(Path(base.runs_root) / "transfer.csv", table)
    return table
