"""Queries over run records: finished runs, each model's best run, tables, test predictions.

lab.runs writes and reads one run folder; these answer questions across runs for the figures,
the notebooks and `lab figures`.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lab import data, runs
from lab.errors import LabError
from lab.presets import PRESETS
from lab.study import STUDY

# the splits a run reports top-1 and top-5 on (data.SPLITS adds the unlabeled challenge split)
SCORED_SPLITS = ("train", "val", "test")


def finished_runs(runs_root: str | Path) -> pd.DataFrame:
    """The finished runs under a runs root; ValueError when there is none."""
    table = runs.load_runs(Path(runs_root))
    finished = table[table["status"] == "finished"]
    if finished.empty:
        raise LabError(f"{runs_root}: no finished runs (try `lab sweep --preset quick`)")
    return finished.reset_index(drop=True)


def best_runs(table: pd.DataFrame, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """The finished run with the best final val top-1 (chosen on val, never test) of each
    group of `by` (each model by default), sorted by `by`."""
    finished = table[table["status"] == "finished"]
    best = finished.sort_values("val_top1", ascending=False, kind="stable")
    return best.drop_duplicates(list(by)).sort_values(list(by)).reset_index(drop=True)


def study_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each model's best run beside the study's train/val/test top-1, and the gap (ours - study)."""
    best = best_runs(table).set_index("model")
    rows = []
    for model in [*STUDY, *(m for m in best.index if m not in STUDY)]:
        ours = best.loc[model] if model in best.index else None
        study = STUDY.get(model)
        row = {"model": model, "run": None if ours is None else ours["run"]}
        for i, split in enumerate(SCORED_SPLITS):
            mine = np.nan if ours is None else float(ours[f"{split}_top1"])
            theirs = np.nan if study is None else study[i]
            row.update(
                {f"{split}_top1": mine, f"study_{split}": theirs, f"gap_{split}": mine - theirs}
            )
        rows.append(row)
    return pd.DataFrame(rows)


def preset_table(table: pd.DataFrame) -> pd.DataFrame:
    """Test top-1 of each model's best-val finished run under each preset (models x presets)."""
    table = table.assign(preset=table["preset"].replace("", None).fillna("none"))
    best = best_runs(table, by=("model", "preset"))
    scores = best.pivot(index="model", columns="preset", values="test_top1")
    models = [m for m in STUDY if m in scores.index] + sorted(set(scores.index) - set(STUDY))
    known = [p for p in PRESETS if p in scores.columns]
    return scores.loc[models, known + sorted(set(scores.columns) - set(known))]


def split_table(summary: dict) -> pd.DataFrame:
    """A run's final top-1 and top-5 (%) per split."""
    return pd.DataFrame(
        {k: [summary.get(f"{s}_{k}") for s in SCORED_SPLITS] for k in ("top1", "top5")},
        index=list(SCORED_SPLITS),
    )


def class_names(run_dir: str | Path) -> list[str]:
    """A run's class names by label, from its per_class.csv."""
    return runs.read_table(Path(run_dir) / "per_class.csv").sort_values("label")["name"].tolist()


def load_predictions(run_dir: str | Path, files: Sequence[str] | None = None) -> pd.DataFrame:
    """A run's test predictions with true and predicted class names; only `files`, in order,
    when given (test file names, e.g. val_12.JPEG, are the same whatever a run's classes)."""
    predictions = runs.read_table(Path(run_dir) / "predictions.csv")
    names = np.array(class_names(run_dir))
    predictions["true"] = names[predictions["label"]]
    predictions["predicted"] = names[predictions["pred"]]
    if files is None:
        return predictions
    missing = sorted(set(files) - set(predictions["file"]))
    if missing:
        raise LabError(f"{run_dir}: no test prediction for {missing} (not in its classes?)")
    return predictions.set_index("file").loc[list(files)].reset_index()


def load_test_images(run_dir: str | Path, files: Sequence[str]) -> np.ndarray:
    """uint8 test images (N, 64, 64, 3) by file name, from the data the run was trained on."""
    config = runs.read_json(Path(run_dir) / "config.json")
    test = data.load_split(
        "test", source=config["data"] or None, cache_dir=config["cache_dir"] or None
    )
    position = {name: i for i, name in enumerate(test.files)}
    return np.stack([np.asarray(test.images[position[name]]) for name in files])


def pick_runs(runs_root: str | Path, run_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """The given run folders (checked), or else the best run of each model under runs_root."""
    chosen = [Path(p) for p in run_dirs]
    if not chosen:
        chosen = [Path(p) for p in best_runs(finished_runs(runs_root))["path"]]
    for path in chosen:
        if not (path / "checkpoint.pt").exists() or not (path / "predictions.csv").exists():
            raise LabError(f"{path}: not a finished run folder (no checkpoint.pt or predictions)")
    return chosen


def pick_images(run_dir: str | Path, correct: int = 2, wrong: int = 2) -> list[str]:
    """Test files: the run's most confident right and most confident wrong predictions."""
    predictions = runs.read_table(Path(run_dir) / "predictions.csv")
    predictions = predictions.sort_values("confidence", ascending=False, kind="stable")
    hit = predictions["label"] == predictions["pred"]
    return [*predictions[hit]["file"].head(correct), *predictions[~hit]["file"].head(wrong)]


def predictions_table(run_dirs: Sequence[str | Path], files: Sequence[str]) -> pd.DataFrame:
    """For chosen test images: file, true class and each run's predicted class."""
    tables = [load_predictions(run_dir, files) for run_dir in run_dirs]
    table = tables[0][["file", "true"]].copy()
    for run_dir, predictions in zip(run_dirs, tables, strict=True):
        table[Path(run_dir).name] = predictions["predicted"].to_numpy()
    return table
